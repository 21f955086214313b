"""CPU topology from real ``lscpu -p``/``lscpu -e`` captures, sysfs cache lists and rig files.

Expected values come from outside the parsers: the ``lscpu`` summary util-linux prints for
the same EPYC 7451 box (``NUMA node0 CPU(s): 0-5,48-53`` …, 2 sockets × 24 cores × 2 threads,
8 MB L3 per CCX of 3 cores), AMD's published core counts, and hand-worked layouts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tuning.backends import RIGS_DIR, open_rig
from tuning.backends.cpu_spec import RigCpuSpec, cpu_topology_of
from tuning.backends.sim_config import load_rig_spec, read_yaml
from tuning.captures.cpu import (
    cpu_topology,
    parse_lscpu_e,
    parse_lscpu_p,
    parse_shared_cpu_lists,
)
from tuning.captures.errors import CaptureFormatError
from tuning.captures.numa import parse_numactl
from tuning.captures.values import format_cpu_list
from tuning.core.cpu import CpuRecord, build_topology
from tuning.errors import ConfigError


def _read(real: Path, name: str) -> str:
    return (real / name).read_text(encoding="utf-8")


def test_epyc7451_lscpu_p_matches_its_lscpu_summary(real_fixtures: Path) -> None:
    """util-linux's lscpu-x86_64-epyc_7451 summary: 96 CPUs, 2 sockets × 24 cores, SMT 2,
    8 NUMA nodes ``0-5,48-53`` … ``42-47,90-95``; Zen 1 has one 8 MB L3 per 4-core CCX, 3 of
    them enabled on a 24-core part → 16 LLC domains of 3 cores."""
    topo = cpu_topology(
        parse_lscpu_p(_read(real_fixtures, "cpu/2x-epyc7451-8numa-lscpu-p.txt")), source="t"
    )
    assert len(topo.cpus) == 96
    assert len(topo.cores) == 48
    assert topo.sockets == (0, 1)
    assert topo.threads_per_core == 2
    assert all(core.cpus == (core.cpus[0], core.cpus[0] + 48) for core in topo.cores)
    summary = [
        "0-5,48-53", "6-11,54-59", "12-17,60-65", "18-23,66-71",
        "24-29,72-77", "30-35,78-83", "36-41,84-89", "42-47,90-95",
    ]  # fmt: skip
    assert [format_cpu_list(n.cpus) for n in topo.nodes] == summary
    assert [n.sockets for n in topo.nodes] == [(0,)] * 4 + [(1,)] * 4
    assert len(topo.llcs) == 16
    assert all(len(d.cores) == 3 for d in topo.llcs)
    assert format_cpu_list(topo.llcs[1].cpus) == "3-5,51-53"
    assert all(len(n.llcs) == 2 for n in topo.nodes)


def test_physical_core_ids_restart_per_socket_and_still_group_right(real_fixtures: Path) -> None:
    """``lscpu -p`` with the kernel's core_id: socket 1 reuses ids 0–30, so a core is
    (socket, core); the grouping must equal the logical-id capture's."""
    logical = cpu_topology(
        parse_lscpu_p(_read(real_fixtures, "cpu/2x-epyc7451-8numa-lscpu-p.txt")), source="a"
    )
    physical = cpu_topology(
        parse_lscpu_p(_read(real_fixtures, "cpu/2x-epyc7451-8numa-lscpu-p-physical-core-ids.txt")),
        source="b",
    )
    assert [c.cpus for c in physical.cores] == [c.cpus for c in logical.cores]
    assert [d.cpus for d in physical.llcs] == [d.cpus for d in logical.llcs]
    assert physical.core_of(24).key == (1, 0)
    assert physical.core_of(0).key == (0, 0)


def test_xeon_e5410_without_l3_and_numa_across_sockets(real_fixtures: Path) -> None:
    """A Core 2 era dual Xeon: no L3, so the L2 (shared by a core pair: CPUs 0+2, 1+3, 4+6,
    5+7 by the L2 column) is the LLC; one NUMA node holds both sockets; SMT off. The
    ``lscpu -e`` of the same box (its ONLINE column in Russian) says the same."""
    from_p = cpu_topology(
        parse_lscpu_p(_read(real_fixtures, "cpu/2x-xeon-e5410-lscpu-p-no-l3.txt")), source="p"
    )
    from_e = cpu_topology(
        parse_lscpu_e(_read(real_fixtures, "cpu/2x-xeon-e5410-lscpu-e-localized.txt")),
        source="e",
    )
    assert from_p == from_e
    assert [d.cpus for d in from_p.llcs] == [(0, 2), (1, 3), (4, 6), (5, 7)]
    assert from_p.threads_per_core == 1
    assert [(n.node, n.sockets) for n in from_p.nodes] == [(0, (0, 1))]


