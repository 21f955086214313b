"""The boot half of the ``cpu:`` section: what tmpfiles.d and sysctl.d get, from the inventory.

Expected lines follow tmpfiles.d(5) (``w PATH - - - - ARG``, globs allowed) and sysctl.d(5).
"""

from __future__ import annotations

import pytest

from inventory.schema import HostConfig
from tuning.render.files import IdleStateOff, cpu_boot_files, numa_balancing_on
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
