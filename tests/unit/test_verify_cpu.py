"""The CPU verify checks (tests/verify/test_cpu.py) pass on a host deployed as planned and
fail, naming the unit and the CPUs, where the host is not.

The plan is ``rigforge plan`` on sim:reference (a 5995WX in NPS1: node 0 holds CPUs 0-127);
the hosts are the unit files the renderer writes for it (a file double) and a scratch sysfs
read by a real shell (testinfra's local backend).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from inventory.schema import HostConfig
from tests.unit.test_verify_expect import FileHost
from tests.verify import expect
from tests.verify import test_cpu as cpu_checks
from tests.verify.conftest import Expected
from tuning.cli import cli
from tuning.core.plan import load_plan
from tuning.serving import render_serving_units

MODELS = Path(__file__).parents[2] / "inventory" / "examples" / "models-reference.yaml"


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Expected, dict[str, str]]:
    folder = tmp_path_factory.mktemp("verify-cpu")
    plan = folder / "plan.yaml"
    result = CliRunner().invoke(
        cli, ["plan", "--rig", "sim:reference", "--models", str(MODELS), "--out", str(plan)]
    )
    assert result.exit_code in (0, 1), result.output
    root = folder / "kernel"
    config = HostConfig.model_validate(
        {
            "ssh": {"host": "127.0.0.1"},
            "serving": {"plan": str(plan)},
            "kernel": {"root": str(root)},
            "cpu": {"enabled": True},
        }
    )
    tree = dict(render_serving_units(load_plan(plan)))
    tree[f"{root}/sys/devices/system/node/node0/cpulist"] = "0-127\n"
    return Expected("ws1", config), tree


def test_a_host_deployed_as_planned_passes(planned: tuple[Expected, dict[str, str]]) -> None:
    expected, tree = planned
    cpu_checks.test_units_cpus_are_disjoint_from_each_other_and_housekeeping(
        FileHost(tree), expected
    )
    cpu_checks.test_units_cpus_lie_inside_their_gpus_node(FileHost(tree), expected)


def test_two_units_on_one_cpu_fail_naming_both(planned: tuple[Expected, dict[str, str]]) -> None:
    expected, tree = planned
    first, second = [s for s in expect.served(expected.config) if s.cpus][:2]
    path = f"{expect.UNIT_DIR}/{second.unit}"
    bad = dict(tree)
    bad[path] = tree[path].replace("CPUAffinity=", f"CPUAffinity={first.cpus[0]} ", 1)
    with pytest.raises(AssertionError, match=f"{second.unit} shares CPUs \\[{first.cpus[0]}\\]"):
        cpu_checks.test_units_cpus_are_disjoint_from_each_other_and_housekeeping(
            FileHost(bad), expected
        )


def test_a_unit_on_housekeeping_cpus_fails(planned: tuple[Expected, dict[str, str]]) -> None:
    """Housekeeping on sim:reference is CPUs 0-1,64-65 (tests/unit/test_cpuplan.py)."""
    expected, tree = planned
    unit = next(s for s in expect.served(expected.config) if s.cpus).unit
    path = f"{expect.UNIT_DIR}/{unit}"
    bad = {**tree, path: tree[path].replace("CPUAffinity=", "CPUAffinity=0 ", 1)}
    with pytest.raises(AssertionError, match="housekeeping"):
        cpu_checks.test_units_cpus_are_disjoint_from_each_other_and_housekeeping(
            FileHost(bad), expected
        )


def test_a_unit_off_its_gpus_node_fails(planned: tuple[Expected, dict[str, str]]) -> None:
    expected, tree = planned
    node = next(k for k in tree if k.endswith("node0/cpulist"))
    with pytest.raises(AssertionError, match="are not on NUMA node 0"):
        cpu_checks.test_units_cpus_lie_inside_their_gpus_node(
            FileHost({**tree, node: "0-7\n"}), expected
        )


def _sysfs(root: Path, governors: list[str], thp: str, swappiness: str) -> None:
    for cpu, governor in enumerate(governors):
        path = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(governor + "\n")
    thp_file = root / "sys/kernel/mm/transparent_hugepage/enabled"
    thp_file.parent.mkdir(parents=True, exist_ok=True)
    thp_file.write_text(thp + "\n")
    swap = root / "proc/sys/vm/swappiness"
    swap.parent.mkdir(parents=True, exist_ok=True)
    swap.write_text(swappiness + "\n")


@pytest.fixture
def local_host():
    import testinfra

    return testinfra.get_host("local://")


def _expected_at(root: Path) -> Expected:
    config = HostConfig.model_validate(
        {"ssh": {"host": "127.0.0.1"}, "kernel": {"root": str(root)}, "cpu": {"enabled": True}}
    )
    return Expected("ws1", config)


def test_the_cpu_section_checks_pass_and_fail_on_a_scratch_sysfs(
    tmp_path: Path, local_host
) -> None:
    good = tmp_path / "good"
    _sysfs(good, ["performance", "performance"], "always [madvise] never", "10")
    for check in (
        cpu_checks.test_every_cpu_runs_the_inventorys_governor,
        cpu_checks.test_transparent_hugepages_as_the_inventory_says,
        cpu_checks.test_swappiness_as_the_inventory_says,
    ):
        check(local_host, _expected_at(good))
    bad = tmp_path / "bad"
    _sysfs(bad, ["performance", "schedutil"], "[always] madvise never", "60")
    with pytest.raises(AssertionError, match="governor\\(s\\) \\['schedutil'\\]"):
        cpu_checks.test_every_cpu_runs_the_inventorys_governor(local_host, _expected_at(bad))
    with pytest.raises(AssertionError):
        cpu_checks.test_transparent_hugepages_as_the_inventory_says(local_host, _expected_at(bad))
    with pytest.raises(AssertionError):
        cpu_checks.test_swappiness_as_the_inventory_says(local_host, _expected_at(bad))


def test_a_plan_without_a_cpu_plan_is_skipped_not_failed(tmp_path: Path) -> None:
    """inventory/examples/host_data/ci-target/plan.yaml gives both units the 2-CPU target's
    node (0-1): shared by design, no housekeeping_cpus, so the disjointness check skips."""
    plan = Path(__file__).parents[2] / "inventory/examples/host_data/ci-target/plan.yaml"
    config = HostConfig.model_validate(
        {"ssh": {"host": "127.0.0.1"}, "serving": {"plan": str(plan)}}
    )
    tree = dict(render_serving_units(load_plan(plan)))
    with pytest.raises(pytest.skip.Exception, match="no CPU plan"):
        cpu_checks.test_units_cpus_are_disjoint_from_each_other_and_housekeeping(
            FileHost(tree), Expected("ci-target", config)
        )
