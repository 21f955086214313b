"""The power model (tuning.model.power): hand-worked DVFS examples and the published sweeps."""

from __future__ import annotations

import pytest

from tests.bench import BENCH, bench_module
from tuning.model.power import (
    PowerParams,
    at_clock,
    dynamic_scale,
    load_power_params,
    natural_power_w,
    under_cap,
)
from tuning.model.step import StepTime


def _params(**changes: float) -> PowerParams:
    base: dict[str, object] = {
        "static_w": 100.0,
        "memory_w": 60.0,
        "clock_w": 50.0,
        "core_w": 100.0,
        "stall_activity": 0.5,
        "v_min": 0.5,
        "mem_sat_frac": 0.5,
        "mem_sat_exp": 20.0,
        "f_min": 0.1,
        "source": {},
    }
    base.update(changes)
    return PowerParams.model_validate(base)


def test_dynamic_scale_is_f_times_v_squared() -> None:
    """v_min 0.5 at f = 0.5: v = 0.5 + 0.5·0.5 = 0.75, g = 0.5 · 0.75² = 0.28125."""
    assert dynamic_scale(_params(), 0.5) == pytest.approx(0.28125)
    assert dynamic_scale(_params(), 1.0) == pytest.approx(1.0)


def test_memory_bound_card_busy_all_step_draws_every_term() -> None:
    """Memory-bound step, no host time, full clock: static 100 + clock tree 50 + DRAM 60·1
    + SMs stalled 100·0.5 = 260 W."""
    step = StepTime(memory_s=0.01, compute_s=0.0, interconnect_s=0.0, host_s=0.0, tokens=1.0)
    assert natural_power_w(_params(), step) == pytest.approx(260.0)


def test_waiting_stage_draws_less() -> None:
    """Same step plus 10 ms host time, one stage of four: busy = 0.25 · 10/20 = 0.125, so
    100 + 50 + 0.125 · (60 + 50) = 163.75 W."""
    step = StepTime(memory_s=0.01, compute_s=0.0, interconnect_s=0.0, host_s=0.01, tokens=1.0)
    point = at_clock(_params(), step, 1.0, busy_scale=0.25)
    assert point.busy_frac == pytest.approx(0.125)
    assert point.power_w == pytest.approx(163.75)


def test_memory_time_flat_above_the_corner_and_1_over_f_below() -> None:
    """mem_sat_frac 0.5, a sharp corner (n = 20): at f = 0.8 the memory time is ~unchanged;
    at f = 0.25 it doubles (0.5 / 0.25)."""
    step = StepTime(memory_s=0.01, compute_s=0.0, interconnect_s=0.0, host_s=0.0, tokens=1.0)
    assert at_clock(_params(), step, 0.8).step_s == pytest.approx(0.01, rel=1e-3)
    assert at_clock(_params(), step, 0.25).step_s == pytest.approx(0.02, rel=1e-3)


def test_dvfs_clock_under_a_cap_by_hand() -> None:
    """Compute-bound step (10 ms of math), no clock tree, v flat (v_min 1, so g(f) = f):
    P(f) = 100 + 200·f. A 200 W cap fits f = 0.5 exactly: 1050 MHz of 2100 (bin 70 of 15
    MHz), 20 ms a step, 50 tok/s. A 199 W cap drops one bin to 1035 MHz."""
    p = _params(clock_w=0.0, core_w=200.0, v_min=1.0, stall_activity=0.0)
    step = StepTime(memory_s=0.0, compute_s=0.01, interconnect_s=0.0, host_s=0.0, tokens=1.0)
    point = under_cap(p, step, 200.0, 2100.0)
    assert point.clock_frac * 2100.0 == pytest.approx(1050.0)
    assert point.power_w == pytest.approx(200.0)
    assert point.tokens_per_s == pytest.approx(50.0)
    assert under_cap(p, step, 199.0, 2100.0).clock_frac * 2100.0 == pytest.approx(1035.0)
    # Above the natural draw (300 W) the cap never binds; below the floor the card sits at f_min.
    assert under_cap(p, step, 400.0, 2100.0).tokens_per_s == pytest.approx(100.0)
    assert under_cap(p, step, 50.0, 2100.0).clock_frac == pytest.approx(210.0 / 2100.0)


