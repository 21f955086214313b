"""Telemetry for the tuner: probe windows, steady-state detection, the cap trace, the watchdog.

* :class:`ProbeWindow` collects 1 s samples of one GPU under one cap and decides when the
  readings are steady (the slope of the 1 s power average and of throughput over a sliding
  window is below a tolerance) instead of waiting a fixed long time.
* :class:`CapTrace` records every change of a live power cap with its rig-clock time; the
  maximum PSU/circuit load ratio over the whole sweep is computed from it, so the claim
  "the sum of live caps never exceeded a budget" is provable from the trace alone.
* :class:`Watchdog` raises :class:`~tuning.errors.SafetyAbort` when a GPU comes within
  ``margin_c`` (default 5 °C) of its HW slowdown threshold (or the stand-in of
  :func:`watchdog_limit_c` where the card reports none), when a loaded GPU reports no
  temperature for several samples in a row, or when measured draw nears a budget.

Units: W, °C, s, tokens/s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tuning.backends.base import THROTTLE_REASONS, ClockEventReason, GpuSample
from tuning.budget import BudgetModel
from tuning.core.rig import Thresholds
from tuning.errors import SafetyAbort

#: The shortest window a probe is measured over. NVML's power reading is a 1 s moving
#: average, so a window must span several of those averages to mean anything.
MIN_WINDOW_S = 5.0


@dataclass(frozen=True)
class SteadyStatePolicy:
    """When a probe's readings count as steady.

    ``settle_s``: time after a cap change discarded before the window starts (the 1 s power
    average and DVFS need it to catch up). ``window_s``: sliding-window length. The window is
    steady when the least-squares slope of power and of throughput, extrapolated over the
    window, moves the value by less than ``rel_tol`` of its mean. ``max_s``: give up waiting
    and take the last window (a drifting probe is still a measurement, flagged as such).
    """

    settle_s: float = 3.0
    window_s: float = 6.0
    rel_tol: float = 0.02
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.window_s < MIN_WINDOW_S:
            raise ValueError(f"window_s must be ≥ {MIN_WINDOW_S} s (NVML's 1 s power average)")


@dataclass(frozen=True)
class ProbeMeasurement:
    """What one probe measured, averaged over its steady window.

    ``throughput_tps``: tokens/s; ``power_w``: mean board draw; ``tokens_per_joule``:
    ``throughput_tps / power_w``; ``temp_c``: mean temperature over the window;
    ``peak_temp_c``: the highest reading during the whole probe; ``throttled``: a heat or
    electrical slowdown was seen; ``steady``: the window met the steady-state tolerance
    (False: ``max_s`` ran out); ``duration_s``: probe length including settling.
    """

    cap_w: float
    throughput_tps: float
    power_w: float
    temp_c: float
    peak_temp_c: float
    throttled: bool
    steady: bool
    duration_s: float

    @property
    def tokens_per_joule(self) -> float:
        return self.throughput_tps / self.power_w if self.power_w > 0 else 0.0


def _relative_drift(times_s: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope × window length / mean: how far the value moves across the window."""
    mean = float(np.mean(values))
    if mean <= 0:
        return 0.0
    span_s = float(times_s[-1] - times_s[0])
    if span_s <= 0:
        return float("inf")
    slope = float(np.polyfit(times_s - times_s[0], values, 1)[0])
    return abs(slope) * span_s / mean


