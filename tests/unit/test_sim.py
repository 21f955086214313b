"""Behaviour of the simulated GPU: DVFS under a cap, calibration, averaging, noise, heat."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tuning.backends import open_rig
from tuning.backends.base import THROTTLE_REASONS, ClockEventReason
from tuning.backends.sim import SimRig
from tuning.core.pcie import LinkStatus
from tuning.errors import ConfigError, OutOfRange

R = ClockEventReason

#: jeanfbrito.github.io "rtx-3090-power-limit-sweet-spot": RTX 3090, 27B dense, llama.cpp
#: decode 32.0 / 33.0 / 31.7 / 20.6 / 8.3 tok/s at 350 / 300 / 250 / 200 / 150 W.
PUBLISHED_3090_DECODE_TPS = {350: 32.0, 300: 33.0, 250: 31.7, 200: 20.6, 150: 8.3}


def one_gpu_rig(
    preset: str = "rtx3090", *, ambient_c: float = 25.0, seed: int = 0, **gpu: Any
) -> SimRig:
    data = {
        "name": f"bench-{preset}",
        "seed": seed,
        "rack": {"ambient_c": ambient_c},
        "gpus": [{"preset": preset, "slot": 1, "bus_id": "00000000:01:00.0", **gpu}],
    }
    return SimRig.from_dict(data, source="inline")


def steady_decode(rig: SimRig, cap_w: float, workload: str = "decode") -> tuple[float, float]:
    """(tokens/s measured as Δtokens/Δt, averaged power) after settling at ``cap_w``."""
    gpu = rig.gpus[0]
    rig.set_workload(gpu.uuid, workload)
    gpu.set_power_limit_w(cap_w)
    rig.clock.sleep(2.0)
    t0, tok0 = rig.clock.now_s(), rig.tokens_total(gpu.uuid)
    rig.clock.sleep(10.0)
    tps = (rig.tokens_total(gpu.uuid) - tok0) / (rig.clock.now_s() - t0)
    power = gpu.power_draw_w()
    assert power is not None
    return tps, power


def test_cap_above_natural_draw_never_binds() -> None:
    rig = one_gpu_rig()
    gpu = rig.gpus[0]
    tps_350, power_350 = steady_decode(rig, 350)
    # club-3090 docs/HARDWARE.md: an uncapped 3090 decoding a 27B dense model draws 334 W.
    assert power_350 == pytest.approx(334.0, abs=10.0)
    assert R.SW_POWER_CAP not in gpu.clock_event_reasons()
    tps_345, _ = steady_decode(rig, 345)
    assert tps_345 == pytest.approx(tps_350, rel=0.01)
    assert gpu.sm_clock_mhz() == gpu.max_sm_clock_mhz()
    assert gpu.clock_event_reasons() == frozenset()


def test_cap_below_natural_draw_lowers_clock_power_and_throughput() -> None:
    rig = one_gpu_rig()
    gpu = rig.gpus[0]
    tps_250, power_250 = steady_decode(rig, 250)
    clock_250 = gpu.sm_clock_mhz()
    assert R.SW_POWER_CAP in gpu.clock_event_reasons()
    tps_200, power_200 = steady_decode(rig, 200)
    assert power_200 < power_250 - 40
    assert power_200 == pytest.approx(200, abs=6)
    assert tps_200 < tps_250
    assert gpu.sm_clock_mhz() < clock_250
    assert R.SW_POWER_CAP in gpu.clock_event_reasons()


def test_rtx3090_decode_matches_published_sweep_within_5pp() -> None:
    rig = one_gpu_rig()
    measured = {cap: steady_decode(rig, cap)[0] for cap in PUBLISHED_3090_DECODE_TPS}
    assert measured[350] == pytest.approx(PUBLISHED_3090_DECODE_TPS[350], rel=0.1)
    for cap, published in PUBLISHED_3090_DECODE_TPS.items():
        rel_sim = measured[cap] / measured[350]
        rel_pub = published / PUBLISHED_3090_DECODE_TPS[350]
        assert abs(rel_sim - rel_pub) <= 0.05, (cap, rel_sim, rel_pub)


def test_prefill_knee_matches_club_3090() -> None:
    """club-3090 docs/HARDWARE.md, 3090 prefill-heavy: 906.79 tok/s at a 250 W cap against
    1051.07 at the 370 W stock cap (0.863); within the issue's 5 pp."""
    rig = one_gpu_rig()
    uncapped, _ = steady_decode(rig, 350, "prefill")
    rel = steady_decode(rig, 250, "prefill")[0] / uncapped
    assert rel == pytest.approx(906.79 / 1051.07, abs=0.05)


