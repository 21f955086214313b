"""The boot-time IRQ script, run with /bin/sh against a scratch sysfs/procfs tree: a GPU the
CPU plan lists gets its unit's CPUs, a GPU it does not list its ``local_cpulist``, and a
device that is not an NVIDIA display controller is left alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from inventory.schema import HostConfig
from tuning.render import files as specs
from tuning.render.unit_text import UnsafeUnitValue

CONFIG = HostConfig.model_validate({"ssh": {"host": "127.0.0.1"}})


def _device(root: Path, bus: str, vendor: str, cls: str, local: str, irqs: list[int]) -> None:
    dev = root / "sys/bus/pci/devices" / bus
    (dev / "msi_irqs").mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "class").write_text(cls + "\n")
    (dev / "local_cpulist").write_text(local + "\n")
    (dev / "irq").write_text("0\n")
    for irq in irqs:
        (dev / "msi_irqs" / str(irq)).write_text("msi\n")
        (root / "proc/irq" / str(irq)).mkdir(parents=True)
        (root / "proc/irq" / str(irq) / "smp_affinity_list").write_text("0-127\n")


def _affinity(root: Path, irq: int) -> str:
    return (root / "proc/irq" / str(irq) / "smp_affinity_list").read_text().strip()


def test_planned_gpus_get_their_units_cpus_the_rest_their_local_cpus(tmp_path: Path) -> None:
    _device(tmp_path, "0000:41:00.0", "0x10de", "0x030000", "0-63", [130, 131])
    _device(tmp_path, "0000:c1:00.0", "0x10de", "0x030200", "64-127", [150])
    _device(tmp_path, "0000:02:00.0", "0x144d", "0x010802", "0-63", [40])  # an NVMe drive
    script_spec, _ = specs.irq_pinning_files(CONFIG, irq_cpus={"0000:41:00.0": "8-11,72-75"})
    script = tmp_path / "pin.sh"
    script.write_text(script_spec.render())
    run = subprocess.run(
        ["sh", str(script)],
        env={"RIGFORGE_KERNEL_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert [_affinity(tmp_path, i) for i in (130, 131)] == ["8-11,72-75"] * 2
    assert _affinity(tmp_path, 150) == "64-127"
    assert _affinity(tmp_path, 40) == "0-127"


@pytest.mark.parametrize(
    ("bus", "cpus"),
    [("0000:41:00.0", "8-11; reboot"), ("0000:41:00.0) reboot ;;", "8"), ("41:00.0", "1")],
)
def test_a_bus_id_or_cpu_list_that_could_break_the_script_is_refused(bus: str, cpus: str) -> None:
    with pytest.raises(UnsafeUnitValue):
        specs.irq_pinning_files(CONFIG, irq_cpus={bus: cpus})