@dataclass
class ProbeWindow:
    """Samples of one GPU under one cap; ask :meth:`steady` after each :meth:`add`.

    Throughput comes from the workload's cumulative token counter (``tokens_total``), so a
    window's throughput is Δtokens / Δt — exact even when per-sample rates are noisy.
    """

    cap_w: float
    started_s: float
    policy: SteadyStatePolicy = field(default_factory=SteadyStatePolicy)
    times_s: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    temp_c: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    throttled: bool = False
    peak_temp_c: float = float("-inf")

    def add(self, sample: GpuSample, tokens_total: float) -> None:
        """Record one sample and the workload's cumulative token count at the same instant."""
        if sample.temp_c is not None:
            self.peak_temp_c = max(self.peak_temp_c, sample.temp_c)
        if sample.clock_event_reasons & THROTTLE_REASONS:
            self.throttled = True
        if sample.timestamp_s - self.started_s < self.policy.settle_s:
            return
        self.times_s.append(sample.timestamp_s)
        self.power_w.append(sample.power_draw_w if sample.power_draw_w is not None else 0.0)
        self.temp_c.append(sample.temp_c if sample.temp_c is not None else float("nan"))
        self.tokens.append(tokens_total)

    def _window(self) -> slice:
        last_s = self.times_s[-1]
        start = 0
        while last_s - self.times_s[start] > self.policy.window_s:
            start += 1
        return slice(start, len(self.times_s))

    def _rates(self, window: slice) -> tuple[np.ndarray, np.ndarray]:
        times = np.asarray(self.times_s[window])
        tokens = np.asarray(self.tokens[window])
        rate_times = (times[1:] + times[:-1]) / 2
        rates = np.diff(tokens) / np.maximum(np.diff(times), 1e-9)
        return rate_times, rates

    def covered_s(self) -> float:
        """Seconds spanned by the measured (post-settle) samples."""
        return self.times_s[-1] - self.times_s[0] if len(self.times_s) > 1 else 0.0

    def steady(self) -> bool:
        """True once a full window exists whose power and throughput drift within tolerance."""
        if len(self.times_s) < 3 or self.covered_s() < self.policy.window_s:
            return False
        window = self._window()
        times = np.asarray(self.times_s[window])
        power_drift = _relative_drift(times, np.asarray(self.power_w[window]))
        rate_times, rates = self._rates(window)
        rate_drift = _relative_drift(rate_times, rates) if len(rates) > 2 else 0.0
        return power_drift < self.policy.rel_tol and rate_drift < self.policy.rel_tol

    def expired(self, now_s: float) -> bool:
        """True when the probe has run ``max_s`` without becoming steady."""
        return now_s - self.started_s >= self.policy.max_s

    def result(self, now_s: float) -> ProbeMeasurement:
        """The measurement over the last window (call once :meth:`steady` or :meth:`expired`)."""
        if len(self.times_s) < 2:
            raise ValueError("a probe needs at least two samples after settling")
        window = self._window()
        times = self.times_s[window]
        tokens = self.tokens[window]
        throughput = (tokens[-1] - tokens[0]) / max(times[-1] - times[0], 1e-9)
        temps = [t for t in self.temp_c[window] if t == t]
        return ProbeMeasurement(
            cap_w=self.cap_w,
            throughput_tps=float(throughput),
            power_w=float(np.mean(self.power_w[window])),
            temp_c=float(np.mean(temps)) if temps else float("nan"),
            peak_temp_c=self.peak_temp_c,
            throttled=self.throttled,
            steady=self.steady(),
            duration_s=now_s - self.started_s,
        )


#: The time constants a first-order fit scans: a log grid from 10 s to 30 min. Units: s.
FIT_TAU_GRID_S: tuple[float, ...] = tuple(float(t) for t in np.geomspace(10.0, 1800.0, 48))


@dataclass(frozen=True)
class FirstOrderFit:
    """``v(t) = steady − (steady − start)·exp(−t/τ)`` fitted to a transient.

    ``steady``: the asymptote; ``start``: the value at the first sample; ``tau_s``: the time
    constant (s); ``rms``: root-mean-square residual of the fit, in the value's own unit.
    """

    steady: float
    start: float
    tau_s: float
    rms: float


def fit_first_order_detail(
    times_s: Sequence[float], values: Sequence[float], *, tau_grid_s: Sequence[float] | None = None
) -> FirstOrderFit | None:
    """Fit ``v(t) = v∞ − (v∞ − v₀)·exp(−t/τ)`` to a transient (see :func:`fit_first_order`).

    τ is scanned on ``tau_grid_s`` (default :data:`FIT_TAU_GRID_S`); for each τ, v∞ and v₀
    follow from linear least squares (2 × 2 normal equations, all τ at once); the smallest
    residual wins. None when there are fewer than 5 samples or they span less than 5 s.
    """
    if len(times_s) < 5 or times_s[-1] - times_s[0] < 5.0:
        return None
    t = np.asarray(times_s, dtype=float) - float(times_s[0])
    v = np.asarray(values, dtype=float)
    grid = np.asarray(tau_grid_s or FIT_TAU_GRID_S, dtype=float)
    best = _fit_on_grid(t, v, grid)
    if tau_grid_s is None:
        # refine between the best grid point's neighbours: the grid steps τ by ≈ 12 %, and
        # the asymptote extrapolated from a third of the rise moves with τ
        k = int(np.argmin(np.abs(grid - best.tau_s)))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        best = _fit_on_grid(t, v, np.linspace(lo, hi, 41))
    return best


