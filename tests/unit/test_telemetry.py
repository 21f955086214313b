"""Probe windows, the cap trace and the watchdog."""

from __future__ import annotations

import math

import pytest

from tuning.backends.base import ClockEventReason, GpuSample
from tuning.budget import BudgetModel
from tuning.core.power import Psu
from tuning.core.rig import Thresholds
from tuning.errors import SafetyAbort
from tuning.telemetry import (
    FALLBACK_SLOWDOWN_C,
    CapTrace,
    ProbeWindow,
    SteadyStatePolicy,
    Watchdog,
    fit_first_order,
    watchdog_limit_c,
)


def sample(t: float, power: float, temp: float = 60.0, reasons=frozenset()) -> GpuSample:
    return GpuSample(t, power, 300.0, temp, 1800.0, 100.0, reasons)


def test_a_flat_probe_is_steady_after_settle_plus_window() -> None:
    window = ProbeWindow(cap_w=250, started_s=0.0, policy=SteadyStatePolicy(settle_s=2, window_s=5))
    steady_at = None
    for t in range(1, 30):
        window.add(sample(t, 250.0), tokens_total=30.0 * t)
        if window.steady():
            steady_at = t
            break
    assert steady_at == 7
    result = window.result(now_s=7)
    assert result.throughput_tps == pytest.approx(30.0)
    assert result.power_w == pytest.approx(250.0)


def test_a_drifting_probe_is_not_steady_until_it_flattens() -> None:
    window = ProbeWindow(cap_w=250, started_s=0.0, policy=SteadyStatePolicy(settle_s=2, window_s=5))
    for t in range(1, 12):
        window.add(sample(t, 150.0 + 10.0 * t), tokens_total=30.0 * t)
        assert not window.steady()


def test_throttle_reasons_mark_the_probe() -> None:
    window = ProbeWindow(cap_w=250, started_s=0.0)
    window.add(sample(1, 250, reasons=frozenset({ClockEventReason.SW_POWER_CAP})), 1)
    assert not window.throttled
    window.add(sample(2, 250, reasons=frozenset({ClockEventReason.SW_THERMAL_SLOWDOWN})), 2)
    assert window.throttled


def test_window_shorter_than_the_power_average_is_refused() -> None:
    with pytest.raises(ValueError, match="1 s power average"):
        SteadyStatePolicy(window_s=2)


BUDGET = BudgetModel(
    psus=(Psu(name="p", rating_w=1000, circuit="c", platform_w=100),), gpu_psu={"a": "p", "b": "p"}
)


def test_trace_max_ratio_covers_every_change_but_not_the_stock_state() -> None:
    trace = CapTrace(BUDGET, {"a": 450, "b": 450})
    trace.record(1.0, "a", 100)
    trace.record(2.0, "b", 100)
    trace.record(3.0, "a", 400)
    # after the first change: a at 100, b still at its stock 450, platform 100
    assert trace.max_load_ratio() == pytest.approx((100 + 100 + 450) / 1000)
    assert trace.max_load_ratio(include_initial=True) == pytest.approx(1.0)
    # what the run set: from (a 100, b 100) on; the worst is a 400 + b 100 + platform 100
    assert trace.max_load_ratio(set_only=True) == pytest.approx((400 + 100 + 100) / 1000)


def test_trace_set_only_is_zero_until_every_gpu_was_set() -> None:
    trace = CapTrace(BUDGET, {"a": 450, "b": 450})
    trace.record(1.0, "a", 100)
    assert trace.max_load_ratio(set_only=True) == 0.0


def test_watchdog_trips_within_five_degrees_of_slowdown() -> None:
    dog = Watchdog(slowdown_c={"a": 95.0}, budget=BUDGET)
    dog.check_temperature("a", sample(1, 200, temp=89.0))
    with pytest.raises(SafetyAbort, match="within 5 °C"):
        dog.check_temperature("a", sample(1, 200, temp=90.0))


def test_watchdog_trips_when_measured_draw_nears_a_budget() -> None:
    dog = Watchdog(slowdown_c={}, budget=BUDGET)
    dog.check_draw({"a": 400, "b": 400})
    with pytest.raises(SafetyAbort, match="psu:p"):
        dog.check_draw({"a": 440, "b": 440})


