"""The IRQs of each NVIDIA GPU and the CPUs they may run on.

Reads ``{root}/sys/bus/pci/devices/*/msi_irqs/`` (or ``irq`` for a legacy INTx line) to map
IRQs to GPUs, ``{root}/proc/interrupts`` for the IRQs the ``nvidia`` driver registered, and
``{root}/proc/irq/N/smp_affinity_list`` for each one's CPUs.
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

from deploys.facts.pcie import NVIDIA_VENDOR
from deploys.facts.shell import root_prefix


class IrqAffinity(FactBase):
    """GPU bus id → {IRQ number (text): its ``smp_affinity_list``}, plus unmapped NVIDIA IRQs.

    ``unmapped``: IRQs named ``nvidia`` in ``/proc/interrupts`` that no GPU's ``msi_irqs``
    lists (seen when sysfs is not mounted). An affinity the kernel did not report is ``None``.
    Example::

        {
            "devices": {"0000:41:00.0": {"130": "0-15", "131": "0-15"}},
            "unmapped": {},
        }
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"devices": {}, "unmapped": {}}

    def command(self, root: str = "/") -> str:
        r = root_prefix(root)
        return (
            f"for d in {r}/sys/bus/pci/devices/*; do "
            f'[ "$(cat "$d/vendor" 2>/dev/null)" = {NVIDIA_VENDOR} ] || continue; '
            'case "$(cat "$d/class" 2>/dev/null)" in 0x03*) ;; *) continue ;; esac; '
            'irqs=$(ls "$d/msi_irqs" 2>/dev/null); '
            '[ -n "$irqs" ] || irqs=$(cat "$d/irq" 2>/dev/null); '
            "for i in $irqs; do "
            f'echo "dev ${{d##*/}} $i $(cat {r}/proc/irq/$i/smp_affinity_list 2>/dev/null)"; '
            "done; done; "
            f"grep -i nvidia {r}/proc/interrupts 2>/dev/null | while read -r n rest; do "
            f'i="${{n%:}}"; echo "int $i $(cat {r}/proc/irq/$i/smp_affinity_list 2>/dev/null)"; '
            "done; true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        devices: dict[str, dict[str, str | None]] = {}
        named: dict[str, str | None] = {}
        for line in output:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "dev":
                devices.setdefault(parts[1], {})[parts[2]] = parts[3] if len(parts) > 3 else None
            elif len(parts) >= 2 and parts[0] == "int" and parts[1].isdigit():
                named[parts[1]] = parts[2] if len(parts) > 2 else None
        mapped = {irq for irqs in devices.values() for irq in irqs}
        return {
            "devices": {
                bus: dict(sorted(irqs.items(), key=lambda kv: int(kv[0])))
                for bus, irqs in sorted(devices.items())
            },
            "unmapped": {irq: cpus for irq, cpus in named.items() if irq not in mapped},
        }
