"""The CPU plan over every shipped rig, on a real EPYC capture, and its refusals.

Expected CPU sets are worked by hand in each docstring from the layout (core k = CPUs k and
k + cores; CCDs of 8 cores on the 5995WX) and the sizing rules in tuning/cpuplan/engines.yaml
(vllm: 1 API + 1 engine + 1 per GPU; llama.cpp: 1 API + 4 engine; 2 housekeeping cores per
socket).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning.backends import RIGS_DIR, open_rig
from tuning.captures.cpu import cpu_topology, parse_lscpu_p
from tuning.captures.values import format_cpu_list
from tuning.core.cpu import CpuTopology
from tuning.cpuplan import CpuPlanRefused, CpuUnit, load_rules, plan_cpus
from tuning.cpuplan.rules import load_rules as load_rules_file
from tuning.errors import ConfigError

RIG_FILES = sorted(RIGS_DIR.glob("*.yaml"))


def _rig(name: str) -> tuple[CpuTopology, dict[str, int]]:
    rig = open_rig(f"sim:{name}")
    topo = rig.cpu_topology()
    assert topo is not None
    gpus = {g.pci_bus_id or g.uuid: g.numa_node for g in rig.snapshot().gpus}
    assert None not in gpus.values()
    return topo, {k: v for k, v in gpus.items() if v is not None}


def _units_per_node(gpu_nodes: dict[str, int]) -> list[CpuUnit]:
    """GPUs of each node in pairs (a vLLM TP2 unit each), a lone GPU left runs llama.cpp."""
    units: list[CpuUnit] = []
    by_node: dict[int, list[str]] = {}
    for gpu, node in gpu_nodes.items():
        by_node.setdefault(node, []).append(gpu)
    for node, gpus in sorted(by_node.items()):
        for i in range(0, len(gpus) - 1, 2):
            units.append(CpuUnit(f"n{node}-tp2-{i}", "vllm", (gpus[i], gpus[i + 1])))
        if len(gpus) % 2:
            units.append(CpuUnit(f"n{node}-solo", "llama.cpp", (gpus[-1],)))
    return units


@pytest.mark.parametrize("path", RIG_FILES, ids=[p.stem for p in RIG_FILES])
def test_every_rig_plans_disjoint_whole_cores_on_the_gpus_node(path: Path) -> None:
    topo, gpu_nodes = _rig(path.stem)
    units = _units_per_node(gpu_nodes)
    plan = plan_cpus(topo, gpu_nodes, units)
    rules = load_rules()
    seen = set(plan.housekeeping_cpus)
    assert plan.housekeeping_cpus, path.name
    assert topo.whole_cores(plan.housekeeping_cpus)
    for unit, share in zip(units, plan.units, strict=True):
        cpus = set(share.cpus)
        assert not cpus & seen, (path.name, share.name)  # disjoint from housekeeping and others
        seen |= cpus
        local = {c for g in unit.gpus for c in topo.node(gpu_nodes[g]).cpus}
        assert cpus <= local, (path.name, share.name)
        assert topo.whole_cores(cpus), (path.name, share.name)
        need = rules.engines[unit.engine].cores_for(len(unit.gpus))
        assert len(cpus) == need * topo.threads_per_core, (path.name, share.name)
    for irq in plan.irqs:
        owner = next(s for s in plan.units if irq.gpu in s.gpus)
        assert irq.cpus == owner.cpus
    assert seen | set(plan.spare_cpus) == set(topo.cpus)


def test_reference_example_from_the_module_docstring() -> None:
    """sim:reference (NPS1, 8 CCDs × 8 cores). Housekeeping: cores 0–1 = CPUs 0-1,64-65.
    b (llama.cpp, 5 cores) goes first and gets unused CCD 1: cores 8–12 → 8-12,72-76;
    a (vllm on 2 GPUs, 4 cores) gets unused CCD 2: cores 16–19 → 16-19,80-83."""
    topo, gpu_nodes = _rig("reference")
    bus = list(gpu_nodes)
    plan = plan_cpus(
        topo,
        gpu_nodes,
        [CpuUnit("a", "vllm", (bus[0], bus[1])), CpuUnit("b", "llama.cpp", (bus[3],))],
    )
    assert format_cpu_list(plan.housekeeping_cpus) == "0-1,64-65"
    assert plan.unit("b").cpu_list == "8-12,72-76"
    assert plan.unit("b").threads == 4  # llama.cpp --threads
    assert plan.unit("a").cpu_list == "16-19,80-83"
    assert plan.unit("a").llcs == (2,)
    irq = {i.gpu: i.cpus for i in plan.irqs}
    assert format_cpu_list(irq[bus[0]]) == "16-19,80-83"
    assert irq[bus[2]] == plan.housekeeping_cpus  # no unit uses GPU 2


def test_nps4_units_stay_on_their_node() -> None:
    """NPS4: node 2 = CPUs 32-47,96-111 (CCDs 4–5). A llama.cpp unit on the node-2 GPU
    (41:00.0) takes CCD 4's first 5 cores: 32-36,96-100; housekeeping sits on node 0 (the
    node with the fewest GPUs, 1 GPU like node 2, lower id): 0-1,64-65."""
    topo, gpu_nodes = _rig("reference-nps4")
    plan = plan_cpus(topo, gpu_nodes, [CpuUnit("m", "llama.cpp", ("00000000:41:00.0",))])
    assert plan.unit("m").cpu_list == "32-36,96-100"
    assert format_cpu_list(plan.housekeeping_cpus) == "0-1,64-65"


def test_real_epyc7451_capture_splits_a_unit_over_two_ccx(real_fixtures: Path) -> None:
    """util-linux's dual EPYC 7451: node 1 = cores 6–11 in two 3-core CCXs (6–8, 9–11),
    siblings +48. vllm on 2 GPUs needs 4 cores: CCX 6–8 whole, then 1 core from the unused
    CCX 9–11 → CPUs 6-9,54-57. Housekeeping: socket 0 on node 0 (no GPU): 0-1,48-49; socket 1
    on node 4: 24-25,72-73."""
    text = (real_fixtures / "cpu/2x-epyc7451-8numa-lscpu-p.txt").read_text(encoding="utf-8")
    topo = cpu_topology(parse_lscpu_p(text), source="epyc7451")
    plan = plan_cpus(topo, {"g0": 1, "g1": 1}, [CpuUnit("m", "vllm", ("g0", "g1"))])
    assert plan.unit("m").cpu_list == "6-9,54-57"
    assert format_cpu_list(plan.housekeeping_cpus) == "0-1,24-25,48-49,72-73"


def test_pins_are_honoured_and_others_avoid_the_pinned_cores() -> None:
    """Pin a to CPUs 8-15 (thread 0 of CCD 1 only): its cores 8–15 are then off limits, so
    llama.cpp b (5 cores) gets CCD 2: 16-20,80-84, not the free siblings 72-79."""
    topo, gpu_nodes = _rig("reference")
    bus = list(gpu_nodes)
    plan = plan_cpus(
        topo,
        gpu_nodes,
        [
            CpuUnit("a", "vllm", (bus[0],), pinned_cpus=tuple(range(8, 16))),
            CpuUnit("b", "llama.cpp", (bus[1],)),
        ],
    )
    assert plan.unit("a").cpu_list == "8-15"
    assert plan.unit("a").pinned
    assert plan.unit("b").cpu_list == "16-20,80-84"


def test_a_pin_to_cpus_the_host_lacks_is_refused_naming_model_and_cpus() -> None:
    topo, gpu_nodes = _rig("4x3090")  # 48 CPUs: 0-47
    with pytest.raises(CpuPlanRefused) as info:
        plan_cpus(
            topo,
            gpu_nodes,
            [CpuUnit("qwen", "vllm", (next(iter(gpu_nodes)),), pinned_cpus=(46, 47, 48, 49))],
        )
    assert "model 'qwen': cpus: pins CPUs 48-49 the host lacks (it has 0-47)" in str(info.value)


def test_overlapping_pins_are_refused_naming_both_models() -> None:
    topo, gpu_nodes = _rig("4x3090")
    bus = list(gpu_nodes)
    with pytest.raises(CpuPlanRefused) as info:
        plan_cpus(
            topo,
            gpu_nodes,
            [
                CpuUnit("qwen", "vllm", (bus[0],), pinned_cpus=(4, 5, 6, 28, 29, 30)),
                CpuUnit("llama", "llama.cpp", (bus[1],), pinned_cpus=(6, 7, 30, 31)),
            ],
        )
    assert "models 'qwen' and 'llama' both pin CPUs 6,30" in str(info.value)


def test_more_units_than_cores_is_refused_naming_the_model_and_free_cpus() -> None:
    """4x3090: 24 cores in 8 CCXs of 3 (CCX k = cores 3k…3k+2, siblings +24); housekeeping
    takes cores 0–1, leaving 22. Five llama.cpp units of 5 cores need 25. By the rules:
    m0 = CCX 1 whole + 2 cores of unused CCX 2 (3–7); m1 = CCX 3 + 12–13; m2 = CCX 5 +
    18–19; m3 = CCX 7 + the leftovers 2 and 8 (no unused CCX, none with 2 free). m4 finds
    cores 14 and 20 = CPUs 14,20,38,44 and is refused."""
    topo, gpu_nodes = _rig("4x3090")
    bus = list(gpu_nodes)
    units = [CpuUnit(f"m{i}", "llama.cpp", (bus[i % 4],)) for i in range(5)]
    with pytest.raises(CpuPlanRefused) as info:
        plan_cpus(topo, gpu_nodes, units)
    message = str(info.value)
    assert "model 'm4' (llama.cpp, 1 GPU(s) on NUMA node(s) 0) needs 5 whole cores" in message
    assert "only 2 are free there: CPUs 14,20,38,44" in message


def test_every_rule_number_has_a_source(tmp_path: Path) -> None:
    rules = load_rules()
    assert set(rules.engines) == {"vllm", "sglang", "llama.cpp"}
    bad = tmp_path / "engines.yaml"
    bad.write_text(
        "housekeeping: {cores_per_socket: 1, sources: {cores_per_socket: estimate}}\n"
        "engines:\n  x: {api_cores: 1, tokenizer_cores: 0, engine_cores: 0, cores_per_gpu: 1,"
        " sources: {api_cores: estimate}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"engines\.x\.sources\.cores_per_gpu: missing"):
        load_rules_file(bad)
