"""Running a sweep: park, probe in parallel inside the budget, allocate, heat-soak (see
:mod:`tuning.sweep`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from tuning.apply.actuator import Actuator
from tuning.apply.session import SafetySession
from tuning.backends.base import GpuSample, PowerConstraints, Rig
from tuning.budget import (
    Allocation,
    BudgetModel,
    CapOption,
    InfeasibleBudget,
    Policy,
    allocate,
    objective_value,
)
from tuning.errors import ConfigError, SafetyAbort, WorkloadFailed
from tuning.search import AdaptiveSearch, CapSearch, make_search
from tuning.sustained import SustainedSampler, ThrottleEvent
from tuning.sweep.config import SweepConfig
from tuning.sweep.result import GpuResult, SoakRound, SweepResult
from tuning.telemetry import (
    FIT_TAU_GRID_S,
    CapTrace,
    ProbeMeasurement,
    ProbeWindow,
    SteadyPrediction,
    SteadyStatePolicy,
    Watchdog,
    fit_first_order,
    predict_steady,
    watchdog_limit_c,
)
from tuning.workloads import Workload

#: progress callback: (uuid, event, details) — events: "probe", "done", "soak", "soak_done"
Progress = Callable[[str, str, Mapping[str, Any]], None]


class Sweep:
    """One sweep of one rig under one workload (see the module docstring)."""

    def __init__(
        self,
        rig: Rig,
        actuator: Actuator,
        workload: Workload,
        config: SweepConfig,
        *,
        session: SafetySession | None = None,
        progress: Progress | None = None,
        rig_spec: str | None = None,
        budget: BudgetModel | None = None,
    ) -> None:
        """``budget``: judge caps and draw against it instead of the rig's own PSUs and
        circuits (a budget given on the command line for a simulated rig)."""
        self.rig = rig
        self.actuator = actuator
        self.workload = workload
        self.config = config
        self.session = session
        self.progress = progress or (lambda uuid, event, details: None)
        self.rig_spec = rig_spec or actuator.spec
        self.clock = rig.clock
        if workload.real_time:
            # A load outside the process makes its tokens in real seconds: a virtual clock
            # left free-running would end every probe window before a request came back.
            self.clock.follow_wall_time()
        self.uuids = [gpu.uuid for gpu in rig.gpus]
        self.constraints: dict[str, PowerConstraints] = {
            gpu.uuid: gpu.power_constraints() for gpu in rig.gpus
        }
        self.budget = budget if budget is not None else BudgetModel.from_rig(rig)
        self.watchdog = Watchdog(
            slowdown_c={gpu.uuid: watchdog_limit_c(gpu.thresholds()) for gpu in rig.gpus},
            budget=self.budget,
            margin_c=config.watchdog_margin_c,
        )
        self.caps: dict[str, float] = {gpu.uuid: gpu.power_limit_w() for gpu in rig.gpus}
        self.trace = CapTrace(self.budget, dict(self.caps))
        #: GPUs the workload runs as one split (one cap searched for all of them, each GPU
        #: gets it); empty: every GPU on its own
        self.group: tuple[str, ...] = tuple(workload.swept_together())
        if self.group:
            if set(self.group) != set(self.uuids):
                raise ConfigError(
                    f"workload {workload.name} is a split over {len(self.group)} of the rig's "
                    f"{len(self.uuids)} GPUs; a group sweep caps every GPU: name them all"
                )
            shared = make_search(
                config.strategy,
                _common_constraints([self.constraints[u] for u in self.group]),
                floor=config.floor,
                step_w=config.step_w,
            )
            self.searches: dict[str, CapSearch] = {uuid: shared for uuid in self.uuids}
        else:
            self.searches = {
                uuid: make_search(
                    config.strategy,
                    self.constraints[uuid],
                    floor=config.floor,
                    step_w=config.step_w,
                )
                for uuid in self.uuids
            }
        self.resumed_probes = 0
        self.floor_blocked_by: tuple[str, ...] = ()

    # -- helpers ------------------------------------------------------------------------------

    def _on_change(self, uuid: str, cap_w: float) -> None:
        self.caps[uuid] = cap_w
        self.trace.record(self.clock.now_s(), uuid, cap_w)

    def _set(self, uuid: str, cap_w: float) -> None:
        self.actuator.set_cap(uuid, cap_w)

    def _park(self, uuid: str) -> None:
        self.workload.stop(uuid)
        self._set(uuid, self.constraints[uuid].min_w)

    def _draw_w(self, uuid: str, sample: GpuSample) -> float:
        """Board draw for the draw watchdog; a GPU without a power sensor counts at its live
        cap (the most it may draw), never at 0 W. Units: W."""
        if sample.power_draw_w is not None:
            return sample.power_draw_w
        return self.caps[uuid]

    def _fits(self, uuid: str, cap_w: float) -> bool:
        if cap_w <= self.caps[uuid]:
            return True
        return self.budget.fits({**self.caps, uuid: cap_w}, self.config.sweep_limit_ratio)

    def _window(self, cap_w: float) -> ProbeWindow:
        policy = self.config.steady
        if self.config.fixed_probe_s is not None:
            policy = SteadyStatePolicy(
                settle_s=policy.settle_s,
                window_s=max(5.0, self.config.fixed_probe_s - policy.settle_s),
                rel_tol=0.0,
                max_s=self.config.fixed_probe_s,
            )
        return ProbeWindow(cap_w=cap_w, started_s=self.clock.now_s(), policy=policy)

    def _replay(self) -> None:
        if self.session is None:
            return
        for uuid, probes in self.session.resumed_probes.items():
            search = self.searches.get(uuid)
            if search is None or (self.group and uuid != self.group[0]):
                continue
            for probe in probes:
                search.next_cap()  # keeps the search's own bookkeeping identical
                search.record(ProbeMeasurement(**probe))
                self.resumed_probes += 1

    # -- phases -------------------------------------------------------------------------------

    def run(self) -> SweepResult:
        """Probe, allocate, heat-soak. Caps are left changed: the caller restores them."""
        self.actuator.on_change = self._on_change
        try:
            self._replay()
            started = self.clock.now_s()
            for uuid in self.uuids:
                self._park(uuid)
            if self.group:
                self._probe_group()
            else:
                self._probe_all()
            allocation = self._allocate_group() if self.group else self._refined(self._allocate())
            sweep_s = self.clock.now_s() - started
            rounds, final_caps, flagged = self._heat_soak(allocation)
            # What the sweep set: not the stock caps of GPUs it had not parked yet.
            max_ratio = self.trace.max_load_ratio(set_only=True)
            rig_s = self.clock.now_s() - started
        finally:
            self.actuator.on_change = None
            for uuid in self.uuids:
                self.workload.stop(uuid)
        return self._result(sweep_s, allocation, rounds, final_caps, flagged, max_ratio, rig_s)

    def _record(self, uuid: str, search: CapSearch, measurement: ProbeMeasurement) -> None:
        """One probe into its search and, when a journal runs, into the journal (by ``uuid``)."""
        search.record(measurement)
        if self.session is not None:
            self.session.record_probe(uuid, asdict(measurement))

    def _probe_event(self, uuid: str, search: CapSearch, measurement: ProbeMeasurement) -> None:
        """The ``probe`` progress event of ``uuid``: probes so far, the cap (W), tokens/s."""
        self.progress(
            uuid,
            "probe",
            {
                "probes": len(search.points),
                "cap_w": measurement.cap_w,
                "throughput_tps": measurement.throughput_tps,
            },
        )

    def _probe_all(self, plan: Callable[[str, None], int | None] | None = None) -> None:
        """Probe every GPU until its plan says done, in parallel as the budget allows.

        ``plan(uuid, None)``: the next cap to probe (W) or ``None`` (a dict's ``pop``: one
        probe per GPU it names); default: the GPU's search."""
        cfg = self.config
        next_cap = plan or (lambda uuid, _: self.searches[uuid].next_cap())
        pending: dict[str, int] = {}
        for uuid in self.uuids:
            cap = next_cap(uuid, None)
            if cap is not None:
                pending[uuid] = cap
            elif plan is None:  # a given plan's other GPUs were done already
                self.progress(uuid, "done", {"probes": len(self.searches[uuid].points)})
        active: dict[str, ProbeWindow] = {}
        while pending or active:
            # start waiting probes, fewest-probes-first so every GPU progresses
            for uuid in sorted(
                pending, key=lambda u: (len(self.searches[u].points), self.uuids.index(u))
            ):
                if cfg.max_parallel is not None and len(active) >= cfg.max_parallel:
                    break
                cap = pending[uuid]
                if self._fits(uuid, cap):
                    self._set(uuid, cap)
                    self.workload.start(uuid)
                    active[uuid] = self._window(cap)
                    del pending[uuid]
            if not active:
                blocked = ", ".join(f"{u} at {c} W" for u, c in pending.items())
                raise SafetyAbort(
                    f"no probe fits the power budget even with every other GPU at its minimum "
                    f"cap ({blocked}); check the rig's PSU and circuit figures"
                )
            self.clock.sleep(cfg.sample_period_s)
            now = self.clock.now_s()
            # every GPU, not only the probing ones: a parked card still draws (idle power, a
            # neighbour's heat, a process this sweep does not own) on the same PSU
            draws: dict[str, float] = {}
            for uuid in self.uuids:
                sample = self.rig.gpu(uuid).sample(now)
                window = active.get(uuid)
                self.watchdog.check_temperature(uuid, sample, loaded=window is not None)
                draws[uuid] = self._draw_w(uuid, sample)
                if window is None:
                    continue
                # read for every probing GPU, ready or not: a WorkloadFailed propagates and
                # the safety session restores the caps
                tokens = self.workload.tokens_total(uuid)
                if not self.workload.ready(uuid):
                    # settle, window and max_s count from the load's first rate at this cap
                    window.started_s = now
                    continue
                window.add(sample, tokens)
            self.watchdog.check_draw(draws)
            for uuid, window in list(active.items()):
                fixed = cfg.fixed_probe_s is not None
                if not (window.expired(now) or (not fixed and window.steady())):
                    continue
                measurement = window.result(now)
                search = self.searches[uuid]
                if measurement.throughput_tps <= 0 and not search.points:
                    # no tokens at the top cap: every cap below would "keep" 0 tok/s, and a
                    # profile of such caps would be a lie (a dead engine, a wrong URL, a load
                    # that never reached this GPU)
                    raise WorkloadFailed(
                        f"GPU {uuid}: the load produced no tokens at the uncapped probe "
                        f"({measurement.cap_w} W); check that it runs on this GPU "
                        "(the engine's URL, its logs) and sweep again"
                    )
                self._record(uuid, search, measurement)
                del active[uuid]
                self._probe_event(uuid, search, measurement)
                nxt = next_cap(uuid, None)
                if nxt is None:
                    self._park(uuid)
                    self.progress(uuid, "done", {"probes": len(search.points)})
                elif nxt <= self.caps[uuid]:
                    # lowering never breaks the budget: go straight to the next probe
                    self._set(uuid, nxt)
                    # the load's last rate was measured at the old cap: wait for a new one
                    self.workload.settle(uuid)
                    active[uuid] = self._window(nxt)
                else:
                    self._park(uuid)
                    pending[uuid] = nxt

    def _probe_group(self) -> None:
        """Group mode: one search for the split; every probe caps all its GPUs alike and
        measures the pipeline. A probe's throughput and power are per GPU (the pipeline's
        tokens/s and the members' draw, each divided by the member count), so every GPU's
        curve, the allocation and the profile read as in a per-GPU sweep and sum to the
        pipeline's figures."""
        cfg = self.config
        leader = self.group[0]
        search = self.searches[leader]
        n = len(self.group)
        cap = search.next_cap()
        while cap is not None:
            if not self.budget.fits(
                {**self.caps, **dict.fromkeys(self.group, float(cap))}, cfg.sweep_limit_ratio
            ):
                raise SafetyAbort(
                    f"the group's probe at {cap} W on all {n} GPUs does not fit the power "
                    "budget; check the rig's PSU and circuit figures"
                )
            self._apply_caps(dict.fromkeys(self.group, float(cap)))
            for uuid in self.group:
                self.workload.start(uuid)
                self.workload.settle(uuid)
            window = self._window(cap)
            while True:
                self.clock.sleep(cfg.sample_period_s)
                now = self.clock.now_s()
                samples = {u: self.rig.gpu(u).sample(now) for u in self.uuids}
                for uuid, sample in samples.items():
                    self.watchdog.check_temperature(uuid, sample, loaded=True)
                self.watchdog.check_draw({u: self._draw_w(u, x) for u, x in samples.items()})
                tokens = sum(self.workload.tokens_total(u) for u in self.group) / n
                if not all(self.workload.ready(u) for u in self.group):
                    window.started_s = now
                    continue
                window.add(_mean_sample(samples[leader], list(samples.values())), tokens)
                fixed = cfg.fixed_probe_s is not None
                if window.expired(now) or (not fixed and window.steady()):
                    break
            measurement = window.result(now)
            if measurement.throughput_tps <= 0 and not search.points:
                raise WorkloadFailed(
                    f"workload {self.workload.name}: the split produced no tokens at the "
                    f"uncapped probe ({measurement.cap_w} W on every GPU)"
                )
            self._record(leader, search, measurement)
            for uuid in self.group:
                self._probe_event(uuid, search, measurement)
            cap = search.next_cap()
        for uuid in self.group:
            self._park(uuid)
            self.progress(uuid, "done", {"probes": len(search.points)})

    def _allocate_group(self) -> Allocation:
        """Group mode: the policy's best measured cap that fits the budget with every GPU of
        the split at it (efficiency: max tokens/J at throughput ≥ floor × uncapped, else the
        most throughput that fits; throughput: the most throughput)."""
        search = self.searches[self.group[0]]
        n = len(self.group)
        limit = 1.0 - self.config.headroom
        fitting = [
            o
            for o in search.options()
            if self.budget.fits(dict.fromkeys(self.group, float(o.cap_w)), limit)
        ]
        if not fitting:
            raise SafetyAbort(
                f"no measured cap fits the budget with all {n} GPUs of the split at it and "
                f"{self.config.headroom:.0%} headroom; check the rig's PSU and circuit figures"
            )
        floor = self.config.floor * (search.uncapped_tps or 0.0)
        relaxed = False
        if self.config.policy is Policy.EFFICIENCY:
            meeting = [o for o in fitting if o.throughput_tps >= floor]
            if meeting:
                best = max(meeting, key=lambda o: o.throughput_tps / o.power_w)
            else:
                best, relaxed = max(fitting, key=lambda o: o.throughput_tps), True
        else:
            best = max(fitting, key=lambda o: o.throughput_tps)
        throughput, power = n * best.throughput_tps, n * best.power_w
        return Allocation(
            caps_w=dict.fromkeys(self.group, best.cap_w),
            throughput_tps=throughput,
            power_w=power,
            objective=objective_value(self.config.policy, throughput, power),
            floor_relaxed=relaxed,
        )

    def _options(self) -> tuple[dict[str, list[CapOption]], dict[str, float]]:
        options = {uuid: self.searches[uuid].options() for uuid in self.uuids}
        floors = {
            uuid: self.config.floor * (self.searches[uuid].uncapped_tps or 0.0)
            for uuid in self.uuids
        }
        return options, floors

    def _interpolated(self, uuid: str) -> list[CapOption]:
        """Measured options plus estimates every 5 W down to the minimum cap.

        Between measured points throughput and power are interpolated linearly. Below the
        lowest one the estimate is the mean of two guesses that bracket the curves measured
        so far: the chord through the two lowest points extended down (over a curve that
        falls ever faster as the cap drops: an upper bound) and throughput scaled with the
        cap (under the curve near the lowest point, over it close to the card's static
        draw, where tokens stop first). Used when the measured points cannot fit the budget
        or the floor was relaxed; :meth:`_refined` then measures the caps the allocation
        took from here.
        """
        measured = self.searches[uuid].options()
        if not measured:
            return measured
        lowest = measured[0]
        slope = 0.0  # tokens/s per W of the chord through the two lowest points
        if len(measured) > 1:
            up = measured[1]
            x_lo, x_up = min(lowest.power_w, lowest.cap_w), min(up.power_w, up.cap_w)
            if x_up > x_lo:
                slope = max(0.0, (up.throughput_tps - lowest.throughput_tps) / (x_up - x_lo))
        caps = [o.cap_w for o in measured]
        estimates = {o.cap_w: o for o in measured}
        cap = math.ceil(self.constraints[uuid].min_w)
        while cap < caps[-1]:
            if cap not in estimates:
                if cap < lowest.cap_w:
                    scaled = lowest.throughput_tps * cap / lowest.cap_w
                    chord = max(
                        scaled,
                        lowest.throughput_tps - slope * (min(lowest.power_w, lowest.cap_w) - cap),
                    )
                    estimates[cap] = CapOption(cap, (scaled + chord) / 2, float(cap))
                else:
                    hi = next(o for o in measured if o.cap_w > cap)
                    lo = [o for o in measured if o.cap_w < cap][-1]
                    w = (cap - lo.cap_w) / (hi.cap_w - lo.cap_w)
                    estimates[cap] = CapOption(
                        cap,
                        lo.throughput_tps + w * (hi.throughput_tps - lo.throughput_tps),
                        lo.power_w + w * (hi.power_w - lo.power_w),
                    )
            cap += 5
        return sorted(estimates.values(), key=lambda o: o.cap_w)

    def _floor_blocked_by(
        self, options: Mapping[str, list[CapOption]], floors: Mapping[str, float]
    ) -> tuple[str, ...]:
        """The PSUs/circuits over their allocation limit (1 − headroom) when every GPU takes
        the lowest cap that meets its floor: what made the floor not fit. Never empty (the
        most loaded one when the overload only shows in combination)."""
        caps: dict[str, float] = {}
        for uuid, opts in options.items():
            meeting = [o for o in opts if o.throughput_tps >= floors.get(uuid, 0.0)]
            best = min(meeting, key=lambda o: o.cap_w) if meeting else None
            if best is None and opts:
                best = max(opts, key=lambda o: o.throughput_tps)
            if best is not None:
                caps[uuid] = best.cap_w
        ratios = self.budget.load_ratios(caps)
        limit = 1.0 - self.config.headroom
        over = sorted(name for name, ratio in ratios.items() if ratio > limit + 1e-9)
        if over or not ratios:
            return tuple(over)
        return (max(ratios, key=lambda name: ratios[name]),)

    def _allocate(self) -> Allocation:
        options, floors = self._options()
        kwargs = {
            "headroom": self.config.headroom,
            "floors_tps": floors if self.config.policy is Policy.EFFICIENCY else None,
        }
        try:
            allocation = allocate(options, self.budget, self.config.policy, **kwargs)  # type: ignore[arg-type]
        except InfeasibleBudget:
            pass
        else:
            if allocation.floor_relaxed:
                self.floor_blocked_by = self._floor_blocked_by(options, floors)
            if allocation.floor_relaxed or self.config.policy is Policy.THROUGHPUT:
                # the budget's watts go where they buy the most tokens, which a few measured
                # points per GPU resolve coarsely; let the knapsack also choose between and
                # below them (_refined measures what it took from the estimates)
                finer = {uuid: self._interpolated(uuid) for uuid in self.uuids}
                try:
                    refined = allocate(finer, self.budget, self.config.policy, **kwargs)  # type: ignore[arg-type]
                except InfeasibleBudget:
                    return allocation
                if refined.objective > allocation.objective:
                    return refined
            return allocation
        options = {uuid: self._interpolated(uuid) for uuid in self.uuids}
        try:
            allocation = allocate(options, self.budget, self.config.policy, **kwargs)  # type: ignore[arg-type]
            if allocation.floor_relaxed:
                self.floor_blocked_by = self._floor_blocked_by(options, floors)
            return allocation
        except InfeasibleBudget as error:
            raise SafetyAbort(
                f"no combination of measured caps fits the budget with {self.config.headroom:.0%} "
                f"headroom ({error}); check the rig's PSU and circuit figures"
            ) from error

    def _refined(self, allocation: Allocation) -> Allocation:
        """Measure the caps the allocation only estimated, and allocate again, until every cap
        it picks is measured (or a GPU's search has used its probes).

        The adaptive search probes where its GPU's tokens/J peaks above the floor. When the
        budget binds (the throughput policy's watts, a floor that does not fit), the knapsack
        picks caps below or between those points from :meth:`_interpolated`'s estimates,
        whose shape is a guess: a card whose tokens/s fall faster than its cap below the
        lowest probe looks cheap to starve. Each round probes those caps (in parallel), so
        the next allocation weighs measured watts, as a grid would."""
        while True:
            targets: dict[str, int] = {}
            for uuid, cap in allocation.caps_w.items():
                search = self.searches[uuid]
                natural_cap = search.natural_cap_w()
                if (
                    not isinstance(search, AdaptiveSearch)  # a grid measured every cap
                    or len(search.points) >= search.max_probes
                    # within the search's resolution of a measured cap: measured enough
                    or any(abs(cap - o.cap_w) <= search.tolerance_w() for o in search.options())
                    or (natural_cap is not None and cap >= natural_cap)  # does not bind
                ):
                    continue
                targets[uuid] = cap
            if not targets:  # ends: every round adds a point to a search with probes left
                return allocation
            self._probe_all(targets.pop)
            allocation = self._allocate()

    def _lower_cap(self, uuid: str, cap_w: float) -> float:
        """A throttling GPU's next cap: 8 % lower, never below its minimum. Units: W."""
        return max(self.constraints[uuid].min_w, math.floor(cap_w * 0.92))

    #: the predicted steady temperature must stay this far under the SW thermal target. Units: °C
    SOAK_MARGIN_C = 1.5

    def predicted_steady_c(self, soak: SoakRound, uuid: str) -> float | None:
        """Where the GPU's temperature was heading in ``soak``: the asymptote of a first-order
        fit to its trace (samples before the first throttle event only). Units: °C."""
        trace = soak.temp_trace.get(uuid, ())
        # the 48-point τ grid unrefined, as the correction was calibrated with (the bench's
        # caps and objectives); the early-stop verdicts use the refined fit (predict_steady)
        fit = fit_first_order(
            [t for t, _ in trace], [c for _, c in trace], tau_grid_s=FIT_TAU_GRID_S
        )
        return None if fit is None else fit[0]

    def _corrected_cap(
        self, uuid: str, cap_w: float, soak: SoakRound, throttled: bool
    ) -> float | None:
        """The cap that keeps the GPU's predicted asymptote under its target, or None when
        it is not headed there. The heat-sink's resistance is estimated from the same fit:
        (asymptote − starting temperature) / draw, which overstates the cut a little (the
        start was not at zero watts) — the safe side. Units: W."""
        target = self._target_c(uuid)
        goal = target - self.SOAK_MARGIN_C
        steady = self.predicted_steady_c(soak, uuid)
        if steady is None:
            return self._lower_cap(uuid, cap_w) if throttled else None
        if steady <= goal and not throttled:
            return None
        trace = soak.temp_trace[uuid]
        draw = min(soak.power_w.get(uuid, cap_w) or cap_w, cap_w)
        rise = steady - trace[0][1]
        if rise <= 0 or draw <= 0:
            return self._lower_cap(uuid, cap_w)
        cut_w = (max(steady, target) - goal) * draw / rise
        new = math.floor(min(draw - cut_w, cap_w * 0.97))
        return float(max(self.constraints[uuid].min_w, new))

    def _target_c(self, uuid: str) -> float:
        """The temperature SW thermal slowdown holds a card at. Units: °C."""
        t = self.rig.gpu(uuid).thresholds()
        return t.target_c or t.max_operating_c or t.slowdown_c or 80.0

    def _cool_down(self, limit_s: float = 600.0) -> None:
        """Idle every GPU until all are 10 °C under their SW thermal target (or ``limit_s``).

        A rejected round leaves cards at their thermal limit; the next round must start
        from a rig that is not still throttling on the previous round's heat.
        """
        for uuid in self.uuids:
            self.workload.stop(uuid)
        targets = {u: self._target_c(u) for u in self.uuids}
        started = self.clock.now_s()
        while self.clock.now_s() - started < limit_s:
            now = self.clock.now_s()
            temps = {u: self.rig.gpu(u).sample(now).temp_c for u in self.uuids}
            if all(t is None or t <= targets[u] - 10.0 for u, t in temps.items()):
                return
            self.clock.sleep(10.0)

    def _apply_caps(self, caps: Mapping[str, float]) -> None:
        # lower first, then raise: every intermediate state is at or below the final one
        for uuid in sorted(self.uuids, key=lambda u: caps[u] - self.caps[u]):
            self._set(uuid, caps[uuid])

    def _heat_soak(
        self, allocation: Allocation
    ) -> tuple[list[SoakRound], dict[str, float], set[str]]:
        caps = {uuid: float(cap) for uuid, cap in allocation.caps_w.items()}
        rounds: list[SoakRound] = []
        flagged: set[str] = set()
        # each card's time constant, once a round's rise pinned it down (its cooler's, not
        # its cap's): later rounds fit only the asymptote (SoakPredictionPolicy)
        taus: dict[str, float] = {}
        for _ in range(self.config.max_soak_rounds):
            soak = self._soak_once(caps, taus)
            rounds.append(soak)
            taus = {**soak.fitted_tau_s, **taus}
            if soak.passed:
                break
            # predict where every card would settle from this round's thermal transient and
            # lower each one headed over its target (the throttling card and its hot
            # neighbours) by the watts that move its asymptote under target − margin, so the
            # first correction is right instead of creeping down 8 % per round
            offenders = {e.uuid for e in soak.throttle_events} | set(soak.predicted_throttle)
            for uuid in self.uuids:
                new = self._corrected_cap(uuid, caps[uuid], soak, uuid in offenders)
                if new is None:
                    continue
                if new >= caps[uuid]:
                    flagged.add(uuid)
                caps[uuid] = new
            if self.group:
                # one split, one cap: the member that needs the most cut sets it for all
                lowest = min(caps[u] for u in self.group)
                caps = {u: lowest for u in caps}
            if soak.throttle_events:
                # a card throttled: the next round must not start on this round's heat. A
                # round ended by prediction left every card under its target: the next one
                # fits its transient from wherever the cards are (v₀ is a free parameter)
                self._cool_down()
        else:
            last = rounds[-1]
            flagged |= {e.uuid for e in last.throttle_events} | set(last.predicted_throttle)
        return rounds, caps, flagged

    def _soak_once(self, caps: Mapping[str, float], taus: Mapping[str, float]) -> SoakRound:
        """Run ``caps`` under full load until a throttle event, a confident prediction of
        every GPU's steady temperature (:func:`~tuning.telemetry.predict_steady`, with the
        time constants ``taus`` (s) earlier rounds fitted; not with ``full_soak``) or
        ``heat_soak_s``, whichever comes first.

        Throughput and power are judged over the last ``min(300 s, half the round)``: hot
        and steady in a full soak, the flattest part of the transient in a predicted one.
        """
        cfg = self.config
        self._apply_caps(caps)
        for uuid in self.uuids:
            self.workload.start(uuid)
        sampler = SustainedSampler(
            [self.rig.gpu(u) for u in self.uuids],
            self.clock,
            caps_w=caps,
            duration_s=cfg.heat_soak_s,
            period_s=cfg.sample_period_s,
        )
        started = sampler.started_s
        events: list[ThrottleEvent] = []
        times: list[float] = [started]
        tokens_log: list[dict[str, float]] = [
            {u: self.workload.tokens_total(u) for u in self.uuids}
        ]
        draw_log: dict[str, list[float]] = {u: [] for u in self.uuids}
        targets = {u: self._target_c(u) for u in self.uuids}
        predictions: dict[str, SteadyPrediction] = {}
        next_check_s = cfg.prediction.min_s
        self.progress("", "soak", {"caps_w": dict(caps), "seconds": cfg.heat_soak_s})
        while sampler.running:
            now, samples, new_events = sampler.step()
            times.append(now)
            tokens_log.append({u: self.workload.tokens_total(u) for u in self.uuids})
            draws = {}
            for uuid in self.uuids:
                sample = samples[uuid]
                self.watchdog.check_temperature(uuid, sample)
                draws[uuid] = self._draw_w(uuid, sample)
                # the measurement keeps what the card reported (no sensor: 0 W, as before);
                # only the watchdog assumes the worst
                draw_log[uuid].append(sample.power_draw_w or 0.0)
            events.extend(new_events)
            self.watchdog.check_draw(draws)
            if events:
                break  # rejected: no need to sit out the rest of the 30 minutes
            if not cfg.full_soak and now - started >= next_check_s - 1e-9:
                next_check_s += cfg.prediction.check_every_s
                predictions = self._predict(sampler, targets, taus)
                if len(predictions) == len(self.uuids) and all(
                    p.verdict is not None or p.at_target for p in predictions.values()
                ):
                    break  # every GPU's steady state is known: the rest of the soak is moot
        seen = sampler.gpu
        peak: dict[str, float] = {}
        for u in self.uuids:
            peak_c = seen[u].peak_temp_c
            peak[u] = peak_c if peak_c is not None else float("-inf")  # no sensor
        trace = {u: seen[u].temp_trace for u in self.uuids}
        now = self.clock.now_s()
        elapsed = now - started
        if not predictions or events:
            predictions = self._predict(sampler, targets, taus)
        judge_s = min(300.0, elapsed / 2.0)
        first = next((k for k, t in enumerate(times) if t >= now - judge_s - 1e-9), 0)
        first = min(first, len(times) - 2) if len(times) > 1 else 0
        span_s = times[-1] - times[first]
        tps = {
            u: (tokens_log[-1][u] - tokens_log[first][u]) / span_s if span_s > 0 else 0.0
            for u in self.uuids
        }
        # draw_log[k] was read at times[k + 1]
        power = {u: float(np.mean(draw_log[u][max(first - 1, 0) :] or [0.0])) for u in self.uuids}
        # a full soak is judged on what it saw alone (its verdict is the reference). A card
        # settling at its target has no margin: corrected like one headed over it (else a
        # throughput policy's hot caps soak the whole 30 minutes for a verdict that never comes)
        predicted_throttle = tuple(
            u
            for u in self.uuids
            if not cfg.full_soak
            and u in predictions
            and (predictions[u].verdict == "throttle" or predictions[u].at_target)
        )
        self.progress("", "soak_done", {"events": len(events), "seconds": elapsed})
        return SoakRound(
            caps_w=dict(caps),
            sim_seconds=elapsed,
            throttle_events=tuple(events),
            peak_temp_c=peak,
            throughput_tps=tps,
            power_w=power,
            temp_trace={u: tuple(t) for u, t in trace.items()},
            last_temp_c={u: t[-1][1] for u, t in trace.items() if t},
            predicted_steady_c={u: p.steady_c for u, p in predictions.items()},
            predicted_throttle=predicted_throttle,
            ended_by_prediction=not events and elapsed < cfg.heat_soak_s - 1e-9,
            fitted_tau_s={
                u: tau
                for u, p in predictions.items()
                if (tau := cfg.prediction.reusable_tau_s(p)) is not None
            },
        )

    def _predict(
        self,
        sampler: SustainedSampler,
        targets: Mapping[str, float],
        taus: Mapping[str, float],
    ) -> dict[str, SteadyPrediction]:
        """Each GPU's steady-state prediction from its trace so far, with its time constant
        from ``taus`` (s) when an earlier round fitted one (GPUs without a temperature
        sensor have none, so a soak with one runs its full length)."""
        out: dict[str, SteadyPrediction] = {}
        for uuid in self.uuids:
            trace = sampler.gpu[uuid].temp_trace
            prediction = predict_steady(
                [t for t, _ in trace],
                [c for _, c in trace],
                target_c=targets[uuid],
                policy=self.config.prediction,
                tau_s=taus.get(uuid),
            )
            if prediction is not None:
                out[uuid] = prediction
        return out

    @staticmethod
    def _settled_peak_c(soak: SoakRound, uuid: str) -> float:
        """The GPU's peak temperature for the profile and the placement: what it read, or,
        when the round stopped on a prediction before the card settled, the predicted
        steady temperature when that is higher (the card would get there). Units: °C."""
        peak_c = soak.peak_temp_c[uuid]
        predicted_c = soak.predicted_steady_c.get(uuid)
        if soak.ended_by_prediction and predicted_c is not None:
            return max(peak_c, round(predicted_c, 1))
        return peak_c

    def _result(
        self,
        sweep_s: float,
        allocation: Allocation,
        rounds: list[SoakRound],
        final_caps: Mapping[str, float],
        flagged: set[str],
        max_ratio: float,
        rig_s: float,
    ) -> SweepResult:
        final = rounds[-1]
        gpus = []
        for gpu in self.rig.gpus:
            uuid = gpu.uuid
            search = self.searches[uuid]
            top = search.uncapped
            constraints = self.constraints[uuid]
            gpus.append(
                GpuResult(
                    uuid=uuid,
                    name=gpu.name,
                    pci_bus_id=gpu.pci_bus_id,
                    min_w=constraints.min_w,
                    max_w=constraints.max_w,
                    stock_cap_w=constraints.default_w,
                    natural_draw_w=search.natural_draw_w or 0.0,
                    uncapped_tps=top.throughput_tps if top else 0.0,
                    uncapped_tokens_per_joule=top.tokens_per_joule if top else 0.0,
                    cap_w=float(final.caps_w[uuid]),
                    probes=len(search.points),
                    curve=tuple(sorted(search.points, key=lambda p: p.cap_w)),
                    throughput_tps=final.throughput_tps[uuid],
                    power_w=final.power_w[uuid],
                    peak_temp_c=self._settled_peak_c(final, uuid),
                    flagged=uuid in flagged,
                )
            )
        total_t = sum(final.throughput_tps.values())
        total_p = sum(final.power_w.values())
        objective = (
            total_t
            if self.config.policy is Policy.THROUGHPUT
            else (total_t / total_p if total_p else 0.0)
        )
        return SweepResult(
            config=self.config,
            rig_name=self.rig.name,
            rig_spec=self.rig_spec,
            fingerprint=self.rig.snapshot().fingerprint(),
            gpus=tuple(gpus),
            sweep_sim_s=sweep_s,
            soak_rounds=tuple(rounds),
            max_psu_load_ratio=max_ratio,
            allocation=allocation,
            objective=objective,
            resumed_probes=self.resumed_probes,
            floor_blocked_by=self.floor_blocked_by,
            rig_s=rig_s,
            swept_together=(self.group,) if self.group else (),
        )


def _common_constraints(constraints: list[PowerConstraints]) -> PowerConstraints:
    """The cap range every GPU of a split accepts (the highest minimum, the lowest maximum)."""
    low = max(c.min_w for c in constraints)
    high = min(c.max_w for c in constraints)
    if low > high:
        raise ConfigError(
            f"the split's GPUs share no power limit: minimums up to {low:g} W, maximums from "
            f"{high:g} W; split over GPUs with overlapping ranges"
        )
    default = min(max(c.default_w, low) for c in constraints)
    return PowerConstraints(min_w=low, max_w=high, default_w=min(default, high))


def _mean_sample(leader: GpuSample, samples: list[GpuSample]) -> GpuSample:
    """One reading for a split: the members' mean draw, the hottest member's temperature,
    every member's clock-event reasons (a probe is throttled if any member is)."""
    draws = [s.power_draw_w for s in samples if s.power_draw_w is not None]
    temps = [s.temp_c for s in samples if s.temp_c is not None]
    reasons = frozenset().union(*(s.clock_event_reasons for s in samples))
    return replace(
        leader,
        power_draw_w=sum(draws) / len(draws) if draws else None,
        temp_c=max(temps) if temps else None,
        clock_event_reasons=reasons,
    )
