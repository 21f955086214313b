"""The boot half of the ``cpu:`` section: what tmpfiles.d and sysctl.d get, from the inventory.

Expected lines follow tmpfiles.d(5) (``w PATH - - - - ARG``, globs allowed) and sysctl.d(5).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from inventory.schema import HostConfig
from tuning.cli import cli
from tuning.render.files import (
    IdleStateOff,
    cpu_boot_files,
    housekeeping_dropin,
    numa_balancing_on,
)
from tuning.render.unit_text import UnsafeUnitValue


def _config(**cpu: object) -> HostConfig:
    serving = cpu.pop("serving", {})
    return HostConfig.model_validate(
        {"ssh": {"host": "127.0.0.1"}, "cpu": {"enabled": True, **cpu}, "serving": serving}
    )


def test_defaults_render_performance_madvise_and_the_deep_state_off() -> None:
    tmpfiles, sysctl = cpu_boot_files(_config(), [IdleStateOff("state2", "state2", 350)])
    lines = [ln for ln in tmpfiles.render().splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        "w /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor - - - - performance",
        "w /sys/devices/system/cpu/cpu*/cpuidle/state2/disable - - - - 1",
        "w /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise",
    ]
    assert "vm.swappiness = 10" in sysctl.render()


@pytest.mark.parametrize(
    ("mode", "serving", "on"),
    [
        ("auto", {"models": [{"model": "m", "gpus": ["0000:41:00.0"], "port": 8000}]}, False),
        ("auto", {}, True),
        ("on", {"models": [{"model": "m", "gpus": ["0000:41:00.0"], "port": 8000}]}, True),
        ("off", {}, False),
    ],
)
def test_numa_balancing_is_off_when_units_are_bound(mode: str, serving: dict, on: bool) -> None:
    config = _config(numa_balancing=mode, serving=serving)
    assert numa_balancing_on(config) is on
    _, sysctl = cpu_boot_files(config)
    assert f"kernel.numa_balancing = {1 if on else 0}" in sysctl.render()


def test_an_idle_state_name_that_could_break_the_file_is_refused() -> None:
    with pytest.raises(UnsafeUnitValue):
        cpu_boot_files(_config(), [IdleStateOff("state2\nw /etc/shadow", "x", 350)])


def test_the_housekeeping_dropin_puts_system_services_on_the_plans_housekeeping_cpus(
    tmp_path: Path,
) -> None:
    """sim:reference's housekeeping is cores 0-1 → CPUs 0-1,64-65 (tests/unit/test_cpuplan.py),
    written as systemd-system.conf(5) wants it: space-separated ranges under [Manager]."""
    plan = tmp_path / "plan.yaml"
    models = Path(__file__).parents[2] / "inventory" / "examples" / "models-reference.yaml"
    result = CliRunner().invoke(
        cli, ["plan", "--rig", "sim:reference", "--models", str(models), "--out", str(plan)]
    )
    assert result.exit_code in (0, 1), result.output
    planned = _config(serving={"plan": str(plan)})
    spec = housekeeping_dropin(planned)
    assert spec is not None
    assert spec.dest == "/etc/systemd/system.conf.d/rigforge-housekeeping.conf"
    lines = [ln for ln in spec.render().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["[Manager]", "CPUAffinity=0-1 64-65"]
    assert housekeeping_dropin(_config()) is None  # no plan: nothing to keep them on
