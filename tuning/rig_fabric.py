"""The fabric of a live rig, and how ``rigforge inspect`` shows it.

:func:`fabric_of_rig` builds the :class:`~tuning.fabric.graph.Fabric` of a simulated rig from
its rig file (or, for a rig without a ``fabric:`` section and for real GPUs, the simplest
fabric its GPUs allow: each on a root port of its own, NUMA node = socket).
:func:`fabric_json` is the ``fabric`` object of ``rigforge inspect --json``; :func:`tree_lines`
and :func:`budget_lines` are its text.
"""

from __future__ import annotations

from typing import Any

from tuning.backends.base import Rig
from tuning.fabric.graph import Fabric, GpuPort, NodeKind, build_fabric


def fabric_of_rig(rig: Rig) -> Fabric:
    """The fabric the rig is: its rig file's ``fabric:`` for a simulated rig, else derived."""
    from tuning.backends.sim import SimRig

    if isinstance(rig, SimRig):
        ports = []
        for gpu, spec in zip(rig.gpus, rig.spec.gpus, strict=True):
            ports.append(
                GpuPort(
                    index=gpu.index,
                    uuid=gpu.uuid,
                    name=gpu.name,
                    preset=gpu.preset_key,
                    max_gen=gpu.preset.pcie.gen,
                    max_width=gpu.preset.pcie.width,
                    negotiated=(spec.pcie.gen, spec.pcie.width) if spec.pcie else None,
                    numa_node=spec.numa_node,
                )
            )
        return build_fabric(rig.spec.fabric, ports)
    derived: list[GpuPort] = []
    for live in rig.gpus:
        link = gpu.pcie_link()
        max_gen = link.gen_max or link.gen_current or 1
        max_width = link.width_max or link.width_current or 1
        negotiated = (
            (link.gen_current, link.width_current)
            if link.gen_current is not None and link.width_current is not None
            else None
        )
        derived.append(
            GpuPort(
                index=live.index,
                uuid=live.uuid,
                name=live.name,
                preset=None,
                max_gen=max_gen,
                max_width=max_width,
                negotiated=negotiated,
                numa_node=live.numa_node(),
            )
        )
    return build_fabric(None, derived)


def described_fabric(rig: Rig) -> Fabric | None:
    """The fabric a rig file describes, ``None`` when nothing describes one (real GPUs, a
    rig file without ``fabric:``): ``inspect`` never shows an invented fabric."""
    from tuning.backends.sim import SimRig

    if isinstance(rig, SimRig) and rig.spec.fabric is not None:
        return fabric_of_rig(rig)
    return None


def fabric_json(fabric: Fabric) -> dict[str, Any]:
    """The ``fabric`` object of ``inspect --json``: the tree (one entry per node, parent
    first) and the lane budget."""
    budget = fabric.lane_budget()
    return {
        "described": fabric.described,
        "nodes": [
            {
                "name": n.name,
                "kind": n.kind.value,
                "parent": n.parent,
                "port": n.port,
                "gen": n.gen,
                "width": n.width,
                "max_gen": n.max_gen,
                "max_width": n.max_width,
                "root_complex": n.root_complex,
                "riser": n.riser,
            }
            for n in fabric.nodes
        ],
        "lanes": {
            **budget.to_json(),
            "wired": budget.wired,
            "stranded": budget.stranded,
            "devices": [
                {"node": node, "lanes": lanes, "port_lanes": port}
                for node, lanes, port in budget.devices
            ],
            "shared_uplinks": [
                {"uplink": up, "behind": list(behind)} for up, behind in budget.shared_uplinks
            ],
        },
        "sockets": [
            {
                "name": s.name,
                "pcie_lanes": s.pcie_lanes,
                "memory_bw_gbps": s.memory_bw_gbps,
            }
            for s in fabric.spec.sockets
        ],
        "nvlink": [
            {"a": nv.a, "b": nv.b, "links": nv.links, "gbps_per_link": nv.gbps_per_link}
            for nv in fabric.spec.nvlink
        ],
    }


def tree_lines(fabric: Fabric) -> list[str]:
    """The fabric as indented text: socket → root port → switch/chipset → device."""
    lines: list[str] = []
    order = {p.name: i for s in fabric.spec.sockets for i, p in enumerate(s.root_ports)}

    def walk(name: str, depth: int) -> None:
        children = sorted(fabric.children(name), key=lambda n: order.get(n.port or "", -1))
        for child in children:
            link = f"gen {child.gen} x{child.width}"
            maximum = (
                f" (max gen {child.max_gen} x{child.max_width})"
                if (child.max_gen, child.max_width) != (child.gen, child.width)
                and child.max_gen is not None
                else ""
            )
            riser = f", riser {child.riser}" if child.riser else ""
            what = child.label or child.name
            lines.append(f"{'  ' * depth}{child.port} ─ {what}: {link}{maximum}{riser}")
            if child.kind in (NodeKind.SWITCH, NodeKind.CHIPSET):
                walk(child.name, depth + 1)

    for s, socket in enumerate(fabric.spec.sockets):
        lines.append(
            f"{socket.name}: {socket.pcie_lanes} PCIe lanes, host memory "
            f"{socket.memory_bw_gbps:g} GB/s"
            + ("" if fabric.described else " (not described: no limit)")
        )
        walk(fabric.socket_name(s), 1)
    if fabric.spec.inter_socket is not None:
        xs = fabric.spec.inter_socket
        lines.append(f"{xs.name}: {xs.bw_gbps:g} GB/s each way")
    for nv in fabric.spec.nvlink:
        lines.append(f"NVLink GPU {nv.a} ↔ GPU {nv.b}: {nv.links} × {nv.gbps_per_link:g} GB/s")
    return lines


def budget_lines(fabric: Fabric) -> list[str]:
    """The lane budget under the tree: used / total, stranded lanes, shared uplinks."""
    b = fabric.lane_budget()
    lines = [f"Lanes: {b.used} used / {b.total} ({b.free} free)"]
    if b.stranded:
        lines.append(
            f"  {b.stranded} lanes wired to populated ports but not trained "
            "(a device below its port's width)"
        )
    for uplink, behind in b.shared_uplinks:
        lines.append(f"  behind the {uplink} uplink, sharing it: {', '.join(behind)}")
    return lines
