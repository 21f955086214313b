"""The one sustained-load sampler: what counts as a throttle event, on a scripted GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from tuning.backends.base import Clock, ClockEventReason, Gpu, GpuSample
from tuning.sustained import SustainedSampler

CAP = ClockEventReason.SW_POWER_CAP
SW_THERMAL = ClockEventReason.SW_THERMAL_SLOWDOWN
BRAKE = ClockEventReason.HW_POWER_BRAKE_SLOWDOWN
HW = ClockEventReason.HW_SLOWDOWN


#: one scripted reading: temperature (°C, None: no sensor) and the active clock-event reasons
Reading = tuple[float | None, frozenset[ClockEventReason]]


class StepClock(Clock):
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.t_s = 100.0
        self.slept_s: list[float] = []

    def now_s(self) -> float:
        return self.t_s

    def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.t_s += seconds


class ScriptedGpu:
    """Reports the given (temperature, reasons) per sample, in order (the hardware boundary)."""

    def __init__(
        self, uuid: str, script: Sequence[tuple[float | None, frozenset[ClockEventReason]]]
    ):
        self.uuid = uuid
        self.script = list(script)

    def sample(self, timestamp_s: float) -> GpuSample:
        temp_c, reasons = self.script.pop(0)
        return GpuSample(timestamp_s, 300.0, 300.0, temp_c, 1800.0, 100.0, reasons)


def sampled(gpus: list[ScriptedGpu], duration_s: float, period_s: float = 1.0) -> SustainedSampler:
    clock = StepClock()
    sampler = SustainedSampler(
        cast(list[Gpu], gpus),
        clock,
        caps_w={g.uuid: 250.0 for g in gpus},
        duration_s=duration_s,
        period_s=period_s,
    )
    while sampler.running:
        sampler.step()
    return sampler


def test_an_event_is_an_onset_and_the_power_cap_is_not_a_throttle() -> None:
    """Hand-worked: eight 1 s samples of one GPU —

    1 nothing, 2 sw_power_cap (the cap binding: not a throttle), 3 sw_thermal (onset: event 1),
    4 sw_thermal + sw_power_cap (still throttled: no new event), 5 sw_power_cap (recovered),
    6 hw_power_brake (onset: event 2), 7 hw_slowdown (a different reason, still throttled: no
    new event), 8 nothing. Throttled samples: 3, 4, 6, 7 → 4; events at t = 3 s and 6 s → 2;
    reasons seen: sw_thermal_slowdown, hw_power_brake_slowdown, hw_slowdown.
    """
    none: frozenset[ClockEventReason] = frozenset()
    script = [
        (60.0, none),
        (70.0, frozenset({CAP})),
        (84.0, frozenset({SW_THERMAL})),
        (85.0, frozenset({SW_THERMAL, CAP})),
        (83.0, frozenset({CAP})),
        (81.0, frozenset({BRAKE})),
        (82.0, frozenset({HW})),
        (80.0, none),
    ]
    sampler = sampled([ScriptedGpu("GPU-a", script)], duration_s=8.0)
    seen = sampler.gpu["GPU-a"]
    assert seen.throttle_samples == 4
    assert [(e.time_s - 100.0, e.reasons, e.temp_c) for e in seen.events] == [
        (3.0, ("sw_thermal_slowdown",), 84.0),
        (6.0, ("hw_power_brake_slowdown",), 81.0),
    ]
    assert all(e.cap_w == 250.0 for e in seen.events)
    assert seen.throttle_reasons == {
        "sw_thermal_slowdown",
        "hw_power_brake_slowdown",
        "hw_slowdown",
    }
    assert seen.peak_temp_c == 85.0
    assert seen.temp_trace[0] == (1.0, 60.0)
    assert seen.temp_trace[-1] == (8.0, 80.0)


def test_a_gpu_throttled_from_the_first_sample_is_one_event_and_each_gpu_counts_alone() -> None:
    """Two GPUs, three samples: A throttled in all three (one onset at the first sample);
    B only under its cap and with no temperature sensor (no event, no peak, no trace)."""
    hot = [(88.0, frozenset({SW_THERMAL}))] * 3
    capped: list[Reading] = [(None, frozenset({CAP}))] * 3
    sampler = sampled([ScriptedGpu("GPU-a", hot), ScriptedGpu("GPU-b", capped)], duration_s=3.0)
    assert [(e.uuid, e.time_s - 100.0) for e in sampler.events] == [("GPU-a", 1.0)]
    assert sampler.gpu["GPU-a"].throttle_samples == 3
    b = sampler.gpu["GPU-b"]
    assert (b.throttle_samples, b.events, b.peak_temp_c, b.temp_trace) == (0, [], None, [])


def test_the_last_period_is_cut_to_end_at_the_duration() -> None:
    """2.5 s at a 1 s period: samples at 1, 2 and 2.5 s (sleeps 1, 1, 0.5)."""
    none: frozenset[ClockEventReason] = frozenset()
    sampler = sampled([ScriptedGpu("GPU-a", [(50.0, none)] * 3)], duration_s=2.5)
    assert cast(StepClock, sampler.clock).slept_s == [1.0, 1.0, 0.5]
    assert [t for t, _ in sampler.gpu["GPU-a"].temp_trace] == [1.0, 2.0, 2.5]
