"""The fabric as a tree of links: what each GPU negotiated, the lane budget, the paths.

:func:`build_fabric` turns a :class:`~tuning.fabric.schema.FabricSpec` and the rig's GPUs into
a :class:`Fabric`: nodes (sockets, switches, the chipset, GPUs, NVMe drives, NICs), each with
the link to its parent (gen, width negotiated, what it carries per direction), the inter-socket
link and NVLink bridges. A rig file without a ``fabric:`` section gets
:func:`default_fabric_spec`: one socket per NUMA node, every GPU on a root port of its own at
the card's link, host memory not a limit — the simplest box its GPU list allows.
Units: GB/s per direction, lanes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from tuning.fabric.params import load_params
from tuning.fabric.schema import (
    FabricSpec,
    GpuAttachSpec,
    InterSocketSpec,
    RootPortSpec,
    SocketSpec,
)

#: Host memory of a fabric the rig file does not describe: far above any PCIe load, so it
#: never binds (the rig says nothing about it). Units: GB/s.
UNDESCRIBED_MEMORY_GBPS = 10_000.0


class NodeKind(StrEnum):
    SOCKET = "socket"
    SWITCH = "switch"
    CHIPSET = "chipset"
    GPU = "gpu"
    NVME = "nvme"
    NIC = "nic"


@dataclass(frozen=True)
class GpuPort:
    """What the fabric needs to know of one GPU of the rig.

    ``max_gen``/``max_width``: the card's link; ``negotiated``: what the rig file says it
    trained at under load (``gpus[i].pcie``), ``None`` when it trained at what the path allows.
    """

    index: int
    uuid: str
    name: str
    preset: str | None
    max_gen: int
    max_width: int
    negotiated: tuple[int, int] | None = None
    numa_node: int | None = None


@dataclass(frozen=True)
class Node:
    """One thing in the tree. ``parent``: the node above (``None`` for a socket);
    ``port``: the CPU root port (or switch/chipset) name it plugs into; ``gen``/``width``: the
    link to its parent as negotiated (the lesser of both ends and any riser)."""

    name: str
    kind: NodeKind
    socket: int
    parent: str | None
    port: str | None
    gen: int | None = None
    width: int | None = None
    max_gen: int | None = None
    max_width: int | None = None
    root_complex: str | None = None
    riser: str | None = None
    label: str = ""

    @property
    def link_name(self) -> str:
        """The link to the parent, as a person names it (the port, or "<switch> uplink")."""
        if self.kind in (NodeKind.SWITCH, NodeKind.CHIPSET):
            return f"{self.name} uplink ({self.port})" if self.port else f"{self.name} uplink"
        return f"{self.port} → {self.label or self.name}"


@dataclass(frozen=True)
class LaneBudget:
    """CPU lanes: what the sockets have, what directly attached devices negotiated, what is left.

    ``used`` counts the negotiated width of everything on a CPU root port (GPUs, drives,
    switch and chipset uplinks); ``stranded`` the lanes wired to a populated port that its
    device did not train (a riser at x8 in an x16 slot strands 8).
    """

    total: int
    used: int
    wired: int
    stranded: int
    devices: tuple[tuple[str, int, int], ...]  # (node, negotiated lanes, port lanes)
    shared_uplinks: tuple[tuple[str, tuple[str, ...]], ...]  # (uplink node, nodes behind it)

    @property
    def free(self) -> int:
        return self.total - self.used

    def to_json(self) -> dict[str, int]:
        """The ``lanes`` object of ``rigforge links --json``."""
        return {"total": self.total, "used": self.used, "free": self.free}


@dataclass(frozen=True)
class Fabric:
    """A built fabric (see the module docstring). GPU nodes are named ``gpu<index>``."""

    spec: FabricSpec
    nodes: tuple[Node, ...]
    gpus: tuple[GpuPort, ...]
    described: bool = True

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def gpu_node(self, index: int) -> Node:
        return self.node(gpu_node_name(index))

    def children(self, name: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.parent == name)

    def chain(self, name: str) -> tuple[Node, ...]:
        """The node and every node above it up to (not including) its socket."""
        out: list[Node] = []
        node = self.node(name)
        while node.kind is not NodeKind.SOCKET:
            out.append(node)
            assert node.parent is not None
            node = self.node(node.parent)
        return tuple(out)

    def socket_name(self, index: int) -> str:
        return self.spec.sockets[index].name

    def nvlink(self, a: int, b: int) -> tuple[int, float] | None:
        """``(links, GB/s per link)`` of a bridge between GPUs a and b, or ``None``."""
        for nv in self.spec.nvlink:
            if {nv.a, nv.b} == {a, b}:
                return nv.links, nv.gbps_per_link
        return None

    def gpu_p2p_capable(self, index: int) -> bool:
        attach = _attach(self.spec, index)
        if attach is not None and attach.p2p is not None:
            return attach.p2p
        preset = self.gpus[index].preset
        return bool(load_params().pcie_p2p.get(preset or "", False))

    def behind_chipset(self, index: int) -> bool:
        return any(n.kind is NodeKind.CHIPSET for n in self.chain(gpu_node_name(index)))

    def shared_uplink(self, index: int) -> Node | None:
        """The switch or chipset uplink this GPU shares with other devices, if any."""
        for node in self.chain(gpu_node_name(index))[1:]:
            if (
                node.kind in (NodeKind.SWITCH, NodeKind.CHIPSET)
                and len(_leaves(self, node.name)) > 1
            ):
                return node
        return None

    def lane_budget(self) -> LaneBudget:
        total = sum(s.pcie_lanes for s in self.spec.sockets)
        port_width = {p.name: p.width for s in self.spec.sockets for p in s.root_ports}
        devices = []
        used = wired = 0
        for node in self.nodes:
            if node.parent is not None and self.node(node.parent).kind is NodeKind.SOCKET:
                lanes = node.width or 0
                devices.append((node.name, lanes, port_width.get(node.port or "", lanes)))
                used += lanes
                wired += port_width.get(node.port or "", lanes)
        shared = tuple(
            (n.name, _leaves(self, n.name))
            for n in self.nodes
            if n.kind in (NodeKind.SWITCH, NodeKind.CHIPSET) and len(_leaves(self, n.name)) > 1
        )
        return LaneBudget(
            total=total,
            used=used,
            wired=wired,
            stranded=wired - used,
            devices=tuple(devices),
            shared_uplinks=shared,
        )


def gpu_node_name(index: int) -> str:
    return f"gpu{index}"


def _attach(spec: FabricSpec, index: int) -> GpuAttachSpec | None:
    for g in spec.gpus:
        if g.gpu == index:
            return g
    return None


def _leaves(fabric: Fabric, name: str) -> tuple[str, ...]:
    out: list[str] = []
    for child in fabric.children(name):
        if child.kind in (NodeKind.SWITCH, NodeKind.CHIPSET):
            out.extend(_leaves(fabric, child.name))
        else:
            out.append(child.name)
    return tuple(out)


def default_fabric_spec(gpus: Sequence[GpuPort]) -> FabricSpec:
    """One socket per NUMA node, each GPU on its own root port at the card's link."""
    nodes = sorted({g.numa_node or 0 for g in gpus})
    sockets = []
    for node in nodes:
        mine = [g for g in gpus if (g.numa_node or 0) == node]
        ports = [
            RootPortSpec(name=f"port{g.index}", gen=g.max_gen, width=_width(g.max_width))
            for g in mine
        ]
        sockets.append(
            SocketSpec(
                name=f"cpu{node}",
                numa_node=node,
                pcie_lanes=max(1, sum(p.width for p in ports)),
                memory_bw_gbps=UNDESCRIBED_MEMORY_GBPS,
                root_ports=ports,
            )
        )
    return FabricSpec(
        sockets=sockets,
        inter_socket=InterSocketSpec(bw_gbps=UNDESCRIBED_MEMORY_GBPS) if len(sockets) > 1 else None,
        gpus=[GpuAttachSpec(gpu=g.index, at=f"port{g.index}") for g in gpus],
    )


