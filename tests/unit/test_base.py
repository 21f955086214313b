"""The shared rig model: clock-event decoding, link verdicts, constraints, identities."""

from __future__ import annotations

import pytest

from tuning.backends.base import (
    THROTTLE_REASONS,
    ClockEventReason,
    GpuSample,
    PowerConstraints,
    decode_clock_event_reasons,
    encode_clock_event_reasons,
)
from tuning.core.bus import normalize_bus_id
from tuning.core.pcie import LinkStatus, PcieLink, TopologyLink, link_rank, nvlink_count
from tuning.core.power import Circuit, Psu
from tuning.core.rig import GpuInfo, RigSnapshot
from tuning.errors import OutOfRange, UnknownGpu


def test_clock_event_mask_decodes_to_nvml_names() -> None:
    # 0x24 = SwPowerCap | SwThermalSlowdown, as nvidia-smi prints clocks_event_reasons.active
    assert decode_clock_event_reasons(0x24) == {
        ClockEventReason.SW_POWER_CAP,
        ClockEventReason.SW_THERMAL_SLOWDOWN,
    }
    assert decode_clock_event_reasons(0) == frozenset()


def test_clock_event_unknown_bits_are_ignored() -> None:
    assert decode_clock_event_reasons(0x1 | 0x10000) == {ClockEventReason.GPU_IDLE}


def test_clock_event_encode_is_inverse_of_decode() -> None:
    for mask in (0x0, 0x1, 0x4, 0x8 | 0x40, 0x1FF):
        assert encode_clock_event_reasons(decode_clock_event_reasons(mask)) == mask


def test_power_cap_alone_is_not_throttling_but_thermal_slowdown_is() -> None:
    capped = GpuSample(0.0, 250.0, 250.0, 70.0, 1500.0, 100.0, frozenset({"sw_power_cap"}))
    hot = GpuSample(0.0, 250.0, 250.0, 88.0, 1200.0, 100.0, frozenset({"sw_thermal_slowdown"}))
    assert not capped.throttling
    assert hot.throttling
    assert ClockEventReason.SW_POWER_CAP not in THROTTLE_REASONS


@pytest.mark.parametrize(
    ("link", "expected_order"),
    [("NV4", 0), ("PIX", 1), ("PXB", 2), ("PHB", 3), ("NODE", 4), ("SYS", 5), ("???", 6)],
)
def test_link_rank_puts_nvlink_first_and_cross_socket_last(link: str, expected_order: int) -> None:
    assert link_rank(link) == expected_order


def test_nvlink_count_reads_bonded_links() -> None:
    assert nvlink_count("NV12") == 12
    assert nvlink_count("PHB") == 0


def test_width_below_max_is_degraded_even_at_idle() -> None:
    link = PcieLink(gen_current=1, gen_max=4, width_current=8, width_max=16, under_load=False)
    assert link.status is LinkStatus.DEGRADED
    assert link.degraded


def test_gen_below_max_at_idle_is_only_a_recheck() -> None:
    link = PcieLink(gen_current=1, gen_max=4, width_current=16, width_max=16, under_load=False)
    assert link.status is LinkStatus.RECHECK_UNDER_LOAD
    assert not link.degraded


def test_gen_below_max_under_load_is_degraded() -> None:
    link = PcieLink(gen_current=3, gen_max=4, width_current=16, width_max=16, under_load=True)
    assert link.status is LinkStatus.DEGRADED


def test_full_link_is_ok_and_missing_fields_unknown() -> None:
    assert PcieLink(4, 4, 16, 16, True).status is LinkStatus.OK
    assert PcieLink(gen_current=4).status is LinkStatus.UNKNOWN


def test_power_constraints_refuse_values_outside_range() -> None:
    constraints = PowerConstraints(min_w=100.0, max_w=350.0, default_w=350.0)
    constraints.check(100.0)
    constraints.check(350.0)
    with pytest.raises(OutOfRange, match="100–350 W"):
        constraints.check(351.0)
    assert constraints.clamp(20.0) == 100.0
    assert constraints.clamp(400.0) == 350.0


def test_circuit_continuous_budget_is_80_percent_of_breaker() -> None:
    circuit = Circuit(name="c1", voltage_v=120.0, breaker_a=15.0)
    assert circuit.rating_w == 1800.0
    assert circuit.budget_w == pytest.approx(1440.0)


def test_psu_wall_draw_includes_efficiency_loss() -> None:
    assert Psu(name="a", rating_w=1600, circuit="c1", efficiency=0.9).wall_w(900.0) == 1000.0


@pytest.mark.parametrize(
    "bus_id", ["00000000:41:00.0", "0000:41:00.0", "41:00.0", "00000000:41:00.0 ".upper()]
)
def test_bus_ids_normalise_across_nvml_and_lspci_forms(bus_id: str) -> None:
    assert normalize_bus_id(bus_id) == "0000:41:00.0"


def _snapshot() -> RigSnapshot:
    return RigSnapshot(
        name="two",
        gpus=(
            GpuInfo(index=0, uuid="GPU-a", pci_bus_id="00000000:01:00.0", memory_total_mib=24576),
            GpuInfo(index=1, uuid="GPU-b", pci_bus_id="00000000:41:00.0", memory_total_mib=49152),
        ),
        topology=(TopologyLink(0, 1, "PHB"),),
    )


def test_snapshot_finds_gpus_by_index_uuid_or_any_bus_id_form() -> None:
    rig = _snapshot()
    assert rig.gpu(1).uuid == "GPU-b"
    assert rig.gpu("GPU-a").index == 0
    assert rig.gpu("41:00.0").uuid == "GPU-b"
    with pytest.raises(UnknownGpu, match="GPU-a, GPU-b"):
        rig.gpu("GPU-zzz")


def test_snapshot_link_is_symmetric_and_unknown_is_none() -> None:
    rig = _snapshot()
    assert rig.link(0, 1) == rig.link(1, 0) == "PHB"
    assert rig.link(0, 0) == "X"
    assert rig.link(0, 5) is None


def test_fingerprint_changes_when_a_gpu_is_swapped_not_when_reordered() -> None:
    rig = _snapshot()
    reordered = RigSnapshot(name="two", gpus=tuple(reversed(rig.gpus)))
    swapped = RigSnapshot(
        name="two",
        gpus=(rig.gpus[0], GpuInfo(index=1, uuid="GPU-c", pci_bus_id="00000000:41:00.0")),
    )
    assert rig.fingerprint() == reordered.fingerprint()
    assert rig.fingerprint() != swapped.fingerprint()
    assert rig.fingerprint().startswith("sha256:")


def test_snapshot_json_keeps_unknowns_as_null() -> None:
    document = _snapshot().to_json()
    gpu = document["gpus"][0]
    assert gpu["power"]["limit_w"] is None
    assert gpu["pcie"]["degraded"] is False
    assert document["topology"] == [{"a": 0, "b": 1, "link": "PHB"}]
    assert document["memory_total_mib"] == 24576 + 49152