def test_first_order_fit_predicts_the_asymptote_from_the_first_minute() -> None:
    # a heat-sink from 40 °C towards 83 °C with τ = 90 s, read as whole degrees for 60 s
    times = [float(t) for t in range(0, 61, 2)]
    temps = [float(round(83.0 - 43.0 * math.exp(-t / 90.0))) for t in times]
    fit = fit_first_order(times, temps)
    assert fit is not None
    asymptote_c, tau_s = fit
    assert abs(asymptote_c - 83.0) < 2.5
    assert 60.0 < tau_s < 130.0
    assert max(temps) < 75.0, "the prediction must see far beyond the samples"


def test_first_order_fit_needs_a_transient_to_fit() -> None:
    assert fit_first_order([0.0, 1.0, 2.0], [40.0, 41.0, 42.0]) is None


# -- defect 2: cards that report no absolute slowdown threshold are still watched -----------


@pytest.mark.parametrize(
    ("thresholds", "limit_c"),
    [
        (Thresholds(slowdown_c=92, max_operating_c=90, target_c=83), 92),
        # RTX 4090 / H100: slowdown only as a T.Limit offset (None), max operating known
        (Thresholds(max_operating_c=90, target_c=83), 90),
        (Thresholds(target_c=80), 85),
        (Thresholds(), FALLBACK_SLOWDOWN_C),
    ],
)
def test_watchdog_limit_falls_back_when_slowdown_is_unknown(
    thresholds: Thresholds, limit_c: float
) -> None:
    assert watchdog_limit_c(thresholds) == limit_c


def test_a_gpu_without_any_threshold_is_watched_at_the_fallback() -> None:
    dog = Watchdog(slowdown_c={"a": None}, budget=BUDGET)
    dog.check_temperature("a", sample(1, 200, temp=FALLBACK_SLOWDOWN_C - 5.5))
    with pytest.raises(SafetyAbort, match=f"slowdown threshold {FALLBACK_SLOWDOWN_C:g}"):
        dog.check_temperature("a", sample(2, 200, temp=FALLBACK_SLOWDOWN_C - 5.0))
    with pytest.raises(SafetyAbort):
        dog.check_temperature("not-listed", sample(3, 200, temp=FALLBACK_SLOWDOWN_C))


def no_temp(t: float) -> GpuSample:
    return GpuSample(t, 200.0, 300.0, None, 1800.0, 100.0, frozenset())


def test_watchdog_stops_when_a_loaded_gpu_reports_no_temperature() -> None:
    dog = Watchdog(slowdown_c={"a": 90.0}, budget=BUDGET, max_missing_temp=3)
    for t in range(10):  # parked and idle: not counted
        dog.check_temperature("a", no_temp(t), loaded=False)
    dog.check_temperature("a", no_temp(10))
    dog.check_temperature("a", no_temp(11))
    dog.check_temperature("a", sample(12, 200, temp=60.0))  # a reading resets the count
    dog.check_temperature("a", no_temp(13))
    dog.check_temperature("a", no_temp(14))
    with pytest.raises(SafetyAbort, match="no temperature for 3 samples"):
        dog.check_temperature("a", no_temp(15))


def test_sweep_watches_cards_that_report_only_a_target_temperature(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuning.apply.actuator import open_tuning_rig
    from tuning.apply.session import SafetySession
    from tuning.sweep import Sweep, SweepConfig
    from tuning.workloads import SimWorkload

    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    rig, actuator = open_tuning_rig("sim:4x3090")
    for gpu in rig.gpus:
        # what NVML gives for a board reporting T.Limit offsets: a target temperature only
        monkeypatch.setattr(gpu, "thresholds", lambda: Thresholds(target_c=40.0))
    config = SweepConfig(heat_soak_s=60.0)
    with (
        pytest.raises(SafetyAbort, match="slowdown threshold 45"),
        SafetySession(actuator, log=lambda m: None) as session,
    ):
        Sweep(rig, actuator, SimWorkload(rig, "decode"), config, session=session).run()
