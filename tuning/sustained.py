"""Sustained load: the one sampler of the sweep's heat-soak and ``rigforge loop``'s runs.

Under a sustained load both read every GPU at the same instant once per sample period, keep
its peak temperature and temperature trace, and watch it throttle
(:class:`SustainedSampler`); each then adds what only it needs (the sweep: the watchdog and a
judging window; the loop: energy and circuit draw, :func:`sustained_run`).

A **sustained run** (:func:`sustained_run`, ``rigforge loop``'s stock and tuned runs) measures,
per GPU: throughput = Δtokens / Δt (tokens/s), draw = Δenergy / Δt (W, from the GPU's energy
counter), tokens/J = Δtokens / Δenergy, the peak temperature, throttled samples and throttle
events. Per circuit: wall draw (AC W) sampled each second, its mean and peak against the
circuit's continuous budget (breaker × voltage × continuous ratio).

**Throttling** — a *throttled sample* is a reading whose clock-event reasons include any of
:data:`~tuning.backends.base.THROTTLE_REASONS`: ``hw_slowdown`` (the board's slowdown input:
overheating or an external power-brake signal), ``sw_thermal_slowdown`` (the driver holding
the card at its thermal target), ``hw_thermal_slowdown`` (the slowdown threshold reached) and
``hw_power_brake_slowdown`` (the PSU or platform asked the card to slow down). Each means the
card ran slower than its cap allows, because of heat or an electrical limit — what a tuned
config must never show. ``sw_power_cap`` is **not** a throttle: under a cap the card runs the
highest clock whose power fits, so the cap reason is asserted whenever the cap binds (it is
the cap working); nor are ``gpu_idle``, ``applications_clocks_setting``, ``sync_boost`` and
``display_clock_setting`` (settings and idleness, not slowdowns).

A **throttle event** is a transition into a throttled state: the first throttled sample of a
GPU after an unthrottled one (or after the start). A card that stays throttled for ten minutes
is one event (and 600 throttled samples); one that recovers and throttles again is two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuning.backends.base import THROTTLE_REASONS, Clock, Gpu, GpuSample, Rig
from tuning.budget import BudgetModel
from tuning.workloads import Workload


@dataclass(frozen=True)
class ThrottleEvent:
    """A GPU entering a throttled state: when (rig clock, s), which GPU, which reasons, at
    what cap (W), at what temperature (°C)."""

    time_s: float
    uuid: str
    reasons: tuple[str, ...]
    cap_w: float
    temp_c: float | None


@dataclass
class GpuSustained:
    """What the sampler has seen of one GPU so far.

    ``temp_trace``: ``(seconds since the start, °C)`` of every sample with a temperature;
    ``throttle_samples``: throttled samples; ``events``: its throttle events (module doc).
    """

    peak_temp_c: float | None = None
    temp_trace: list[tuple[float, float]] = field(default_factory=list)
    throttle_samples: int = 0
    throttle_reasons: set[str] = field(default_factory=set)
    events: list[ThrottleEvent] = field(default_factory=list)
    throttled: bool = False


class SustainedSampler:
    """Sample ``gpus`` every ``period_s`` for ``duration_s`` of rig time from now.

    Usage::

        sampler = SustainedSampler(gpus, rig.clock, caps_w=caps, duration_s=1800.0, period_s=1.0)
        while sampler.running:
            now, samples, new_events = sampler.step()

    ``caps_w`` (by UUID, W) is recorded in each :class:`ThrottleEvent`. The last sleep is cut
    to end exactly at ``duration_s``.
    """

    def __init__(
        self,
        gpus: Sequence[Gpu],
        clock: Clock,
        *,
        caps_w: Mapping[str, float],
        duration_s: float,
        period_s: float,
    ) -> None:
        self.gpus = list(gpus)
        self.clock = clock
        self.caps_w = dict(caps_w)
        self.duration_s = duration_s
        self.period_s = period_s
        self.started_s = clock.now_s()
        self.gpu: dict[str, GpuSustained] = {g.uuid: GpuSustained() for g in self.gpus}

    @property
    def elapsed_s(self) -> float:
        """Rig-clock seconds since the sampler started. Units: s."""
        return self.clock.now_s() - self.started_s

    @property
    def running(self) -> bool:
        """Whether ``duration_s`` has not yet run out (to within a nanosecond)."""
        return self.elapsed_s < self.duration_s - 1e-9

    @property
    def events(self) -> list[ThrottleEvent]:
        """Every GPU's throttle events so far, in GPU order."""
        return [e for g in self.gpus for e in self.gpu[g.uuid].events]

    def step(self) -> tuple[float, dict[str, GpuSample], list[ThrottleEvent]]:
        """Sleep one period (at most what is left), read every GPU at the same instant.

        Returns the rig time of the readings (s), the readings by UUID, and the throttle
        events that began with them.
        """
        self.clock.sleep(min(self.period_s, self.duration_s - self.elapsed_s))
        now = self.clock.now_s()
        samples: dict[str, GpuSample] = {}
        new_events: list[ThrottleEvent] = []
        for gpu in self.gpus:
            sample = gpu.sample(now)
            samples[gpu.uuid] = sample
            event = self._observe(gpu.uuid, now, sample)
            if event is not None:
                new_events.append(event)
        return now, samples, new_events

    def _observe(self, uuid: str, now_s: float, sample: GpuSample) -> ThrottleEvent | None:
        seen = self.gpu[uuid]
        if sample.temp_c is not None:
            prior = seen.peak_temp_c
            seen.peak_temp_c = sample.temp_c if prior is None else max(prior, sample.temp_c)
            seen.temp_trace.append((now_s - self.started_s, sample.temp_c))
        hit = sample.clock_event_reasons & THROTTLE_REASONS
        event = None
        if hit:
            seen.throttle_samples += 1
            seen.throttle_reasons |= {str(r) for r in hit}
            if not seen.throttled:
                event = ThrottleEvent(
                    now_s, uuid, tuple(sorted(hit)), self.caps_w[uuid], sample.temp_c
                )
                seen.events.append(event)
        seen.throttled = bool(hit)
        return event