def test_every_power_field_is_sourced() -> None:
    """Each number in power.yaml carries a citation or 'estimate' (the project's rule)."""
    fields = set(PowerParams.model_fields) - {"source"}
    for name, params in load_power_params().items():
        assert set(params.source) == fields, name
        for field, text in params.source.items():
            assert text.strip(), (name, field)


def test_both_3090_sweeps_from_one_parameter_set() -> None:
    """jeanfbrito's dense decode is 20.6/32.0 = 0.64 at 200 W; llmgarage's six-card MoE pipeline
    keeps 68.3/72.6 = 0.94 at 200 W, 62.6/72.6 = 0.86 at 150 W and 12.1/72.6 = 0.17 at 100 W.
    One rtx3090 entry, two workloads, both as the simulator runs them (the dense model one
    replica on one capped card, from its curve file; the pipeline six capped cards paced by
    the slowest stage); each within the issue's 5 pp."""
    fidelity_caps = bench_module("fidelity_caps")
    fidelity_curves = bench_module("fidelity_curves")
    dense = fidelity_curves.load_curve(
        BENCH / "curves" / "rtx3090-qwen36-27b-dense-llamacpp-jeanfbrito.yaml"
    )
    at_200 = fidelity_curves.run_cap(dense, 200.0).tokens_per_s
    at_350 = fidelity_curves.run_cap(dense, 350.0).tokens_per_s
    assert at_200 / at_350 == pytest.approx(20.6 / 32.0, abs=0.05)
    assert fidelity_caps._pipeline(200.0) == pytest.approx(68.3 / 72.6, abs=0.05)
    assert fidelity_caps._pipeline(150.0) == pytest.approx(62.6 / 72.6, abs=0.05)
    assert fidelity_caps._pipeline(100.0) == pytest.approx(12.1 / 72.6, abs=0.05)


def test_power_table_gives_the_hand_worked_dvfs_clock() -> None:
    """The same hand example as a table (what a simulator reads per clock bin): P(f) = 100 +
    200·f, so the highest bin under a 200 W cap is 1050 MHz, at 50 tok/s; the top bin is the
    natural draw, 300 W at 2100 MHz and 100 tok/s."""
    from tuning.model.power import power_table

    p = _params(clock_w=0.0, core_w=200.0, v_min=1.0, stall_activity=0.0)
    step = StepTime(memory_s=0.0, compute_s=0.01, interconnect_s=0.0, host_s=0.0, tokens=1.0)
    table = power_table(p, step, 2100.0)
    fits = int((table.power_w <= 200.0 + 1e-9).sum()) - 1
    assert table.clock_mhz[fits] == pytest.approx(1050.0)
    assert table.tokens_per_s[fits] == pytest.approx(50.0)
    assert table.power_w[-1] == pytest.approx(300.0)
    assert table.clock_mhz[-1] == pytest.approx(2100.0)
    assert table.tokens_per_s[-1] == pytest.approx(100.0)


def test_busy_share_from_the_step_time_model() -> None:
    """A 6-stage round of 12 ms of kernels (2 ms per card) and 3 ms of host: the step-time model
    says each card works 2/15 of the round; at full clock the card is then 2/15 busy."""
    from tuning.model.power import busy_scale_of

    step = StepTime(memory_s=0.012, compute_s=0.0, interconnect_s=0.0, host_s=0.003, tokens=1.0)
    scale = busy_scale_of(step, 2.0 / 15.0)
    assert scale == pytest.approx(1.0 / 6.0)
    assert at_clock(_params(), step, 1.0, busy_scale=scale).busy_frac == pytest.approx(2.0 / 15.0)
