"""CPU: each serving unit on its own CPUs (disjoint from every other unit's and from the
plan's housekeeping CPUs, inside its GPUs' NUMA node); the governor, transparent huge pages
and sysctls as the inventory's ``cpu:`` section says."""

from __future__ import annotations

import pytest

from tests.verify import expect, read
from tests.verify.conftest import Expected
from tuning.core.plan import load_plan

CPU_SYSFS = "/sys/devices/system/cpu"


def _affinity(host, unit: str) -> frozenset[int]:
    """The CPUs of the unit file's last ``CPUAffinity=`` (systemd: the last one wins)."""
    __tracebackhide__ = True
    lines = read.config_lines(host, f"{expect.UNIT_DIR}/{unit}")
    values = [ln.removeprefix("CPUAffinity=") for ln in lines if ln.startswith("CPUAffinity=")]
    assert values, f"{unit} has no CPUAffinity="
    return expect.cpu_set(",".join(values[-1].replace(",", " ").split()))


def _cpu_planned_or_skip(expected: Expected) -> list[expect.Served]:
    """The served units, when the plan is a CPU plan (it has housekeeping CPUs): a plan made
    without one (a hand-written plan, a rig without CPU topology) gives units the GPUs' node
    CPUs, which they share by design."""
    __tracebackhide__ = True
    plan = expected.config.serving.plan
    if not plan or not load_plan(plan).housekeeping_cpus:
        pytest.skip("the plan has no CPU plan (no housekeeping_cpus): units share their node")
    served = [s for s in expect.served(expected.config) if s.cpus]
    if not served:
        pytest.skip("no serving unit has CPUs of its own in the plan")
    return served


def test_units_cpus_are_disjoint_from_each_other_and_housekeeping(host, expected: Expected) -> None:
    served = _cpu_planned_or_skip(expected)
    housekeeping = frozenset(load_plan(str(expected.config.serving.plan)).housekeeping_cpus)
    owner: dict[int, str] = dict.fromkeys(housekeeping, "housekeeping")
    for s in served:
        cpus = _affinity(host, s.unit)
        shared = sorted(c for c in cpus if c in owner)
        assert not shared, (
            f"{s.unit} shares CPUs {shared} with {sorted({owner[c] for c in shared})}"
        )
        owner.update(dict.fromkeys(cpus, s.unit))


def test_units_cpus_lie_inside_their_gpus_node(host, expected: Expected) -> None:
    served = _cpu_planned_or_skip(expected)
    root = read.runtime_root_or_skip(expected.config).rstrip("/")
    checked = 0
    for s in served:
        if s.numa_node is None:
            continue
        node = host.file(f"{root}/sys/devices/system/node/node{s.numa_node}/cpulist")
        if not node.exists:
            continue
        checked += 1
        outside = sorted(_affinity(host, s.unit) - expect.cpu_set(node.content_string.strip()))
        assert not outside, f"{s.unit}: CPUs {outside} are not on NUMA node {s.numa_node}"
    if not checked:
        pytest.skip("no unit's NUMA node lists its CPUs on this host")


def _cpu_section_or_skip(expected: Expected) -> str:
    __tracebackhide__ = True
    if not expected.config.cpu.enabled:
        pytest.skip("cpu.enabled is false")
    return read.runtime_root_or_skip(expected.config).rstrip("/")


def _choice(text: str) -> str:
    """The active word of a sysfs choice file (``always [madvise] never`` → ``madvise``)."""
    words = text.split()
    return next((w[1:-1] for w in words if w.startswith("[")), text.strip())


def test_every_cpu_runs_the_inventorys_governor(host, expected: Expected) -> None:
    root = _cpu_section_or_skip(expected)
    out = host.run(f"cat {root}{CPU_SYSFS}/cpu[0-9]*/cpufreq/scaling_governor 2>/dev/null")
    governors = out.stdout.split()
    if not governors:
        pytest.skip("no CPU has cpufreq on this host")
    wrong = sorted(set(governors) - {expected.config.cpu.governor})
    assert not wrong, f"CPUs run governor(s) {wrong}, not {expected.config.cpu.governor}"


def test_transparent_hugepages_as_the_inventory_says(host, expected: Expected) -> None:
    root = _cpu_section_or_skip(expected)
    thp = host.file(f"{root}/sys/kernel/mm/transparent_hugepage/enabled")
    assert thp.exists, "no transparent_hugepage/enabled"
    assert _choice(thp.content_string) == expected.config.cpu.transparent_hugepages


def test_swappiness_as_the_inventory_says(host, expected: Expected) -> None:
    root = _cpu_section_or_skip(expected)
    value = host.file(f"{root}/proc/sys/vm/swappiness")
    assert value.exists, "no /proc/sys/vm/swappiness"
    assert value.content_string.strip() == str(expected.config.cpu.swappiness)