# --------------------------------------------------------------------------------------------
# A measured sustained run at fixed caps (rigforge loop's stock and tuned runs)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuRun:
    """One GPU over a sustained run. Units in the names; tokens/J = tokens / joules."""

    uuid: str
    index: int
    name: str
    pci_bus_id: str
    cap_w: float
    throughput_tps: float
    power_w: float
    tokens_per_joule: float
    peak_temp_c: float | None
    throttle_samples: int
    throttle_events: int
    throttle_reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "index": self.index,
            "name": self.name,
            "pci_bus_id": self.pci_bus_id,
            "cap_w": self.cap_w,
            "throughput_tps": round(self.throughput_tps, 3),
            "power_w": round(self.power_w, 1),
            "tokens_per_joule": round(self.tokens_per_joule, 5),
            "peak_temp_c": self.peak_temp_c,
            "throttle_samples": self.throttle_samples,
            "throttle_events": self.throttle_events,
            "throttle_reasons": list(self.throttle_reasons),
        }


@dataclass(frozen=True)
class CircuitLoad:
    """Wall draw on one circuit over a run vs its continuous budget. Units: W (AC).

    ``at_caps_w``: the wall draw if every GPU on the circuit drew its full cap (what the
    budget model allocates against; a compute-bound load gets there, decode may not).
    """

    name: str
    budget_w: float
    mean_w: float
    peak_w: float
    at_caps_w: float

    @property
    def mean_pct(self) -> float:
        """Mean draw as a percentage of the continuous budget. Units: %."""
        return 100.0 * self.mean_w / self.budget_w if self.budget_w > 0 else 0.0

    @property
    def peak_pct(self) -> float:
        """Peak draw as a percentage of the continuous budget. Units: %."""
        return 100.0 * self.peak_w / self.budget_w if self.budget_w > 0 else 0.0

    @property
    def within_budget(self) -> bool:
        """Whether even the peak stayed inside the continuous budget."""
        return self.peak_w <= self.budget_w

    @property
    def at_caps_pct(self) -> float:
        """Wall draw at full caps as a percentage of the continuous budget. Units: %."""
        return 100.0 * self.at_caps_w / self.budget_w if self.budget_w > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget_w": round(self.budget_w, 1),
            "mean_w": round(self.mean_w, 1),
            "peak_w": round(self.peak_w, 1),
            "mean_pct": round(self.mean_pct, 1),
            "peak_pct": round(self.peak_pct, 1),
            "within_budget": self.within_budget,
            "at_caps_w": round(self.at_caps_w, 1),
            "at_caps_pct": round(self.at_caps_pct, 1),
        }