def test_batched_decode_knee_matches_club_3090() -> None:
    """club-3090 docs/HARDWARE.md, 3090 decode-concurrent N=4: 31.74 tok/s at 290 W against
    34.13 at the 370 W stock cap (0.930, "same knee as decode-single"); within 5 pp."""
    rig = one_gpu_rig()
    uncapped, _ = steady_decode(rig, 350, "batched")
    rel = steady_decode(rig, 290, "batched")[0] / uncapped
    assert rel == pytest.approx(31.74 / 34.13, abs=0.05)


def test_power_draw_is_a_one_second_average() -> None:
    rig = one_gpu_rig(power_limit_w=350)
    gpu = rig.gpus[0]
    idle_w = gpu.power_draw_w()
    assert idle_w is not None
    assert idle_w < 50
    rig.set_workload(gpu.uuid, "decode")
    rig.clock.sleep(0.3)
    assert gpu.instant_power_w() > 300, "the card itself jumps at once"
    partial = gpu.power_draw_w()
    assert partial is not None
    assert idle_w + 50 < partial < 250
    rig.clock.sleep(0.8)
    settled = gpu.power_draw_w()
    assert settled == pytest.approx(gpu.instant_power_w(), abs=6)


def trace(rig: SimRig, steps: int = 40, read: bool = True) -> list[tuple[float, ...]]:
    for gpu in rig.gpus:
        rig.set_workload(gpu.uuid, "batched")
    rows = []
    for _ in range(steps):
        rig.clock.sleep(0.5)
        if read:
            rows.append(
                tuple(
                    v
                    for gpu in rig.gpus
                    for v in (gpu.power_draw_w() or 0.0, rig.throughput_tps(gpu.uuid))
                )
            )
    return rows


def test_same_seed_same_trace_different_seed_different_noise() -> None:
    a = trace(open_rig("sim:reference", seed=3))
    b = trace(open_rig("sim:reference", seed=3))
    c = trace(open_rig("sim:reference", seed=4))
    assert a == b
    assert a != c
    # Noise, not a different model: the traces differ by a few watts / percent only.
    assert max(abs(x - y) for x, y in zip(a[-1][::2], c[-1][::2], strict=True)) < 10


def test_open_rig_seed_overrides_the_file_seed() -> None:
    assert open_rig("sim:reference").seed == 0
    assert open_rig("sim:reference", seed=11).seed == 11


def test_reading_does_not_disturb_the_model() -> None:
    quiet, noisy = open_rig("sim:reference", seed=1), open_rig("sim:reference", seed=1)
    trace(quiet, read=False)
    trace(noisy, read=True)
    for q, n in zip(quiet.gpus, noisy.gpus, strict=True):
        assert quiet.tokens_total(q.uuid) == noisy.tokens_total(n.uuid)
        assert q.power_draw_w() == n.power_draw_w()


