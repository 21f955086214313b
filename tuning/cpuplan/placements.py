"""The CPU plan applied to a GPU plan: each placement's ``cpu_list`` becomes its unit's own
cores (:func:`tuning.cpuplan.plan.plan_cpus`), and the plan records the housekeeping CPUs."""

from __future__ import annotations

import dataclasses

from tuning.core.cpu import CpuTopology
from tuning.core.plan import Plan
from tuning.core.rig import RigSnapshot
from tuning.cpuplan.plan import CpuPlan, CpuPlanRefused, CpuUnit, plan_cpus
from tuning.cpuplan.rules import CpuRules


def placement_label(model: str, replica: int) -> str:
    """How a placement is named in the CPU plan: ``model`` or ``model#replica``."""
    return model if replica == 0 else f"{model}#{replica}"


def with_cpu_plan(
    plan: Plan, snapshot: RigSnapshot, topo: CpuTopology, rules: CpuRules | None = None
) -> tuple[Plan, CpuPlan]:
    """``plan`` with every placement's ``cpu_list`` replaced by its unit's CPUs, and
    ``housekeeping_cpus`` set; the :class:`CpuPlan` beside it.

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
                    "enable NUMA reporting in the BIOS (ACPI SRAT) or plan with a rig file"
                )
            if node not in nodes:
                raise CpuPlanRefused(
                    f"model {placement.model!r}: GPU {uuid} is on NUMA node {node}, which the "
                    f"CPU topology lacks (nodes {sorted(nodes)}); the topology is not this rig's"
                )
    units = [
        CpuUnit(placement_label(p.model, p.replica), p.engine, p.gpus) for p in plan.placements
    ]
    cpu_plan = plan_cpus(topo, gpu_nodes, units, rules)
    placements = tuple(
        dataclasses.replace(p, cpu_list=share.cpus)
        for p, share in zip(plan.placements, cpu_plan.units, strict=True)
    )
    return (
        dataclasses.replace(
            plan, placements=placements, housekeeping_cpus=cpu_plan.housekeeping_cpus
        ),
        cpu_plan,
    )