@dataclass(frozen=True)
class PsuLoad:
    """DC load on one PSU over a run vs its rating. Units: W (DC).

    ``at_caps_w``: the DC load if every GPU on the PSU drew its full cap, plus platform.
    """

    name: str
    rating_w: float
    mean_w: float
    peak_w: float
    at_caps_w: float

    @property
    def peak_pct(self) -> float:
        """Peak load as a percentage of the rating. Units: %."""
        return 100.0 * self.peak_w / self.rating_w if self.rating_w > 0 else 0.0

    @property
    def at_caps_pct(self) -> float:
        """Load at full caps as a percentage of the rating. Units: %."""
        return 100.0 * self.at_caps_w / self.rating_w if self.rating_w > 0 else 0.0

    @property
    def within_rating(self) -> bool:
        """Whether even the peak stayed inside the PSU's rating."""
        return self.peak_w <= self.rating_w

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rating_w": round(self.rating_w, 1),
            "mean_w": round(self.mean_w, 1),
            "peak_w": round(self.peak_w, 1),
            "peak_pct": round(self.peak_pct, 1),
            "within_rating": self.within_rating,
            "at_caps_w": round(self.at_caps_w, 1),
            "at_caps_pct": round(self.at_caps_pct, 1),
        }


@dataclass(frozen=True)
class SustainedRun:
    """Every GPU loaded at fixed caps for ``seconds`` of rig time, measured."""

    label: str
    seconds: float
    gpus: tuple[GpuRun, ...]
    circuits: tuple[CircuitLoad, ...]
    psus: tuple[PsuLoad, ...] = ()

    @property
    def caps_w(self) -> dict[str, float]:
        return {g.uuid: g.cap_w for g in self.gpus}

    @property
    def throughput_tps(self) -> float:
        """Aggregate tokens/s over the run. Units: tokens/s."""
        return sum(g.throughput_tps for g in self.gpus)

    @property
    def power_w(self) -> float:
        """Σ of the GPUs' mean board draw. Units: W (DC)."""
        return sum(g.power_w for g in self.gpus)

    @property
    def wall_w(self) -> float:
        """Σ of the circuits' mean wall draw (GPUs, platform, PSU losses). Units: W (AC)."""
        return sum(c.mean_w for c in self.circuits)

    @property
    def tokens_per_joule(self) -> float:
        """Aggregate tokens per joule of GPU energy. Units: tokens/J."""
        return self.throughput_tps / self.power_w if self.power_w > 0 else 0.0

    @property
    def throttle_events(self) -> int:
        return sum(g.throttle_events for g in self.gpus)

    @property
    def throttle_samples(self) -> int:
        return sum(g.throttle_samples for g in self.gpus)

    @property
    def peak_temp_c(self) -> float | None:
        temps = [g.peak_temp_c for g in self.gpus if g.peak_temp_c is not None]
        return max(temps) if temps else None

    @property
    def circuits_within_budget(self) -> bool:
        return all(c.within_budget for c in self.circuits)

    @property
    def psus_within_rating(self) -> bool:
        return all(p.within_rating for p in self.psus)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seconds": self.seconds,
            "throughput_tps": round(self.throughput_tps, 3),
            "power_w": round(self.power_w, 1),
            "wall_w": round(self.wall_w, 1),
            "tokens_per_joule": round(self.tokens_per_joule, 5),
            "throttle_events": self.throttle_events,
            "throttle_samples": self.throttle_samples,
            "peak_temp_c": self.peak_temp_c,
            "circuits_within_budget": self.circuits_within_budget,
            "gpus": [g.to_json() for g in self.gpus],
            "circuits": [c.to_json() for c in self.circuits],
            "psus_within_rating": self.psus_within_rating,
            "psus": [p.to_json() for p in self.psus],
        }


#: progress of a sustained run: (label, elapsed rig seconds, total rig seconds)
SustainedProgress = Callable[[str, float, float], None]


def _circuit_walls_w(rig: Rig, budget: BudgetModel, draws_w: Mapping[str, float]) -> list[float]:
    """Wall draw per circuit now: the rig's own figure where it has one (the simulator's
    ``circuit_draw_w``), else the budget model applied to the GPUs' measured draw."""
    direct = getattr(rig, "circuit_draw_w", None)
    if callable(direct):
        return [float(direct(c.name)) for c in budget.circuits]
    ratios = budget.load_ratios(draws_w)
    return [ratios[f"circuit:{c.name}"] * c.budget_w for c in budget.circuits]