def test_clock_is_virtual(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sleep(_: float) -> None:
        raise AssertionError("the simulator must never call time.sleep")

    monkeypatch.setattr(time, "sleep", no_sleep)
    rig = one_gpu_rig()
    rig.set_workload(rig.gpus[0].uuid, "decode")
    rig.clock.sleep(60.0)
    rig.clock.sleep(0.05)
    assert rig.clock.now_s() == pytest.approx(60.05)
    with pytest.raises(ValueError, match="cannot sleep"):
        rig.clock.sleep(-1.0)


def test_configurable_step() -> None:
    rig = SimRig.from_dict(
        {
            "name": "coarse",
            "step_s": 0.5,
            "gpus": [{"preset": "l40s", "slot": 1, "bus_id": "0000:c1:00.0"}],
        }
    )
    assert rig.step_s == 0.5
    assert rig.gpus[0].pci_bus_id == "00000000:C1:00.0"
    rig.set_workload(rig.gpus[0].uuid, "decode")
    rig.clock.sleep(1.0)
    assert rig.gpus[0].power_draw_w() == pytest.approx(rig.gpus[0].instant_power_w(), abs=6)


def test_out_of_range_limit_is_refused_and_nothing_changes() -> None:
    gpu = one_gpu_rig().gpus[0]
    before = gpu.power_limit_w()
    for bad in (99.0, 350.5, 1000.0):
        with pytest.raises(OutOfRange, match="100–350 W"):
            gpu.set_power_limit_w(bad)
        assert gpu.power_limit_w() == before
    assert gpu.set_power_limit_w(275.5) == 275.5
    assert gpu.enforced_power_limit_w() == 275.5
    assert gpu.set_power_limit_w(100) == 100


def test_idle_card_downtrains_link_and_reports_idle() -> None:
    rig = one_gpu_rig()
    gpu = rig.gpus[0]
    rig.clock.sleep(2.0)
    link = gpu.pcie_link()
    assert (link.gen_current, link.under_load) == (1, False)
    assert link.status is LinkStatus.RECHECK_UNDER_LOAD
    assert gpu.clock_event_reasons() == frozenset({R.GPU_IDLE})
    assert gpu.utilization_pct() == 0
    assert rig.throughput_tps(gpu.uuid) == 0
    rig.set_workload(gpu.uuid, "prefill")
    rig.clock.sleep(1.0)
    assert gpu.pcie_link().status is LinkStatus.OK
    assert gpu.utilization_pct() == 100


def test_unknown_workload_is_a_config_error() -> None:
    rig = one_gpu_rig()
    with pytest.raises(ConfigError, match="decode, prefill, batched"):
        rig.set_workload(rig.gpus[0].uuid, "training")
    rig.set_workload(rig.gpus[0].uuid, "batched")
    assert rig.workload(rig.gpus[0].uuid) == "batched"
    rig.set_workload(rig.gpus[0].uuid, None)
    assert rig.workload(rig.gpus[0].uuid) is None


def test_sw_thermal_slowdown_holds_the_target_in_a_hot_room() -> None:
    cool = one_gpu_rig(ambient_c=25.0)
    rig = one_gpu_rig(ambient_c=45.0)
    gpu = rig.gpus[0]
    for r in (cool, rig):
        r.set_workload(r.gpus[0].uuid, "batched")
        r.clock.sleep(12 * 60)
    assert not cool.gpus[0].clock_event_reasons() & THROTTLE_REASONS
    target = gpu.thresholds().target_c
    assert target is not None
    temp = gpu.temperature_c()
    assert temp is not None
    assert target <= temp <= target + 3
    assert R.SW_THERMAL_SLOWDOWN in gpu.clock_event_reasons()
    assert gpu.instant_power_w() < cool.gpus[0].instant_power_w() - 20, "heat limits it"
    assert not gpu.clock_event_reasons() & {R.HW_SLOWDOWN, R.HW_THERMAL_SLOWDOWN}


def test_hw_slowdown_at_the_slowdown_threshold_cuts_clocks() -> None:
    rig = one_gpu_rig()
    gpu = rig.gpus[0]
    rig.set_workload(gpu.uuid, "decode")
    rig.clock.sleep(1.0)
    full_clock = gpu.sm_clock_mhz()
    slowdown = gpu.thresholds().slowdown_c
    assert slowdown is not None
    assert full_clock is not None
    rig.reset_thermals(temp_c=slowdown + 1)
    rig.clock.sleep(0.1)
    reasons = gpu.clock_event_reasons()
    assert {R.HW_SLOWDOWN, R.HW_THERMAL_SLOWDOWN} <= reasons
    clock = gpu.sm_clock_mhz()
    assert clock is not None
    assert clock <= full_clock / 2
    rig.clock.sleep(300)
    assert R.HW_SLOWDOWN not in gpu.clock_event_reasons(), "released once cooled"


def test_tokens_and_energy_integrate_what_the_card_does() -> None:
    rig = one_gpu_rig()
    gpu = rig.gpus[0]
    rig.set_workload(gpu.uuid, "decode")
    rig.clock.sleep(2.0)
    e0, tok0 = gpu.total_energy_j(), rig.tokens_total(gpu.uuid)
    assert e0 is not None
    rig.clock.sleep(10.0)
    e1 = gpu.total_energy_j()
    assert e1 is not None
    assert (e1 - e0) / 10.0 == pytest.approx(gpu.instant_power_w(), rel=0.01)
    tps = (rig.tokens_total(gpu.uuid) - tok0) / 10.0
    assert tps == pytest.approx(rig.peak_tps[gpu.uuid]["decode"], rel=0.01)
    assert abs(rig.throughput_tps(gpu.uuid) / tps - 1) < 0.05


def test_psu_and_circuit_draw_add_up() -> None:
    rig = open_rig("sim:reference")
    for gpu in rig.gpus:
        rig.set_workload(gpu.uuid, "decode")
    rig.clock.sleep(5.0)
    for psu in rig.psus():
        members = [g for g in rig.gpus if rig.psu_of(g.uuid) == psu.name]
        expected = sum(g.instant_power_w() for g in members) + psu.platform_w
        assert rig.psu_draw_w(psu.name) == pytest.approx(expected)
    for circuit in rig.circuits():
        expected = sum(
            rig.psu_draw_w(p.name) / p.efficiency for p in rig.psus() if p.circuit == circuit.name
        )
        assert rig.circuit_draw_w(circuit.name) == pytest.approx(expected)
    with pytest.raises(ConfigError, match="psu-a"):
        rig.psu_draw_w("psu-z")
