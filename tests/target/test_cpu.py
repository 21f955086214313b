"""The ``cpu:`` section on a booted target: applied against the fake sysfs, idempotent, and
turned off again with the defaults it recorded written back.

On its own target (``cpu`` on 127.0.0.1:2290 unless ``RIGFORGE_CPU_TARGET`` /
``RIGFORGE_CPU_PORT`` say otherwise), the CI inventory with ``cpu: {enabled: true}``. The
harness's fake kernel (tests/target/harness.py) starts as Debian does: schedutil, THP
``always``, swappiness 60, NUMA balancing on, idle state2 with a 350 µs exit latency.

    .venv/bin/pytest -m target tests/target/test_cpu.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.target import harness, util
from tests.target.util import ssh

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_CPU_TARGET", "cpu")
PORT = util.env_port("RIGFORGE_CPU_PORT", 2290)
K = harness.KERNEL_ROOT
FILES = {
    "gov0": f"{K}/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
    "gov1": f"{K}/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
    "c1_off": f"{K}/sys/devices/system/cpu/cpu0/cpuidle/state1/disable",
    "c2_off": f"{K}/sys/devices/system/cpu/cpu0/cpuidle/state2/disable",
    "thp": f"{K}/sys/kernel/mm/transparent_hugepage/enabled",
    "swappiness": f"{K}/proc/sys/vm/swappiness",
    "numa_balancing": f"{K}/proc/sys/kernel/numa_balancing",
}
STOCK = {
    "gov0": "schedutil",
    "gov1": "schedutil",
    "c1_off": "0",
    "c2_off": "0",
    "thp": "[always] madvise never",
    "swappiness": "60",
    "numa_balancing": "1",
}
RECORD = "/var/lib/rigforge/cpu-defaults"


def _state(target: harness.Target) -> dict[str, str]:
    out = ssh(target, "; ".join(f"echo {k}=$(cat {v})" for k, v in FILES.items()))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _cpu_ops(result: util.DeployResult) -> list[str]:
    return [name for name in result.changed if name.startswith("CPU")]


@pytest.fixture(scope="module")
def target() -> Iterator[harness.Target]:
    gpus = util.standin_gpus(util.CI_YAML, "ci-target")
    with util.fresh_target(NAME, PORT, "cpu: start fresh target", gpus=gpus) as tgt:
        yield tgt


def test_cpu_section_applies_is_idempotent_and_restores(
    target: harness.Target, tmp_path: Path
) -> None:
    assert _state(target) == STOCK, "the fake kernel does not start as Debian does"
    on = util.inventory_for(
        target, tmp_path / "on", overrides={"cpu": {"enabled": True}}, stem="cpu-on"
    )
    first = util.deploy(on, "cpu: deploy with cpu.enabled")
    assert first.rc == 0, first.stderr_tail
    assert first.totals["error"] == 0, first.errors
    assert _cpu_ops(first), first.changed
    # The serving plan binds units, so NUMA balancing goes off; state2 (350 µs > 99 µs) off,
    # C1 (1 µs) left on.
    assert _state(target) == {
        **STOCK,
        "gov0": "performance",
        "gov1": "performance",
        "c2_off": "1",
        "thp": "madvise",
        "swappiness": "10",
        "numa_balancing": "0",
    }
    assert "sys/kernel/mm/transparent_hugepage/enabled=always" in ssh(target, f"cat {RECORD}")
    second = util.deploy(on, "cpu: deploy with cpu.enabled, again (no-op)")
    assert second.totals["error"] == 0, second.errors
    assert _cpu_ops(second) == [], second.changed

    off = util.inventory_for(
        target, tmp_path / "off", overrides={"cpu": {"enabled": False}}, stem="cpu-off"
    )
    restored = util.deploy(off, "cpu: deploy with cpu.enabled false")
    assert restored.rc == 0, restored.stderr_tail
    assert restored.totals["error"] == 0, restored.errors
    # The fake THP file keeps the one word written back, a kernel would bracket it.
    assert _state(target) == {**STOCK, "thp": "always"}
    assert ssh(target, f"[ -e {RECORD} ] && echo there || echo gone").strip() == "gone"
    again = util.deploy(off, "cpu: deploy with cpu.enabled false, again (no-op)")
    assert again.totals["error"] == 0, again.errors
    assert _cpu_ops(again) == [], again.changed
