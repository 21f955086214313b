"""IRQs: each GPU's interrupts on its unit's CPUs (the plan's ``irq_cpus``) or, for a GPU the
plan does not list, its local CPUs; irqbalance kept off them."""

from __future__ import annotations

import re

import pytest

from tests.verify import expect, read
from tests.verify.conftest import Expected
from tuning.core.bus import normalize_bus_id
from tuning.render.files import planned_irq_cpus


def _pin_irqs_or_skip(expected: Expected) -> None:
    __tracebackhide__ = True
    if not expected.config.affinity.pin_irqs:
        pytest.skip("affinity.pin_irqs is false")


def test_irqbalance_keeps_off_gpu_irqs(host, expected: Expected) -> None:
    if not expected.config.affinity.irqbalance_ban:
        pytest.skip("affinity.irqbalance_ban is false")
    env = host.file("/etc/default/irqbalance-rigforge").content_string
    match = re.search(r'--policyscript=(\S+?)"', env)
    assert match, "IRQBALANCE_ARGS has no --policyscript"
    script = host.file(match.group(1))
    assert script.exists, f"{script.path} is missing"
    assert script.mode & 0o111, f"{script.path} is not executable"
    dropin = host.file("/etc/systemd/system/irqbalance.service.d/rigforge.conf").content_string
    assert "EnvironmentFile=-/etc/default/irqbalance-rigforge" in dropin


def test_irq_pinning_unit_installed(host, expected: Expected) -> None:
    _pin_irqs_or_skip(expected)
    assert read.unit_enabled(host, expect.IRQ_AFFINITY_UNIT)


def test_runtime_gpu_irqs_on_their_units_or_local_cpus(host, expected: Expected) -> None:
    _pin_irqs_or_skip(expected)
    planned = {normalize_bus_id(b): c for b, c in planned_irq_cpus(expected.config).items()}
    checked = 0
    for device in read.gpu_devices(host, read.runtime_root_or_skip(expected.config)):
        unit = planned.get(normalize_bus_id(device.bus_id))
        if unit is None and not device.local_cpulist:
            continue
        wanted = expect.cpu_set(unit or device.local_cpulist)
        what = f"its unit's CPUs {unit}" if unit else f"its local CPUs {device.local_cpulist}"
        for irq, cpus in device.irq_cpus.items():
            checked += 1
            assert expect.cpu_set(cpus) == wanted, (
                f"IRQ {irq} of {device.bus_id} runs on {cpus or 'nothing readable'}, not {what}"
            )
    if not checked:
        pytest.skip("no NVIDIA GPU IRQ with a local_cpulist on this host")