def _fit_on_grid(t: np.ndarray, v: np.ndarray, taus: np.ndarray) -> FirstOrderFit:
    """The least-squares first-order fit for each τ of ``taus``; the best one."""
    e = np.exp(-t[None, :] / taus[:, None])  # τ × samples
    a = 1.0 - e  # v = v∞·a + v₀·e
    saa, sab, sbb = (a * a).sum(1), (a * e).sum(1), (e * e).sum(1)
    sav, sbv = a @ v, e @ v
    det = saa * sbb - sab * sab
    ok = np.abs(det) > 1e-12
    safe = np.where(ok, det, 1.0)
    v_inf = np.where(ok, (sav * sbb - sbv * sab) / safe, float(np.mean(v)))
    v_0 = np.where(ok, (sbv * saa - sav * sab) / safe, float(np.mean(v)))
    residual = ((v_inf[:, None] * a + v_0[:, None] * e - v[None, :]) ** 2).sum(1)
    best = int(np.argmin(residual))
    return FirstOrderFit(
        steady=float(v_inf[best]),
        start=float(v_0[best]),
        tau_s=float(taus[best]),
        rms=float(math.sqrt(residual[best] / len(v))),
    )


def fit_first_order(
    times_s: Sequence[float], values: Sequence[float], *, tau_grid_s: Sequence[float] | None = None
) -> tuple[float, float] | None:
    """Fit ``v(t) = v∞ − (v∞ − v₀)·exp(−t/τ)`` to a transient; returns ``(v∞, τ)`` or None.

    A heat-sink warms like a first-order system, so a minute of a transient predicts where
    it settles long before it gets there. τ is scanned on a log grid (10 s–30 min) and, for
    each τ, v∞ and v₀ follow from linear least squares; the best residual wins. None when
    there are fewer than 5 samples or the samples span less than 5 s. Units: s, value's own.
    """
    fit = fit_first_order_detail(times_s, values, tau_grid_s=tau_grid_s)
    return None if fit is None else (fit.steady, fit.tau_s)


@dataclass(frozen=True)
class SoakPredictionPolicy:
    """When a heat-soak may stop early on a predicted steady temperature.

    A soak is checked every ``check_every_s`` once it has run ``min_s``. A GPU's prediction
    (:func:`predict_steady`) is **confident** when all of these hold:

    * the fit's RMS residual is at most ``max_rms_c`` (a noisy trace — fans hunting, a
      drifting room, a load that comes and goes — is no first-order transient);
    * the trace has run ``min_tau_multiple`` fitted time constants (then at most
      e^−1.5 ≈ 22 % of the rise is extrapolated), or it is already within
      ``resolution_c`` of the asymptote;
    * the fitted τ is inside the scanned grid (a τ at the grid's end means "still rising
      as far as the fit can tell").

    Its **uncertainty** is ``resolution_c`` (NVML reports whole degrees: ±0.5 °C) + the RMS
    residual + how far the asymptote moved against a fit of the trace without its last
    ``lookback_s``. The verdict is *pass* when asymptote + uncertainty ≤ target, *throttle*
    when asymptote − uncertainty > target, and none (keep soaking) in between. With no
    verdict, a confident prediction is **at target** when the asymptote, moved by the
    lookback's drift, stays within ``resolution_c`` + RMS of the target: that band is what
    the readings themselves blur, so no longer soak can tell the card from its target (a
    throughput policy's hot caps settle there), and the caller stops soaking and treats the
    card as having no thermal margin.

    A card's time constant is its cooler's (heat capacity × thermal resistance), not its
    cap's: a later round on the same card may pass the τ an earlier round fitted
    (:meth:`reusable_tau_s`: only from a confident fit of a rise of at least
    ``min_rise_for_tau_c``, where τ is well determined). The fit then solves only for the
    asymptote and the start, and the τ-multiple rule counts that τ. Why: after a cap
    correction a card sits within a degree of where it settles, and one whole-degree step
    late in such a flat trace lets a free τ run to the grid's end and extrapolate 5 °C
    high — the soak would sit out minutes for a verdict the first round already implied.
    Every figure here is an ``estimate`` (chosen against the simulated rigs' τ of 70–120 s,
    ``presets.yaml``; a real card's transient is checked by the same rules).
    """

    min_s: float = 120.0  # estimate: ≥ one τ of the slowest preset cooler (passive, 120 s)
    check_every_s: float = 15.0  # estimate
    lookback_s: float = 60.0  # estimate
    min_tau_multiple: float = 1.5  # estimate
    resolution_c: float = 0.5  # NVML temperature is whole degrees
    max_rms_c: float = 1.0  # estimate: 2 × resolution
    min_rise_for_tau_c: float = 5.0  # estimate: 10 × resolution, so the steps do not shape τ

    def reusable_tau_s(self, prediction: SteadyPrediction) -> float | None:
        """The τ (s) a later round on the same card may fit with, or None: the prediction
        was confident, its τ was not passed in, and it fitted a rise (°C, either sign) of
        at least ``min_rise_for_tau_c``."""
        if not prediction.confident or prediction.tau_given:
            return None
        if abs(prediction.steady_c - prediction.start_c) < self.min_rise_for_tau_c:
            return None
        return prediction.tau_s


