"""The CPU plan applied to a GPU plan: each placement's ``cpu_list`` becomes its unit's own
cores (:func:`tuning.cpuplan.plan.plan_cpus`), and the plan records the housekeeping CPUs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from inventory.models import ModelsFile, models_document
from tuning.core.bus import normalize_bus_id
from tuning.core.cpu import CpuTopology
from tuning.core.plan import GpuIrqCpus, Plan
from tuning.core.rig import RigSnapshot
from tuning.cpuplan.plan import CpuPlan, CpuPlanRefused, CpuUnit, check_pin_on_host, plan_cpus
from tuning.cpuplan.rules import CpuRules
from tuning.errors import ConfigError, problems_error


def load_cpu_topology(spec: str) -> CpuTopology | None:
    """The CPU topology of the rig ``spec`` names: this host's sysfs for ``nvml``, the rig
    file's ``cpu:`` section for a simulated rig; ``None`` when the rig file has none."""
    from tuning.apply.actuator import open_tuning_rig
    from tuning.backends.sim import SimRig
    from tuning.cpuplan.host import read_host_topology

    if spec == "nvml":
        return read_host_topology()
    rig, _ = open_tuning_rig(spec)
    try:
        return rig.cpu_topology() if isinstance(rig, SimRig) else None
    finally:
        rig.close()


def placement_label(model: str, replica: int) -> str:
    """How a placement is named in the CPU plan: ``model`` or ``model#replica``."""
    return model if replica == 0 else f"{model}#{replica}"


def with_cpu_plan(
    plan: Plan,
    snapshot: RigSnapshot,
    topo: CpuTopology,
    rules: CpuRules | None = None,
    pins: Mapping[str, tuple[int, ...]] | None = None,
) -> tuple[Plan, CpuPlan]:
    """``plan`` with every placement's ``cpu_list`` replaced by its unit's CPUs, and
    ``housekeeping_cpus`` set; the :class:`CpuPlan` beside it.

    ``pins``: model name → the CPUs its ``cpus:`` pins (a pinned model has one replica), kept
    exactly as written once checked (:func:`~tuning.cpuplan.plan.plan_cpus`).

    A GPU that reports no NUMA node (sysfs ``numa_node`` -1, usual on one-node desktops) is on
    the only node when the topology has one. Refused (:class:`CpuPlanRefused`) when such a GPU
    sits on a box with several nodes, or on a node the topology lacks (the topology is not this
    rig's), or when the cores do not suffice.
    """
    nodes = {n.node: n for n in topo.nodes}
    only = next(iter(nodes)) if len(nodes) == 1 else None
    gpu_nodes: dict[str, int] = {}
    for gpu in snapshot.gpus:
        node = gpu.numa_node if gpu.numa_node is not None else only
        if node is not None and gpu.uuid:
            gpu_nodes[gpu.uuid] = node
    for placement in plan.placements:
        for uuid in placement.gpus:
            node = gpu_nodes.get(uuid)
            if node is None:
                raise CpuPlanRefused(
                    f"model {placement.model!r}: GPU {uuid} reports no NUMA node on a box with "
                    f"nodes {sorted(nodes)}, so its unit's cores cannot be chosen near it; "
                    "enable NUMA reporting in the BIOS (ACPI SRAT) or plan with a rig file",
                    unit=placement.model,
                )
            if node not in nodes:
                raise CpuPlanRefused(
                    f"model {placement.model!r}: GPU {uuid} is on NUMA node {node}, which the "
                    f"CPU topology lacks (nodes {sorted(nodes)}); the topology is not this rig's",
                    unit=placement.model,
                )
    pins = pins or {}
    units = [
        CpuUnit(
            placement_label(p.model, p.replica),
            p.engine,
            p.gpus,
            pinned_cpus=pins.get(p.model) if p.replica == 0 else None,
        )
        for p in plan.placements
    ]
    cpu_plan = plan_cpus(topo, gpu_nodes, units, rules)
    placements = tuple(
        dataclasses.replace(p, cpu_list=share.cpus, threads=share.threads)
        for p, share in zip(plan.placements, cpu_plan.units, strict=True)
    )
    bus_of = {g.uuid: normalize_bus_id(g.pci_bus_id) for g in snapshot.gpus if g.pci_bus_id}
    irq_cpus = tuple(
        GpuIrqCpus(gpu=bus_of[i.gpu], cpus=i.cpus) for i in cpu_plan.irqs if i.gpu in bus_of
    )
    return (
        dataclasses.replace(
            plan,
            placements=placements,
            housekeeping_cpus=cpu_plan.housekeeping_cpus,
            irq_cpus=irq_cpus,
        ),
        cpu_plan,
    )


def with_models_cpu_plan(
    plan: Plan, snapshot: RigSnapshot, topo: CpuTopology, models: ModelsFile, source: str
) -> tuple[Plan, CpuPlan]:
    """:func:`with_cpu_plan` with the models file's ``cpus:`` pins; a refusal becomes a
    :class:`~tuning.errors.ConfigError` naming ``source`` (the models file) and the entry's
    YAML path (``models[1].cpus`` when the pin is refused, ``models[1]`` otherwise)."""
    pins = {m.name: cpus for m in models.models if (cpus := m.pinned_cpus) is not None}
    try:
        return with_cpu_plan(plan, snapshot, topo, pins=pins)
    except CpuPlanRefused as refused:
        raise _refusal(source, models, refused) from None


def check_models_pins(topo: CpuTopology, models: ModelsFile, source: str) -> None:
    """Refuse, before any placement, a ``cpus:`` pin naming CPUs the host lacks (the same
    :class:`~tuning.errors.ConfigError` :func:`with_models_cpu_plan` raises)."""
    try:
        for model in models.models:
            if (cpus := model.pinned_cpus) is not None:
                check_pin_on_host(model.name, cpus, topo.cpus)
    except CpuPlanRefused as refused:
        raise _refusal(source, models, refused) from None


def _refusal(source: str, models: ModelsFile, refused: CpuPlanRefused) -> ConfigError:
    """The refusal as a file problem: ``source:line: models[i].cpus: …`` (the line read back
    from ``source`` when it is the models file on disk)."""
    return problems_error(
        source, [(_where(models, refused), str(refused))], models_document(source)
    )


def _where(models: ModelsFile, refused: CpuPlanRefused) -> str:
    name = (refused.unit or "").split("#", 1)[0]
    for index, model in enumerate(models.models):
        if model.name == name:
            return f"models[{index}]" + (".cpus" if refused.pin else "")
    pinned = [i for i, m in enumerate(models.models) if m.cpus is not None]
    return f"models[{pinned[0]}].cpus" if pinned else "models"
