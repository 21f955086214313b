"""The one sustained-load sampler: the sweep's heat-soak and ``rigforge loop``'s stock/tuned runs.

Under a sustained load both read every GPU at the same instant once per sample period, keep
its peak temperature and temperature trace, and watch it throttle; each then adds what only it
needs (the sweep: the watchdog and a judging window; the loop: energy and circuit draw).

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tuning.backends.base import THROTTLE_REASONS, Clock, Gpu, GpuSample


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