def sustained_run(
    rig: Rig,
    workload: Workload,
    caps_w: Mapping[str, float],
    *,
    label: str,
    duration_s: float = 1800.0,
    sample_period_s: float = 1.0,
    progress: SustainedProgress | None = None,
) -> SustainedRun:
    """Set ``caps_w`` (by UUID, W), load every GPU for ``duration_s``, measure (module doc).

    The caps are set straight on the rig's GPUs: callers pass a rig they own outright (a
    fresh simulated rig), never real hardware. The workload is stopped however this ends.
    """
    gpus = list(rig.gpus)
    uuids = [g.uuid for g in gpus]
    for gpu in gpus:
        gpu.set_power_limit_w(float(caps_w[gpu.uuid]))
    budget = BudgetModel.from_rig(rig)
    clock = rig.clock
    tokens0 = {u: workload.tokens_total(u) for u in uuids}
    energy0 = {g.uuid: g.total_energy_j() for g in gpus}
    sampler = SustainedSampler(
        gpus, clock, caps_w=caps_w, duration_s=duration_s, period_s=sample_period_s
    )
    started = sampler.started_s
    draw_sum = dict.fromkeys(uuids, 0.0)
    wall_sum = [0.0] * len(budget.circuits)
    wall_peak = [0.0] * len(budget.circuits)
    dc_sum = {p.name: 0.0 for p in budget.psus}
    dc_peak = {p.name: 0.0 for p in budget.psus}
    n = 0
    report_every = max(1, round(60.0 / sample_period_s))
    try:
        for uuid in uuids:
            workload.start(uuid)
        while sampler.running:
            now, samples, _ = sampler.step()
            n += 1
            draws: dict[str, float] = {}
            for uuid, sample in samples.items():
                draws[uuid] = sample.power_draw_w or 0.0
                draw_sum[uuid] += draws[uuid]
            for name, dc_w in budget.psu_dc_w(draws).items():
                dc_sum[name] += dc_w
                dc_peak[name] = max(dc_peak[name], dc_w)
            for k, wall_w in enumerate(_circuit_walls_w(rig, budget, draws)):
                wall_sum[k] += wall_w
                wall_peak[k] = max(wall_peak[k], wall_w)
            ending = now - started >= duration_s - 1e-9  # reported once, after the loop
            if progress is not None and n % report_every == 0 and not ending:
                progress(label, now - started, duration_s)
    finally:
        for uuid in uuids:
            workload.stop(uuid)
    elapsed = clock.now_s() - started
    seen = sampler.gpu
    runs = []
    for gpu in gpus:
        uuid = gpu.uuid
        tokens = workload.tokens_total(uuid) - tokens0[uuid]
        end_energy, start_energy = gpu.total_energy_j(), energy0[uuid]
        if end_energy is not None and start_energy is not None:
            joules = end_energy - start_energy
        else:  # no energy counter: the sampled 1 s averages stand in for it
            joules = draw_sum[uuid] / max(n, 1) * elapsed
        runs.append(
            GpuRun(
                uuid=uuid,
                index=gpu.index,
                name=gpu.name,
                pci_bus_id=gpu.pci_bus_id,
                cap_w=gpu.power_limit_w(),
                throughput_tps=tokens / elapsed if elapsed > 0 else 0.0,
                power_w=joules / elapsed if elapsed > 0 else 0.0,
                tokens_per_joule=tokens / joules if joules > 0 else 0.0,
                peak_temp_c=seen[uuid].peak_temp_c,
                throttle_samples=seen[uuid].throttle_samples,
                throttle_events=len(seen[uuid].events),
                throttle_reasons=tuple(sorted(seen[uuid].throttle_reasons)),
            )
        )
    at_caps = budget.load_ratios({r.uuid: r.cap_w for r in runs})
    circuits = tuple(
        CircuitLoad(
            name=c.name,
            budget_w=c.budget_w,
            mean_w=wall_sum[k] / max(n, 1),
            peak_w=wall_peak[k],
            at_caps_w=at_caps[f"circuit:{c.name}"] * c.budget_w,
        )
        for k, c in enumerate(budget.circuits)
    )
    psus = tuple(
        PsuLoad(
            name=p.name,
            rating_w=p.rating_w,
            mean_w=dc_sum[p.name] / max(n, 1),
            peak_w=dc_peak[p.name],
            at_caps_w=at_caps[f"psu:{p.name}"] * p.rating_w,
        )
        for p in budget.psus
    )
    if progress is not None:
        progress(label, elapsed, duration_s)
    return SustainedRun(
        label=label, seconds=elapsed, gpus=tuple(runs), circuits=circuits, psus=psus
    )