@dataclass(frozen=True)
class SteadyPrediction:
    """A GPU's predicted steady temperature from its soak transient (:func:`predict_steady`).

    ``steady_c``: the fitted asymptote (°C); ``tau_s``: fitted time constant (s); ``rms_c``:
    fit residual (°C); ``uncertainty_c``: ± on ``steady_c`` (°C); ``confident``: the rules
    of :class:`SoakPredictionPolicy` hold; ``verdict``: ``"pass"``, ``"throttle"`` or
    ``None`` (not yet decidable); ``at_target``: no verdict, and none would come from a
    longer soak: the card settles within its readings' blur of the target (no margin).
    ``start_c``: the fitted value at the trace's first sample (°C); ``tau_given``: ``tau_s``
    was passed in (an earlier round's), not fitted.
    """

    steady_c: float
    tau_s: float
    rms_c: float
    uncertainty_c: float
    confident: bool
    verdict: str | None
    at_target: bool = False
    start_c: float = math.nan
    tau_given: bool = False


def predict_steady(
    times_s: Sequence[float],
    temps_c: Sequence[float],
    *,
    target_c: float,
    policy: SoakPredictionPolicy | None = None,
    tau_s: float | None = None,
) -> SteadyPrediction | None:
    """Predict where a GPU's temperature settles and whether it would throttle there.

    ``times_s``/``temps_c``: the soak's trace so far (seconds since the soak began, °C);
    ``target_c``: the temperature at which SW thermal slowdown begins; ``tau_s``: the card's
    time constant when an earlier round fitted it (s; :meth:`SoakPredictionPolicy.
    reusable_tau_s`), else None (fitted here). None when the trace is too short to fit.
    Rules and their figures: :class:`SoakPredictionPolicy`.

    Example (worked by hand): a card from 50 °C towards 80 °C with τ = 60 s, read as whole
    degrees each second for 180 s (3 τ: 95 % of the rise) fits the asymptote to within
    about 0.5 °C; the uncertainty is ≈ 0.5 + 0.3 (whole-degree RMS, 1/√12) + the last
    minute's drift of the asymptote (≤ 0.2) ≈ 0.8–1.0 °C, so with a target of 83 °C it
    passes, with 78 °C it throttles, and with 79.5 °C there is no verdict yet.
    """
    pol = policy or SoakPredictionPolicy()
    grid = None if tau_s is None else [float(tau_s)]
    fit = fit_first_order_detail(times_s, temps_c, tau_grid_s=grid)
    if fit is None:
        return None
    last_s = times_s[-1]
    cut = [i for i, t in enumerate(times_s) if t <= last_s - pol.lookback_s]
    earlier = (
        fit_first_order_detail(times_s[: len(cut)], temps_c[: len(cut)], tau_grid_s=grid)
        if cut
        else None
    )
    drift_c = abs(fit.steady - earlier.steady) if earlier is not None else math.inf
    uncertainty = pol.resolution_c + fit.rms + drift_c
    elapsed = last_s - times_s[0]
    near = abs(fit.steady - temps_c[-1]) <= pol.resolution_c
    confident = (
        elapsed >= pol.min_s
        and fit.rms <= pol.max_rms_c
        and math.isfinite(drift_c)
        and (
            near
            or (
                elapsed >= pol.min_tau_multiple * fit.tau_s
                # a fitted τ at the grid's end means "still rising as far as the fit can tell"
                and (tau_s is not None or fit.tau_s < FIT_TAU_GRID_S[-1])
            )
        )
    )
    verdict: str | None = None
    at_target = False
    if confident:
        if fit.steady + uncertainty <= target_c:
            verdict = "pass"
        elif fit.steady - uncertainty > target_c:
            verdict = "throttle"
        else:
            # the band no soak narrows: whole-degree readings (resolution) and the fit's scatter
            blur_c = pol.resolution_c + fit.rms
            at_target = abs(fit.steady - target_c) + drift_c < blur_c
    return SteadyPrediction(
        steady_c=fit.steady,
        tau_s=fit.tau_s,
        rms_c=fit.rms,
        uncertainty_c=uncertainty,
        confident=confident,
        verdict=verdict,
        at_target=at_target,
        start_c=fit.start,
        tau_given=tau_s is not None,
    )


