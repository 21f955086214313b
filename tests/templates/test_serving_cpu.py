"""Serving units rendered from a CPU-planned plan use it: their own CPUAffinity=, memory bound
to the GPUs' node, and the engine's threads sized to the unit's cores.

Expectations worked by hand from tuning/cpuplan/engines.yaml: llama.cpp gets 1 API + 4 engine
cores and ``--threads 4``; a vLLM worker (one per GPU) gets ``cores_per_gpu`` = 1 thread, the
value vLLM itself picks when OMP_NUM_THREADS is unset; a llama.cpp unit pinned to 8 cores
keeps one for the API and computes on 7.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuning.backends import open_rig
from tuning.captures.values import parse_cpu_list
from tuning.cli import cli
from tuning.core.plan import load_plan
from tuning.cpuplan import CpuUnit, plan_cpus
from tuning.errors import RigforgeError
from tuning.serving import render_serving_units, unit_name

MODELS = Path(__file__).parents[2] / "inventory" / "examples" / "models-reference.yaml"


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "plan.yaml"
    result = CliRunner().invoke(
        cli, ["plan", "--rig", "sim:reference", "--models", str(MODELS), "--out", str(out)]
    )
    assert result.exit_code in (0, 1), result.output
    return out


def _lines(text: str, prefix: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(prefix)]


def test_each_unit_gets_its_own_cpus_its_gpus_node_and_its_threads(planned: Path) -> None:
    plan = load_plan(planned)
    units = render_serving_units(plan)
    assert plan.placements
    for p in plan.placements:
        text = units[f"/etc/systemd/system/{unit_name(p)}"]
        (affinity,) = _lines(text, "CPUAffinity=")
        assert parse_cpu_list(affinity.removeprefix("CPUAffinity=")) == p.cpu_list
        assert _lines(text, "NUMAPolicy=") == ["NUMAPolicy=bind"]
        assert _lines(text, "NUMAMask=") == [f"NUMAMask={p.numa_node}"]
        if p.engine == "llama.cpp":
            assert "--threads 4 --threads-batch 4" in text, text
            assert not _lines(text, 'Environment="OMP_NUM_THREADS')
        else:
            assert _lines(text, 'Environment="OMP_NUM_THREADS=') == [
                'Environment="OMP_NUM_THREADS=1"'
            ]
            assert "--threads" not in text


def test_a_plan_without_a_cpu_plan_leaves_the_engines_defaults(planned: Path) -> None:
    plan = load_plan(planned)
    bare = dataclasses.replace(
        plan,
        placements=tuple(dataclasses.replace(p, threads=None) for p in plan.placements),
    )
    for text in render_serving_units(bare).values():
        assert "--threads" not in text
        assert "OMP_NUM_THREADS" not in text


def test_a_pinned_llama_cpp_unit_computes_on_all_but_its_api_core() -> None:
    rig = open_rig("sim:reference")
    topo = rig.cpu_topology()
    assert topo is not None
    gpu = rig.snapshot().gpus[0]
    assert gpu.numa_node is not None
    pin = tuple(range(24, 32)) + tuple(range(88, 96))  # CCD 3: 8 cores
    share = plan_cpus(
        topo, {gpu.uuid: gpu.numa_node}, [CpuUnit("m", "llama.cpp", (gpu.uuid,), pin)]
    ).unit("m")
    assert (share.cores, share.threads) == (8, 7)


@pytest.mark.parametrize("threads", [0, -1, "4 --api-key x", True, 10**6])
def test_a_thread_count_that_is_not_one_is_refused_before_rendering(
    planned: Path, threads: object
) -> None:
    plan = load_plan(planned)
    bad = dataclasses.replace(plan.placements[0], threads=threads)  # type: ignore[arg-type]
    with pytest.raises(RigforgeError, match="threads"):
        render_serving_units(dataclasses.replace(plan, placements=(bad,)))