def test_numactl_fills_nodes_and_sysfs_lists_set_llcs(real_fixtures: Path) -> None:
    """Records without a node (an empty Node column) take numactl's: the 2× EPYC 9375F
    capture has node 0 = 0-31, node 1 = 32-63. The L3 lists group 8 CPUs each (hand-made)."""
    recs = [CpuRecord(cpu=c, core=c, socket=c // 32) for c in range(64)]
    numa = parse_numactl(_read(real_fixtures, "numa/2x-epyc9375f-numactl-H.txt"))
    lists = "\n".join(
        f"/sys/devices/system/cpu/cpu{c}/cache/index3/shared_cpu_list:{c // 8 * 8}-{c // 8 * 8 + 7}"
        for c in range(64)
    )
    topo = cpu_topology(recs, source="t", numa=numa, llc_of=parse_shared_cpu_lists(lists))
    assert [format_cpu_list(n.cpus) for n in topo.nodes] == ["0-31", "32-63"]
    assert len(topo.llcs) == 8
    assert topo.llcs[7].cpus == tuple(range(56, 64))


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (
            parse_shared_cpu_lists,
            "/sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list:0-2000000000",
        ),
        (parse_lscpu_p, "# CPU,Core,Socket,Node\n2000000000,0,0,0\n"),
        (parse_lscpu_e, "CPU NODE SOCKET CORE\n99999999999999999999 0 0 0\n"),
        (parse_lscpu_p, "0,0,0,0\n"),
        (parse_lscpu_p, "# CPU,Core,Socket,Node\n0,0\n"),
    ],
)
def test_bad_or_huge_cpu_lists_are_refused_without_expanding(parser, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CaptureFormatError):
        parser(text)


def test_a_core_whose_siblings_disagree_on_the_node_is_refused() -> None:
    recs = [CpuRecord(0, 0, 0, node=0, llc=0), CpuRecord(1, 0, 0, node=1, llc=0)]
    with pytest.raises(ConfigError, match=r"core 0 of socket 0 .*spans NUMA nodes"):
        build_topology(recs, source="x")


def test_reference_rig_is_a_5995wx_with_8_ccds() -> None:
    """AMD: 64 cores, 128 threads, 256 MB L3 = 8 CCDs × 32 MB. Linux numbering: core k is
    CPUs k and k+64; CCD 0 = cores 0–7 = CPUs 0-7,64-71."""
    topo = open_rig("sim:reference").cpu_topology()
    assert topo is not None
    assert len(topo.cores) == 64
    assert len(topo.cpus) == 128
    assert len(topo.nodes) == 1
    assert len(topo.llcs) == 8
    assert sum(d.size_mib or 0 for d in topo.llcs) == 256
    assert format_cpu_list(topo.llcs[0].cpus) == "0-7,64-71"
    assert topo.core_of(70).cpus == (6, 70)
    assert topo.governors == ("performance", "powersave")


def test_nps4_variant_splits_two_ccds_per_node() -> None:
    """NPS4 on 8 CCDs: node n = CCDs 2n, 2n+1 = cores 16n…16n+15 → node 2 is 32-47,96-111."""
    topo = open_rig("sim:reference-nps4").cpu_topology()
    assert topo is not None
    assert [format_cpu_list(n.cpus) for n in topo.nodes] == [
        "0-15,64-79", "16-31,80-95", "32-47,96-111", "48-63,112-127",
    ]  # fmt: skip
    assert all(len(n.llcs) == 2 for n in topo.nodes)


def test_every_rig_cpu_section_agrees_with_its_gpus_local_cpus() -> None:
    """Each shipped rig's GPUs carry a ``cpus:`` list written by hand; the cpu: layout must
    give the same list for the GPU's node (the loader checks it; this proves it ran)."""
    for path in sorted(RIGS_DIR.glob("*.yaml")):
        rig = open_rig(f"sim:{path.stem}")
        topo = rig.cpu_topology()
        assert topo is not None, path.name
        for gpu in rig.snapshot().gpus:
            assert gpu.numa_node is not None, path.name
            assert topo.node(gpu.numa_node).cpus == gpu.cpu_list, (path.name, gpu.bus_id)


def _reference_data() -> dict:  # type: ignore[type-arg]
    return copy.deepcopy(read_yaml(RIGS_DIR / "reference.yaml"))


def test_rig_cpu_section_mismatches_name_the_yaml_path() -> None:
    data = _reference_data()
    data["gpus"][2]["cpus"] = "0-63"
    data["host"]["cpu_cores"] = 32
    data["cpu"]["numa_nodes_per_socket"] = 3
    with pytest.raises(ConfigError) as info:
        load_rig_spec(data, "rigs/x.yaml")
    assert "rigs/x.yaml: cpu.numa_nodes_per_socket: 3 nodes cannot split 8" in str(info.value)
    data["cpu"]["numa_nodes_per_socket"] = 1
    with pytest.raises(ConfigError) as info:
        load_rig_spec(data, "rigs/x.yaml")
    message = str(info.value)
    assert "rigs/x.yaml: gpus[2].cpus: '0-63' is not NUMA node 0's CPUs '0-127'" in message
    assert "rigs/x.yaml: host.cpu_cores: 32 cores, but cpu: describes 64" in message


def test_rig_cpu_spec_numbering_on_a_dual_socket_part() -> None:
    """2 sockets × 2 LLCs × 2 cores, SMT 2 (hand-worked): thread 0 of cores 0–7 are CPUs
    0–7, siblings 8–15; socket 1 = cores 4–7 = CPUs 4-7,12-15; LLC 3 = CPUs 6,7,14,15."""
    spec = RigCpuSpec(
        model="x", sockets=2, llcs_per_socket=2, cores_per_llc=2, llc_mib=8, sources={"a": "b"}
    )
    topo = cpu_topology_of(spec)
    assert [format_cpu_list(n.cpus) for n in topo.nodes] == ["0-3,8-11", "4-7,12-15"]
    assert topo.llcs[3].cpus == (6, 7, 14, 15)