# --------------------------------------------------------------------------------------------
# The cap trace
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapEvent:
    """At ``time_s`` the live cap of GPU ``uuid`` became ``cap_w``."""

    time_s: float
    uuid: str
    cap_w: float


@dataclass
class CapTrace:
    """Every live-cap change of a run, in order, plus the budget it is judged against.

    The load is a step function that changes only at events, so evaluating it after each
    event covers every instant of the run.
    """

    budget: BudgetModel
    initial_caps_w: dict[str, float]
    events: list[CapEvent] = field(default_factory=list)

    def record(self, time_s: float, uuid: str, cap_w: float) -> None:
        self.events.append(CapEvent(time_s, uuid, cap_w))

    def live_caps_at_each_event(self) -> list[tuple[float, dict[str, float]]]:
        """(time, caps) after the initial state and after each event."""
        caps = dict(self.initial_caps_w)
        states = [(0.0, dict(caps))]
        for event in self.events:
            caps[event.uuid] = event.cap_w
            states.append((event.time_s, dict(caps)))
        return states

    def max_load_ratio(self, *, include_initial: bool = False, set_only: bool = False) -> float:
        """Highest PSU/circuit load ratio (live caps + platform) over the trace.

        ``include_initial``: also judge the state before the first change (the rig's stock
        caps, which on some rigs do not fit — that is the problem the tuner exists to fix).
        ``set_only``: judge only states in which every GPU holds a cap the run set (from the
        moment the last GPU was first changed): what the run chose, not the stock caps it
        found and was still parking.
        """
        states = self.live_caps_at_each_event()
        if set_only:
            pending = set(self.initial_caps_w)
            first_all_set = None
            for index, event in enumerate(self.events, start=1):
                pending.discard(event.uuid)
                if not pending:
                    first_all_set = index
                    break
            states = states[first_all_set:] if first_all_set is not None else []
        elif not include_initial:
            states = states[1:]
        if not states:
            return 0.0
        return max(self.budget.max_ratio(caps) for _, caps in states)


# --------------------------------------------------------------------------------------------
# Watchdog
# --------------------------------------------------------------------------------------------


#: The stand-in HW slowdown threshold of a card that reports no absolute thermal limit at all
#: (no slowdown, max operating or target temperature). Units: °C. 83 °C is the default "GPU
#: Target Temperature" ``nvidia-smi -q`` prints on GeForce RTX 30/40 cards, and below the
#: maximum GPU temperature NVIDIA publishes for them (RTX 4090: 90 °C; RTX 3090: 93 °C); with
#: the 5 °C margin the watchdog trips at 78 °C — conservative on purpose for an unknown card.
FALLBACK_SLOWDOWN_C = 83.0

