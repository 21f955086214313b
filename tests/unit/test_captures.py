"""Capture parsers against every real capture in the shared fixtures, plus edge cases.

File names in the fixtures folder start with the GPU count (``8x-…``); each parser must find
that many GPUs. Targeted tests pin the quirks SOURCES.md names for particular files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuning.backends.base import ClockEventReason
from tuning.captures.errors import CaptureFormatError
from tuning.captures.folder import CaptureKind, detect_kind
from tuning.captures.lspci import (
    is_lspci_tree,
    parse_dmesg_pcie,
    parse_lspci,
    parse_lspci_tree,
)
from tuning.captures.numa import host_info, parse_lscpu, parse_numactl
from tuning.captures.query_gpu import parse_query_gpu
from tuning.captures.smi_q import parse_smi_q
from tuning.captures.topo import parse_topo
from tuning.captures.values import (
    format_cpu_list,
    gts_to_gen,
    infer_under_load,
    number,
    parse_cpu_list,
)
from tuning.core.pcie import LinkStatus, link_rank

LINK_NAME_RE = re.compile(r"^(NV\d+|PIX|PXB|PHB|NODE|SYS)$")


def _count(path: Path) -> int | None:
    match = re.match(r"^(\d+)x-", path.name)
    return int(match.group(1)) if match else None


def _files(real: Path, kind: str) -> list[Path]:
    files = sorted((real / kind).glob("*.txt"))
    assert files, f"no {kind} captures found"
    return files


def _read(real: Path, relative: str) -> str:
    return (real / relative).read_text(encoding="utf-8")


# ------------------------------------------------------------------ every file of each kind


def test_every_topo_capture_parses_to_a_consistent_matrix(real_fixtures: Path) -> None:
    for path in _files(real_fixtures, "topo"):
        topo = parse_topo(path.read_text(encoding="utf-8"))
        n = _count(path)
        assert len(topo.gpus) == n, path.name
        assert topo.is_symmetric(), path.name
        assert len(topo.links) == n * (n - 1) // 2, path.name  # every pair, once
        assert all(LINK_NAME_RE.match(link.link) for link in topo.links), path.name
        assert all(link.a < link.b for link in topo.links), path.name
        for gpu in topo.gpus:
            if "windows" in path.name:
                continue
            assert gpu.cpu_list, (path.name, gpu.index)
            assert gpu.numa_node is not None, (path.name, gpu.index)
        assert detect_kind(path.read_text(encoding="utf-8")) is CaptureKind.TOPO


def test_every_query_gpu_capture_gives_one_record_per_gpu(real_fixtures: Path) -> None:
    for path in _files(real_fixtures, "query-gpu"):
        text = path.read_text(encoding="utf-8")
        records = parse_query_gpu(text)
        assert len(records) == _count(path), path.name
        for record in records:
            known = [v for k, v in vars(record).items() if k != "position" and v is not None]
            assert len(known) >= 2, (path.name, record)  # thresholds is always set
        assert detect_kind(text) is CaptureKind.QUERY_GPU


def test_every_smi_q_capture_gives_identity_memory_and_power(real_fixtures: Path) -> None:
    for path in _files(real_fixtures, "smi-q"):
        text = path.read_text(encoding="utf-8")
        records = parse_smi_q(text)
        assert len(records) == _count(path), path.name
        for record in records:
            assert record.name, path.name
            assert (record.uuid or "").startswith("GPU-"), path.name
            assert record.pci_bus_id
            assert record.memory_total_mib
            assert record.memory_total_mib > 0
            assert record.power_max_w is not None
            assert record.power_limit_w is not None
            assert record.power_min_w is not None
            assert record.power_min_w <= record.power_max_w
            assert record.clock_event_reasons is not None
            assert record.pcie_gen_current is not None
            assert record.pcie_width_max == 16
        expected = CaptureKind.SMI_Q_XML if "xml" in path.name else CaptureKind.SMI_Q
        assert detect_kind(text) is expected


#: GPUs per lspci capture (their names lead with the CPU count, not the GPU count).
LSPCI_GPUS = {
    "2x-epyc9374f-4x-rtx6000ada-lspci-tv.txt": 4,
    "trpro7965wx-2x-rtx6000ada-lspci-tv.txt": 2,
    "5x-rtx5070-5060ti-dmesg-pcie-bandwidth-limited.txt": 5,
}


def test_every_lspci_capture_is_recognised_and_parsed(real_fixtures: Path) -> None:
    for path in _files(real_fixtures, "lspci"):
        text = path.read_text(encoding="utf-8")
        kind = detect_kind(text)
        if "lspci-tv" in path.name:
            assert kind is CaptureKind.LSPCI_TREE
            assert is_lspci_tree(text)
            assert parse_lspci_tree(text).nvidia_display_devices == LSPCI_GPUS[path.name]
        elif "dmesg" in path.name:
            assert kind is CaptureKind.DMESG_PCIE
            gpus = [limit for limit in parse_dmesg_pcie(text) if limit.is_nvidia_gpu]
            assert len(gpus) == LSPCI_GPUS[path.name]
        else:
            assert kind is CaptureKind.LSPCI
            (device,) = parse_lspci(text)
            assert device.cap_width == 16
            assert device.sta_speed_gts == 2.5


def test_every_numa_capture_parses(real_fixtures: Path) -> None:
    for path in _files(real_fixtures, "numa"):
        text = path.read_text(encoding="utf-8")
        if "numactl" in path.name:
            assert detect_kind(text) is CaptureKind.NUMACTL
            numa = parse_numactl(text)
            assert numa.nodes
            assert all(n.cpus and n.size_mib for n in numa.nodes)
            assert len(numa.distances) == len(numa.nodes)
        else:
            assert detect_kind(text) is CaptureKind.LSCPU
            cpu = parse_lscpu(text)
            assert cpu.model
            assert cpu.physical_cores
            assert cpu.numa_nodes == len(cpu.node_cpus)


def test_the_default_smi_table_is_recognised_not_mistaken(real_fixtures: Path) -> None:
    for path in _files(real_fixtures, "smi-table"):
        assert detect_kind(path.read_text(encoding="utf-8")) is CaptureKind.SMI_TABLE


def test_sources_index_is_not_a_capture(real_fixtures: Path) -> None:
    assert detect_kind(_read(real_fixtures, "SOURCES.md")) is None


# ------------------------------------------------------------------ topo -m, file by file


def test_topo_ansi_escapes_and_tabs(real_fixtures: Path) -> None:
    text = _read(real_fixtures, "topo/5x-rtx5070-4x5060ti-all-phb-ansi.txt")
    assert "\x1b[4m" in text
    topo = parse_topo(text)
    assert topo.devices == ("GPU0", "GPU1", "GPU2", "GPU3", "GPU4")
    assert {link.link for link in topo.links} == {"PHB"}
    assert all(g.cpu_list == tuple(range(24)) and g.numa_node == 0 for g in topo.gpus)
    assert all(g.gpu_numa_id is None for g in topo.gpus)  # "N/A" after the spacer cell


def test_topo_single_gpu_with_ansi_header(real_fixtures: Path) -> None:
    topo = parse_topo(_read(real_fixtures, "topo/1x-rtx4080super-ansi-underline-escapes.txt"))
    assert topo.links == ()
    assert topo.gpus[0].cpu_list == tuple(range(16))


def test_topo_windows_empty_affinity_cells_are_unknown(real_fixtures: Path) -> None:
    topo = parse_topo(
        _read(real_fixtures, "topo/1x-rtx2080super-windows-drv610-empty-affinity.txt")
    )
    (gpu,) = topo.gpus
    assert (gpu.cpu_list, gpu.numa_affinity, gpu.gpu_numa_id) == (None, None, None)


def test_topo_padded_copy_with_empty_cells_right_aligns() -> None:
    text = (
        "        GPU0    CPU Affinity    NUMA Affinity   GPU NUMA ID\nGPU0     X              N/A\n"
    )
    (gpu,) = parse_topo(text).gpus
    assert gpu.cpu_list is None
    assert gpu.numa_affinity is None


def test_topo_without_gpu_numa_id_column(real_fixtures: Path) -> None:
    topo = parse_topo(_read(real_fixtures, "topo/8x-rtx4090-node-sys-no-gpu-numa-id-column.txt"))
    assert topo.affinity_columns == ("CPU Affinity", "NUMA Affinity")
    assert [g.numa_node for g in topo.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert format_cpu_list(topo.gpus[4].cpu_list) == "64-127,192-255"
    assert topo.cell("GPU0", "GPU3") == "NODE"
    assert topo.cell("GPU0", "GPU4") == "SYS"


def test_topo_trimmed_header_six_gpus_pix_pairs(real_fixtures: Path) -> None:
    topo = parse_topo(
        _read(real_fixtures, "topo/6x-rtx-pro-6000-blackwell-2x-epyc9355-pix-pairs-trimmed.txt")
    )
    assert topo.affinity_columns == ("CPU Affinity", "NUMA")
    pix = {(link.a, link.b) for link in topo.links if link.link == "PIX"}
    assert pix == {(0, 1), (2, 3), (4, 5)}
    assert [g.numa_node for g in topo.gpus] == [0, 0, 0, 0, 1, 1]
    assert format_cpu_list(topo.gpus[0].cpu_list) == "0-31,64-95"


def test_topo_nic_rows_and_legend(real_fixtures: Path) -> None:
    topo = parse_topo(_read(real_fixtures, "topo/4x-rtx6000ada-2x-epyc9374f-4nic.txt"))
    assert len(topo.gpus) == 4
    assert len(topo.devices) == 8
    assert dict(topo.nics) == {f"NIC{i}": f"mlx5_{i}" for i in range(4)}
    nic = {(link.gpu, link.nic): link.link for link in topo.nic_links}
    assert nic[(0, "NIC0")] == "NODE"
    assert nic[(0, "NIC2")] == "SYS"
    assert topo.cell("NIC0", "NIC1") == "PIX"
    assert [g.numa_node for g in topo.gpus] == [0, 0, 1, 1]


def test_topo_tab_form_nics_only_near_one_gpu(real_fixtures: Path) -> None:
    topo = parse_topo(_read(real_fixtures, "topo/8x-rtx4090-dual-socket-all-sys-2nic-tabs.txt"))
    assert {link.link for link in topo.links} == {"SYS"}
    phb = {(link.gpu, link.nic) for link in topo.nic_links if link.link == "PHB"}
    assert phb == {(6, "NIC0"), (6, "NIC1")}
    assert format_cpu_list(topo.gpus[0].cpu_list) == "0-55,112-167"
    assert len(topo.gpus[0].cpu_list or ()) == 112


def test_topo_eight_numa_nodes_reversed_and_odd_last_range(real_fixtures: Path) -> None:
    topo = parse_topo(_read(real_fixtures, "topo/8x-rtx4090-8numa-all-sys.txt"))
    assert [g.numa_node for g in topo.gpus] == [3, 2, 1, 0, 7, 6, 5, 4]
    assert format_cpu_list(topo.gpus[4].cpu_list) == "112-127,240-254"
    assert len(topo.gpus[4].cpu_list or ()) == 31


def test_topo_nvlink_nv6_mesh_and_strided_cpus(real_fixtures: Path) -> None:
    topo = parse_topo(
        _read(real_fixtures, "topo/4x-h100-nv6-4nic-numa-3-1-7-5-legend-truncated.txt")
    )
    assert {link.link for link in topo.links} == {"NV6"}
    assert all(link_rank(link.link) == 0 for link in topo.links)
    assert [g.numa_node for g in topo.gpus] == [3, 1, 7, 5]
    assert topo.gpus[0].cpu_list == (6, 14, 22, 30)
    assert {(n.gpu, n.nic) for n in topo.nic_links if n.link == "PIX"} == {
        (i, f"NIC{i}") for i in range(4)
    }
    assert topo.nics == ()  # the legend was cut off in the source


def test_topo_nvlink_bridge_nv4(real_fixtures: Path) -> None:
    topo = parse_topo(_read(real_fixtures, "topo/2x-rtx3090-nvlink-nv4-lxc-cpuset.txt"))
    assert [(link.a, link.b, link.link) for link in topo.links] == [(0, 1, "NV4")]
    assert topo.gpus[1].cpu_list == tuple(range(6))


def test_topo_five_plus_three_switch_split(real_fixtures: Path) -> None:
    topo = parse_topo(
        _read(real_fixtures, "topo/8x-rtx4090-48g-2x-pex8747-before-5+3-split-2nic.txt")
    )
    pix = {(link.a, link.b) for link in topo.links if link.link == "PIX"}
    assert len(pix) == 10 + 3  # C(5,2) in the first group, C(3,2) in the second
    assert {n.link for n in topo.nic_links if n.gpu < 5} == {"SYS"}


def test_topo_without_header_is_refused() -> None:
    with pytest.raises(CaptureFormatError):
        parse_topo("nothing to see here\n")


# ------------------------------------------------------------------ --query-gpu


def test_query_gpu_mixed_default_power_limits_5090(real_fixtures: Path) -> None:
    first, second = parse_query_gpu(
        _read(real_fixtures, "query-gpu/2x-rtx5090-power-limits-mixed-default.txt")
    )
    assert (first.power_limit_w, first.power_default_w, first.power_max_w) == (500, 600, 600)
    assert (second.power_limit_w, second.power_default_w, second.power_max_w) == (500, 575, 600)
    assert first.power_min_w is None  # not queried: unknown, not zero


def test_query_gpu_idle_gen1_l40s_is_recheck_not_degraded(real_fixtures: Path) -> None:
    records = parse_query_gpu(_read(real_fixtures, "query-gpu/8x-l40s-pcie-gen-width-idle.txt"))
    assert [r.index for r in records] == list(range(8))
    assert {r.pcie.status for r in records} == {LinkStatus.RECHECK_UNDER_LOAD}


def test_query_gpu_x4_of_x16_is_degraded(real_fixtures: Path) -> None:
    records = parse_query_gpu(_read(real_fixtures, "query-gpu/2x-rtx5060ti-gen3-x4-idle-gen1.txt"))
    assert all(r.index is None and r.position == i for i, r in enumerate(records))
    assert {r.pcie.status for r in records} == {LinkStatus.DEGRADED}


def test_query_gpu_minimal_three_columns(real_fixtures: Path) -> None:
    records = parse_query_gpu(
        _read(real_fixtures, "query-gpu/2x-rtx3090-x870e-gen1-x8-minimal.txt")
    )
    assert [(r.pcie_gen_current, r.pcie_gen_max, r.pcie_width_current) for r in records] == [
        (1, 4, 8),
        (1, 4, 8),
    ]
    assert records[0].pcie_width_max is None  # not captured: never assumed to be 16


def test_query_gpu_all_fields_under_load(real_fixtures: Path) -> None:
    (h100,) = parse_query_gpu(
        _read(real_fixtures, "query-gpu/1x-h100-80gb-hbm3-vm-drv590-allfields-load.txt")
    )
    assert (h100.power_min_w, h100.power_max_w, h100.memory_total_mib) == (200, 700, 81559)
    assert h100.pcie_gen_host_max is None
    assert h100.pcie_gen_max == 5
    assert h100.under_load is True
    assert h100.pcie.status is LinkStatus.OK
    assert h100.clock_event_reasons == frozenset()
    info = h100.to_gpu_info()
    assert info.pci_bus_id == "00000000:00:09.0"
    assert info.persistence_mode is True


def test_query_gpu_nounits_noheader_needs_columns() -> None:
    text = "0, NVIDIA RTX A6000, 300.00, [Not Supported], Enabled, 0x0000000000000024, P2, 98\n"
    columns = [
        "index",
        "gpu_name",
        "power.limit",
        "power.min_limit",
        "persistence_mode",
        "clocks_throttle_reasons.active",
        "pstate",
        "utilization.gpu",
    ]
    with pytest.raises(CaptureFormatError):
        parse_query_gpu(text)
    (record,) = parse_query_gpu(text, columns=columns)
    assert record.name == "NVIDIA RTX A6000"
    assert record.power_limit_w == 300.0
    assert record.power_min_w is None
    assert record.persistence_mode is True
    assert record.clock_event_reasons == {
        ClockEventReason.SW_POWER_CAP,
        ClockEventReason.SW_THERMAL_SLOWDOWN,
    }
    assert record.under_load is True


def test_query_gpu_short_row_is_refused() -> None:
    with pytest.raises(CaptureFormatError):
        parse_query_gpu("index, name\n0\n")


# ------------------------------------------------------------------ -q text and XML


def test_smi_q_tlimit_relative_thresholds_are_not_temperatures(real_fixtures: Path) -> None:
    records = parse_smi_q(_read(real_fixtures, "smi-q/8x-rtx4090-drv550.txt"))
    gpu = records[0]
    # "GPU Slowdown T.Limit Temp : -2 C" is a margin, not a slowdown temperature.
    assert gpu.thresholds.slowdown_c is None
    assert gpu.thresholds.shutdown_c is None
    assert gpu.thresholds.target_c == 84
    assert (gpu.power_limit_w, gpu.power_default_w, gpu.power_max_w) == (450, 450, 450)
    assert gpu.clock_event_reasons == {ClockEventReason.GPU_IDLE}
    assert gpu.pstate == "P8"
    assert gpu.under_load is False
    assert {r.pcie.status for r in records} == {LinkStatus.RECHECK_UNDER_LOAD}
    assert [r.pci_bus_id[9:11] for r in records if r.pci_bus_id] == [
        "01", "25", "41", "61", "81", "A1", "C1", "E1",
    ]  # fmt: skip


def test_smi_q_newest_layout_4080(real_fixtures: Path) -> None:
    (gpu,) = parse_smi_q(_read(real_fixtures, "smi-q/1x-rtx4080super-drv595-load.txt"))
    assert (gpu.power_min_w, gpu.power_default_w, gpu.power_max_w) == (150, 320, 400)
    assert gpu.power_draw_w == 84.03  # "Average Power Draw", not the instantaneous reading
    assert (gpu.pcie_gen_max, gpu.pcie_gen_device_max, gpu.pcie_gen_host_max) == (4, 4, 5)
    assert gpu.thresholds.slowdown_c == 96
    assert gpu.thresholds.shutdown_c == 101
    assert gpu.thresholds.max_operating_c == 90
    assert gpu.thresholds.target_c == 84
    assert gpu.clock_event_reasons == frozenset()  # the Counters section is not a state


def test_smi_q_h100_vm_under_load(real_fixtures: Path) -> None:
    (gpu,) = parse_smi_q(_read(real_fixtures, "smi-q/1x-h100-80gb-hbm3-vm-drv590-load.txt"))
    assert gpu.power_draw_w == 629.45
    assert gpu.power_limit_w == 700
    assert gpu.pcie_gen_host_max is None
    assert gpu.utilization_pct == 100
    assert gpu.under_load is True
    assert gpu.pcie.status is LinkStatus.OK


def test_smi_q_h100_idle_at_p0_is_idle(real_fixtures: Path) -> None:
    records = parse_smi_q(_read(real_fixtures, "smi-q/8x-h100-sxm-drv565.txt"))
    assert {r.pstate for r in records} == {"P0"}
    assert {r.under_load for r in records} == {False}  # 0 % and GPU idle, whatever the P-state
    assert {r.power_max_w for r in records} == {700}


def test_smi_q_xml_old_throttle_naming_p100(real_fixtures: Path) -> None:
    (gpu,) = parse_smi_q(_read(real_fixtures, "smi-q/1x-tesla-p100-pcie-drv510-q-x-xml.txt"))
    assert gpu.name == "Tesla P100-PCIE-16GB"
    assert gpu.memory_total_mib == 16384
    assert gpu.clock_event_reasons == {ClockEventReason.GPU_IDLE}
    assert (gpu.power_min_w, gpu.power_limit_w, gpu.power_enforced_limit_w) == (125, 250, 250)
    assert gpu.thresholds.slowdown_c == 82
    assert gpu.thresholds.shutdown_c == 85


def test_smi_q_xml_event_naming_4090_on_gen3_host(real_fixtures: Path) -> None:
    (gpu,) = parse_smi_q(_read(real_fixtures, "smi-q/1x-rtx4090-drv535-q-x-xml.txt"))
    assert (gpu.power_min_w, gpu.power_max_w) == (10, 600)
    assert (gpu.pcie_gen_current, gpu.pcie_gen_max, gpu.pcie_gen_device_max) == (1, 3, 4)
    # the line-wrapped "Not Active" element must not read as active
    assert gpu.clock_event_reasons == {ClockEventReason.GPU_IDLE}
    assert gpu.pcie.status is LinkStatus.RECHECK_UNDER_LOAD


def test_smi_q_without_gpu_is_refused() -> None:
    with pytest.raises(CaptureFormatError):
        parse_smi_q("==============NVSMI LOG==============\nAttached GPUs : 0\n")


# ------------------------------------------------------------------ lspci, dmesg, NUMA


def test_lspci_grep_gen1_x8_is_degraded(real_fixtures: Path) -> None:
    (device,) = parse_lspci(
        _read(real_fixtures, "lspci/rtx3090-x870e-01-00.0-gen1-x8-downgraded-grep.txt")
    )
    assert device.bus_id is None
    assert (device.gen_current, device.gen_max, device.sta_width, device.cap_width) == (1, 4, 8, 16)
    assert device.speed_downgraded
    assert device.width_downgraded
    assert device.pcie.status is LinkStatus.DEGRADED


def test_lspci_vvv_block(real_fixtures: Path) -> None:
    (device,) = parse_lspci(_read(real_fixtures, "lspci/2x-epyc9374f-rtx6000ada-01-00.0-vvv.txt"))
    assert device.bus_id == "0000:01:00.0"
    assert device.is_nvidia_gpu
    assert device.slot_number == 3
    assert device.numa_node == 0
    assert device.aspm_control == "Disabled"
    assert device.aspm_support == "L1"
    assert device.speed_downgraded
    assert not device.width_downgraded
    assert device.pcie.status is LinkStatus.RECHECK_UNDER_LOAD  # idle 2.5 GT/s, x16 intact


def test_lspci_without_numa_line(real_fixtures: Path) -> None:
    (device,) = parse_lspci(_read(real_fixtures, "lspci/trpro7965wx-rtx6000ada-c1-00.0-vvv.txt"))
    assert device.bus_id == "0000:c1:00.0"
    assert device.numa_node is None
    assert device.physical_slot is None


def test_dmesg_bandwidth_limited_gpus_are_degraded(real_fixtures: Path) -> None:
    limits = parse_dmesg_pcie(
        _read(real_fixtures, "lspci/5x-rtx5070-5060ti-dmesg-pcie-bandwidth-limited.txt")
    )
    gpus = {limit.bus_id: limit for limit in limits if limit.is_nvidia_gpu}
    assert sorted(gpus) == [f"0000:{b}:00.0" for b in ("04", "09", "0a", "0b", "0c")]
    assert all(limit.pcie.degraded for limit in gpus.values())
    slot = gpus["0000:09:00.0"]
    assert (slot.limited_gen, slot.limited_width, slot.capable_gen, slot.capable_width) == (
        3,
        4,
        5,
        16,
    )
    assert slot.limiting_port == "0000:00:03.1"
    assert not any(limit.is_nvidia_gpu for limit in limits if limit.bus_id == "0000:02:00.0")


def test_numactl_and_lscpu_make_host_info(real_fixtures: Path) -> None:
    numa = parse_numactl(_read(real_fixtures, "numa/2x-epyc9374f-numactl-H.txt"))
    cpu = parse_lscpu(_read(real_fixtures, "numa/2x-epyc9374f-lscpu.txt"))
    assert numa.distances == ((10, 32), (32, 10))
    assert numa.node_cpus()[1] == tuple(range(32, 64))
    assert dict(cpu.node_cpus)[0] == tuple(range(32))
    host = host_info(cpu, numa)
    assert host.cpu_model == "AMD EPYC 9374F 32-Core Processor"
    assert host.cpu_cores == 64
    assert host.numa_nodes == 2
    assert host.memory_gib == pytest.approx((193129 + 193477) / 1024, abs=0.1)
    tr = host_info(parse_lscpu(_read(real_fixtures, "numa/trpro7965wx-lscpu.txt")), None)
    assert (tr.cpu_cores, tr.numa_nodes, tr.memory_gib) == (24, 1, None)


# ------------------------------------------------------------------ cell helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-55,112-167", (*range(56), *range(112, 168))),
        ("6,14,22,30", (6, 14, 22, 30)),
        ("112-127,240-254", (*range(112, 128), *range(240, 255))),
        ("0 1 2", (0, 1, 2)),
        ("", None),
        ("N/A", None),
        ("zero", None),
    ],
)
def test_parse_cpu_list(text: str, expected: tuple[int, ...] | None) -> None:
    assert parse_cpu_list(text) == expected


@given(st.sets(st.integers(min_value=0, max_value=512), min_size=1, max_size=64))
def test_cpu_list_format_round_trips(cpus: set[int]) -> None:
    assert parse_cpu_list(format_cpu_list(cpus)) == tuple(sorted(cpus))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("350.00 W", 350.0),
        ("24576 MiB", 24576.0),
        ("16x", 16.0),
        ("[N/A]", None),
        ("[Not Supported]", None),
        ("[Requested functionality has been deprecated]", None),
        ("Enabled", None),
    ],
)
def test_number_cells(cell: str, expected: float | None) -> None:
    assert number(cell) == expected


def test_gts_to_gen_table() -> None:
    assert [gts_to_gen(s) for s in (2.5, 5.0, 8.0, 16.0, 32.0, 64.0, 3.0)] == [
        1, 2, 3, 4, 5, 6, None,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("util", "pstate", "idle", "expected"),
    [
        (0.0, "P8", None, False),
        (100.0, "P0", None, True),
        (7.0, "P2", None, True),
        (5.0, "P8", None, False),
        (None, "P8", None, False),
        (None, "P0", None, None),  # an H100 idles at P0: not evidence of load
        (None, "P0", True, False),
        (None, None, None, None),
    ],
)
def test_infer_under_load(
    util: float | None, pstate: str | None, idle: bool | None, expected: bool | None
) -> None:
    assert infer_under_load(util, pstate, idle) is expected
