"""The IRQs of each NVIDIA GPU and the CPUs they may run on.

Reads ``{root}/sys/bus/pci/devices/*/msi_irqs/`` (or ``irq`` for a legacy INTx line) to map
IRQs to GPUs, ``{root}/proc/interrupts`` for the IRQs the ``nvidia`` driver registered, and
``{root}/proc/irq/N/smp_affinity_list`` for each one's CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyinfra.api import FactBase

from deploys.facts.pcie import NVIDIA_VENDOR
from deploys.facts.shell import root_prefix


@dataclass(frozen=True)
class Irq:
    """One IRQ and the CPUs it may run on (its ``smp_affinity_list``; ``None``: not reported)."""

    irq: int
    cpus: str | None


@dataclass(frozen=True)
class GpuIrqs:
    """The NVIDIA GPUs' IRQs by GPU bus id (in IRQ order), and the NVIDIA IRQs of no GPU.

    ``unmapped``: IRQs named ``nvidia`` in ``/proc/interrupts`` that no GPU's ``msi_irqs``
    lists (seen when sysfs is not mounted).
    """

    devices: dict[str, tuple[Irq, ...]] = field(default_factory=dict)
    unmapped: tuple[Irq, ...] = ()


class IrqAffinity(FactBase[GpuIrqs]):
    """Each NVIDIA GPU's IRQs and their ``smp_affinity_list``, plus unmapped NVIDIA IRQs.

    Example::

        GpuIrqs(devices={"0000:41:00.0": (Irq(130, "0-15"), Irq(131, "0-15"))}, unmapped=())
    """

    @staticmethod
    def default() -> GpuIrqs:
        return GpuIrqs()

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

    def process(self, output: list[str]) -> GpuIrqs:
        devices: dict[str, dict[int, str | None]] = {}
        named: dict[int, str | None] = {}
        for line in output:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "dev" and parts[2].isdigit():
                cpus = parts[3] if len(parts) > 3 else None
                devices.setdefault(parts[1], {})[int(parts[2])] = cpus
            elif len(parts) >= 2 and parts[0] == "int" and parts[1].isdigit():
                named[int(parts[1])] = parts[2] if len(parts) > 2 else None
        mapped = {irq for irqs in devices.values() for irq in irqs}
        return GpuIrqs(
            devices={
                bus: tuple(Irq(irq, cpus) for irq, cpus in sorted(irqs.items()))
                for bus, irqs in sorted(devices.items())
            },
            unmapped=tuple(Irq(irq, cpus) for irq, cpus in named.items() if irq not in mapped),
        )