#: Consecutive samples without a temperature reading, under load, before the watchdog stops.
MAX_MISSING_TEMP_SAMPLES = 5


def watchdog_limit_c(thresholds: Thresholds) -> float:
    """The temperature the watchdog treats as a card's HW slowdown threshold. Units: °C.

    NVML's slowdown threshold where the card reports one; boards that report only T.Limit
    offsets (RTX 4090, H100) have none, so: the max operating temperature, else the SW
    thermal target + 5 °C, else :data:`FALLBACK_SLOWDOWN_C`.
    """
    if thresholds.slowdown_c is not None:
        return thresholds.slowdown_c
    if thresholds.max_operating_c is not None:
        return thresholds.max_operating_c
    if thresholds.target_c is not None:
        return thresholds.target_c + 5.0
    return FALLBACK_SLOWDOWN_C


@dataclass(frozen=True)
class Watchdog:
    """Abort a run before the hardware protects itself.

    ``slowdown_c``: per GPU UUID, the HW slowdown threshold (build it with
    :func:`watchdog_limit_c`); a GPU missing here or mapped to ``None`` is judged against
    :data:`FALLBACK_SLOWDOWN_C`, never left unwatched. ``margin_c``: trip when temperature ≥
    threshold − margin (5 °C by default). ``max_missing_temp``: trip when a loaded GPU
    reports no temperature this many samples in a row (a sensor that stopped answering
    cannot say the card is cool). ``draw_trip_ratio``: trip when measured board draw +
    platform on a PSU, or its wall draw on a circuit, reaches this share of the budget.
    """

    slowdown_c: Mapping[str, float | None]
    budget: BudgetModel
    margin_c: float = 5.0
    draw_trip_ratio: float = 0.98
    max_missing_temp: int = MAX_MISSING_TEMP_SAMPLES
    _missing: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def limit_c(self, uuid: str) -> float:
        """The slowdown threshold this GPU is judged against. Units: °C."""
        slowdown = self.slowdown_c.get(uuid)
        return FALLBACK_SLOWDOWN_C if slowdown is None else slowdown

    def check_temperature(self, uuid: str, sample: GpuSample, *, loaded: bool = True) -> None:
        """Raise :class:`SafetyAbort` near the slowdown threshold or after too many samples
        without a reading while ``loaded`` (an idle, parked GPU without one is not counted)."""
        if sample.temp_c is None:
            if loaded:
                self._missing[uuid] = self._missing.get(uuid, 0) + 1
                if self._missing[uuid] >= self.max_missing_temp:
                    raise SafetyAbort(
                        f"GPU {uuid} reported no temperature for {self._missing[uuid]} samples "
                        "in a row under load; stopped and restored the original caps — check "
                        "the card with 'nvidia-smi -q -d TEMPERATURE' (a failing sensor or a "
                        "GPU falling off the bus)"
                    )
            return
        self._missing.pop(uuid, None)
        slowdown = self.limit_c(uuid)
        if sample.temp_c >= slowdown - self.margin_c:
            raise SafetyAbort(
                f"GPU {uuid} reached {sample.temp_c:.1f} °C, within {self.margin_c:g} °C of its "
                f"slowdown threshold {slowdown:g} °C; stopped and restored the original caps — "
                "improve airflow or sweep with fewer GPUs loaded at once"
            )

    def check_draw(self, draw_w: Mapping[str, float]) -> None:
        """``draw_w``: measured board power per GPU UUID."""
        for name, ratio in self.budget.load_ratios(draw_w).items():
            if ratio >= self.draw_trip_ratio:
                raise SafetyAbort(
                    f"measured draw on {name} reached {ratio:.0%} of its budget; stopped and "
                    "restored the original caps — check the rig file's PSU/platform figures"
                )


def throttle_names(samples: Sequence[GpuSample]) -> set[ClockEventReason]:
    """Every heat/electrical slowdown reason seen in ``samples``."""
    seen: set[ClockEventReason] = set()
    for sample in samples:
        seen |= sample.clock_event_reasons & THROTTLE_REASONS
    return seen
