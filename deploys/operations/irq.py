"""Pin each GPU's IRQs to its local CPUs (``/proc/irq/N/smp_affinity_list``)."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from deploys.facts.irq import IrqAffinity
from deploys.facts.pcie import PciLinks
from deploys.facts.shell import root_prefix
from tuning.captures.values import format_cpu_list, parse_cpu_list
from tuning.core.bus import normalize_bus_id


@operation()
def irq_affinity(
    cpu_lists: dict[str, str] | None = None,
    root: str = "/",
    planned: dict[str, str] | None = None,
):
    """
    Pin every IRQ of each GPU to a CPU list (until reboot; the boot unit re-applies it).

    + cpu_lists: GPU PCI bus id → kernel CPU list (``{"0000:41:00.0": "0-15"}``); ``None``
      pins each NVIDIA GPU to its own ``local_cpulist`` from sysfs (the
      :class:`~deploys.facts.pcie.PciLinks` fact); a malformed list is refused at plan time
    + root: the tree ``/proc`` lives under (``/`` on a real box)
    + planned: with ``cpu_lists`` ``None``, GPU PCI bus id → CPU list that replaces the GPU's
      ``local_cpulist`` (the CPU plan's ``irq_cpus``: the CPUs of the unit serving it)

    A GPU in ``cpu_lists`` that the host does not have is reported in a no-op line, not an
    error (the inventory may list GPUs not installed yet).

    **Example:**

    .. code:: python

        irq.irq_affinity(name="Pin GPU IRQs to their local CPUs")
        irq.irq_affinity(
            name="Pin GPU IRQs by hand",
            cpu_lists={"0000:41:00.0": "0-15", "0000:c1:00.0": "16-31"},
        )
    """
    if cpu_lists is None:
        links = host.get_fact(PciLinks, root=root)
        cpu_lists = {
            bus_id: link.local_cpulist for bus_id, link in links.items() if link.local_cpulist
        }
        by_bus = {normalize_bus_id(b): cpus for b, cpus in (planned or {}).items()}
        cpu_lists = {
            bus_id: by_bus.get(normalize_bus_id(bus_id), cpus) for bus_id, cpus in cpu_lists.items()
        }
        if not cpu_lists:
            host.noop("no NVIDIA GPU reports a local_cpulist: nothing to pin")
            return
    fact = host.get_fact(IrqAffinity, root=root)
    devices = {normalize_bus_id(bus): irqs for bus, irqs in fact.devices.items()}
    prefix = root_prefix(root)
    unchanged: list[str] = []
    for bus_id, wanted_text in sorted(cpu_lists.items()):
        wanted = parse_cpu_list(wanted_text)
        if wanted is None:
            raise OperationValueError(f"CPU list {wanted_text!r} for {bus_id} is not a CPU list")
        irqs = devices.get(normalize_bus_id(bus_id))
        if not irqs:
            unchanged.append(f"{bus_id}: no such GPU or no IRQs")
            continue
        for irq, current in ((i.irq, i.cpus) for i in irqs):
            if parse_cpu_list(current) == wanted:
                unchanged.append(f"IRQ {irq} of {bus_id} on {format_cpu_list(wanted)}")
            else:
                path = shlex.quote(f"/proc/irq/{irq}/smp_affinity_list")
                yield f"echo {shlex.quote(format_cpu_list(wanted))} > {prefix}{path}"
    if unchanged:
        host.noop("; ".join(unchanged))
