"""The CPU plan over every shipped rig, on a real EPYC capture, and its refusals.

Expected CPU sets are worked by hand in each docstring from the layout (core k = CPUs k and
k + cores; CCDs of 8 cores on the 5995WX) and the sizing rules in tuning/cpuplan/engines.yaml
(vllm: 1 API + 1 engine + 1 per GPU; llama.cpp: 1 API + 4 engine; 2 housekeeping cores per
socket).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.models import load_models
from tuning.backends import RIGS_DIR, open_rig
from tuning.backends.cpu_spec import RigCpuSpec, cpu_topology_of
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


@settings(max_examples=60, deadline=None)
@given(
    sockets=st.integers(1, 2),
    nps=st.sampled_from([1, 2, 4]),
    cores_per_llc=st.integers(1, 8),
    smt=st.integers(1, 2),
    wanted=st.lists(
        st.tuples(st.sampled_from(["vllm", "sglang", "llama.cpp"]), st.integers(0, 7)),
        min_size=1,
        max_size=6,
    ),
)
def test_any_layout_either_plans_clean_sets_or_refuses(
    sockets: int, nps: int, cores_per_llc: int, smt: int, wanted: list[tuple[str, int]]
) -> None:
    """Property: on any socket/NPS/CCD/SMT layout and any units (each on one GPU, GPU g on node
    g mod nodes), the plan is refused with a reason or gives disjoint whole-core sets on the
    GPU's node, disjoint from housekeeping."""
    spec = RigCpuSpec(
        model="x",
        sockets=sockets,
        numa_nodes_per_socket=nps,
        llcs_per_socket=4,
        cores_per_llc=cores_per_llc,
        threads_per_core=smt,
        llc_mib=32,
        sources={"a": "b"},
    )
    topo = cpu_topology_of(spec)
    nodes = len(topo.nodes)
    gpu_nodes = {f"g{g}": g % nodes for g in range(8)}
    units = [CpuUnit(f"m{i}", engine, (f"g{g}",)) for i, (engine, g) in enumerate(wanted)]
    rules = load_rules()
    demand = {n.node: 0 for n in topo.nodes}
    for unit in units:
        demand[gpu_nodes[unit.gpus[0]]] += rules.engines[unit.engine].cores_for(1)
    cores_on = {n.node: len(n.cpus) // smt for n in topo.nodes}
    hk = rules.housekeeping.cores_per_socket
    refused: str | None = None
    try:
        plan = plan_cpus(topo, gpu_nodes, units)
    except CpuPlanRefused as exc:
        refused = str(exc)
    if refused is not None:
        # the greedy plan fails only where a node's demand exceeds what housekeeping leaves
        assert "needs" in refused
        assert any(demand[n] > cores_on[n] - hk for n in demand), refused
        return
    assert all(demand[n] <= cores_on[n] for n in demand)
    seen = set(plan.housekeeping_cpus)
    for unit, share in zip(units, plan.units, strict=True):
        assert not set(share.cpus) & seen
        seen |= set(share.cpus)
        assert set(share.cpus) <= set(topo.node(gpu_nodes[unit.gpus[0]]).cpus)
        assert topo.whole_cores(share.cpus)


REFERENCE_MODELS = Path(__file__).parents[2] / "inventory" / "examples" / "models-reference.yaml"


@pytest.mark.parametrize("rig", ["reference", "reference-nps4", "8xl40s"])
def test_rigforge_plan_writes_each_placements_own_cpus_and_housekeeping(
    rig: str, tmp_path: Path
) -> None:
    """``rigforge plan --out``: every placement's cpu_list is its own whole cores on its GPUs'
    nodes, sized by its engine's rule, disjoint from the others and from housekeeping_cpus
    (0-1,64-65 on the 5995WX rigs: cores 0–1 of socket 0, the node with fewest GPUs first)."""
    from click.testing import CliRunner

    from tuning.cli import cli
    from tuning.core.plan import load_plan

    out = tmp_path / "plan.yaml"
    result = CliRunner().invoke(
        cli, ["plan", "--rig", f"sim:{rig}", "--models", str(REFERENCE_MODELS), "--out", str(out)]
    )
    assert result.exit_code in (0, 1), result.output
    assert "housekeeping CPUs" in result.output
    written = load_plan(out)
    topo, _ = _rig(rig)
    snapshot = open_rig(f"sim:{rig}").snapshot()
    node_of = {g.uuid: g.numa_node for g in snapshot.gpus}
    rules = load_rules()
    seen = set(written.housekeeping_cpus)
    assert written.housekeeping_cpus
    if rig.startswith("reference"):
        assert format_cpu_list(written.housekeeping_cpus) == "0-1,64-65"
    assert written.placements
    for p in written.placements:
        cpus = set(p.cpu_list)
        assert not cpus & seen, p.model
        seen |= cpus
        local = {c for g in p.gpus for c in topo.node(node_of[g] or 0).cpus}
        assert cpus <= local, p.model
        assert topo.whole_cores(cpus), p.model
        need = rules.engines[p.engine].cores_for(len(p.gpus))
        assert len(cpus) == need * topo.threads_per_core, p.model


def test_a_gpu_without_numa_node_uses_the_only_node_or_is_refused() -> None:
    """One-node desktops report numa_node -1 (None): the GPU is on node 0 there. On the
    dual-socket 8xl40s the same GPU cannot be placed near its cores and is refused."""
    import dataclasses

    from tuning.cpuplan.placements import with_cpu_plan
    from tuning.placement import plan

    models = load_models(REFERENCE_MODELS)
    for rig, refused in (("reference", False), ("8xl40s", True)):
        snapshot = open_rig(f"sim:{rig}").snapshot()
        blind = dataclasses.replace(
            snapshot, gpus=tuple(dataclasses.replace(g, numa_node=None) for g in snapshot.gpus)
        )
        topo = open_rig(f"sim:{rig}").cpu_topology()
        assert topo is not None
        result = plan(blind, models)
        if refused:
            with pytest.raises(
                CpuPlanRefused, match=r"reports no NUMA node on a box with nodes \[0, 1\]"
            ):
                with_cpu_plan(result, blind, topo)
        else:
            planned, _ = with_cpu_plan(result, blind, topo)
            assert format_cpu_list(planned.housekeeping_cpus) == "0-1,64-65"


def test_rendered_serving_units_get_disjoint_cpu_affinity(tmp_path: Path) -> None:
    """The serving units rendered from a CPU-planned plan: each ``CPUAffinity=`` is its
    placement's own CPUs (systemd's space-separated ranges), and no two units share a CPU —
    before the CPU plan every unit on sim:reference had ``CPUAffinity=0-127``."""
    from click.testing import CliRunner

    from tuning.cli import cli
    from tuning.serving import render_serving_units

    out = tmp_path / "plan.yaml"
    CliRunner().invoke(
        cli,
        ["plan", "--rig", "sim:reference", "--models", str(REFERENCE_MODELS), "--out", str(out)],
    )
    units = render_serving_units(out)
    assert len(units) == 3
    seen: set[int] = set()
    for text in units.values():
        (line,) = [ln for ln in text.splitlines() if ln.startswith("CPUAffinity=")]
        cpus = set()
        for part in line.removeprefix("CPUAffinity=").split():
            lo, _, hi = part.partition("-")
            cpus |= set(range(int(lo), int(hi or lo) + 1))
        assert cpus, line
        assert not cpus & seen, line
        assert not cpus & {0, 1, 64, 65}, line  # housekeeping
        seen |= cpus


def test_a_malformed_rules_file_names_the_line_and_path_of_each_error(tmp_path: Path) -> None:
    """Two faults, two lines: line 3 gives engine x a number, not a mapping; line 4 gives
    ``cores_per_gpu`` a word, not an integer. Each is named as ``file:line: yaml.path: …``."""
    bad = tmp_path / "engines.yaml"
    bad.write_text(
        "housekeeping: {cores_per_socket: 1, sources: {cores_per_socket: estimate}}\n"
        "engines:\n"
        "  x: 3\n"
        "  y: {api_cores: 1, tokenizer_cores: 0, engine_cores: 0, cores_per_gpu: two,\n"
        "      sources: {}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_rules_file(bad)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("engines.yaml:3: engines.x: "), lines
    assert lines[1].startswith("engines.yaml:4: engines.y.cores_per_gpu: "), lines