def _width(width: int) -> int:
    for w in (16, 8, 4, 2, 1):
        if width >= w:
            return w
    return 1


def build_fabric(spec: FabricSpec | None, gpus: Sequence[GpuPort]) -> Fabric:
    """Build the tree; ``spec`` ``None`` → :func:`default_fabric_spec` (``described`` False).

    The spec must have passed :func:`~tuning.fabric.schema.check_fabric` (the rig loader
    runs it), so every name resolves.
    """
    described = spec is not None
    if spec is None:
        spec = default_fabric_spec(gpus)
    nodes: list[Node] = []
    where: dict[str, tuple[int, int, int, str | None, str]] = {}
    # name -> (socket, gen, width, root complex, parent node) of each attach point
    for s, socket in enumerate(spec.sockets):
        nodes.append(Node(name=socket.name, kind=NodeKind.SOCKET, socket=s, parent=None, port=None))
        for port in socket.root_ports:
            where[port.name] = (
                s,
                port.gen,
                port.width,
                port.root_complex or port.name,
                socket.name,
            )

    def resolve(at: str) -> tuple[int, int, int, str | None, str, str]:
        """(socket, gen, width, root complex, parent node, port label) of an attach point."""
        if at in where:
            s, gen, width, rc, parent = where[at]
            return s, gen, width, rc, parent, at
        # a switch or the chipset: its downstream side runs at its own gen; width per device
        up = next((n for n in nodes if n.name == at), None)
        if up is None:
            raise KeyError(at)
        return up.socket, up.max_gen or 6, 16, up.root_complex, up.name, at

    def bridge(name: str, kind: NodeKind, uplink: str, max_gen: int, max_width: int) -> Node:
        """A switch or the chipset below ``uplink``: it trains at the lower of its own and its
        uplink's gen and width."""
        s, gen, width, rc, parent, at_port = resolve(uplink)
        return Node(
            name=name,
            kind=kind,
            socket=s,
            parent=parent,
            port=at_port,
            gen=min(gen, max_gen),
            width=min(width, max_width),
            max_gen=max_gen,
            max_width=max_width,
            root_complex=rc,
            label=f"{kind.value} {name}",
        )

    pending = list(spec.switches)
    while pending:  # switches may hang off switches: place each once its uplink exists
        progressed = False
        for sw in list(pending):
            if sw.uplink in where or any(n.name == sw.uplink for n in nodes):
                nodes.append(bridge(sw.name, NodeKind.SWITCH, sw.uplink, sw.gen, sw.width))
                pending.remove(sw)
                progressed = True
        if not progressed:
            raise ValueError("switch uplinks do not resolve; run check_fabric first")
    if spec.chipset is not None:
        c = spec.chipset
        nodes.append(bridge(c.name, NodeKind.CHIPSET, c.uplink, c.gen, c.width))
    risers = {r.name: r for r in spec.risers}
    for attach in spec.gpus:
        g = gpus[attach.gpu]
        s, gen, width, rc, parent, at_port = resolve(attach.at)
        gen, width = min(gen, g.max_gen), min(width, g.max_width)
        if attach.riser is not None:
            riser = risers[attach.riser]
            gen, width = min(gen, riser.gen), min(width, riser.width)
        if g.negotiated is not None:
            gen, width = min(gen, g.negotiated[0]), min(width, g.negotiated[1])
        nodes.append(
            Node(
                name=gpu_node_name(g.index),
                kind=NodeKind.GPU,
                socket=s,
                parent=parent,
                port=at_port,
                gen=gen,
                width=width,
                max_gen=g.max_gen,
                max_width=g.max_width,
                root_complex=rc,
                riser=attach.riser,
                label=f"GPU {g.index} {g.name}",
            )
        )
    for dev in spec.devices:
        s, gen, width, rc, parent, at_port = resolve(dev.at)
        nodes.append(
            Node(
                name=dev.name,
                kind=NodeKind(dev.kind),
                socket=s,
                parent=parent,
                port=at_port,
                gen=min(gen, dev.gen),
                width=min(width, dev.width),
                max_gen=dev.gen,
                max_width=dev.width,
                root_complex=rc,
                label=f"{dev.kind.upper()} {dev.name}",
            )
        )
    ordered = tuple(sorted(nodes, key=lambda n: (n.kind is not NodeKind.SOCKET, 0)))
    return Fabric(spec=spec, nodes=ordered, gpus=tuple(gpus), described=described)
