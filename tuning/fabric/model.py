"""Bandwidth and latency of transfers over a :class:`~tuning.fabric.graph.Fabric`.

The model, for a set of transfers running at the same time:

* **Resources.** Every PCIe link, each direction separately, carries ``raw × link_efficiency``
  bytes on the wire per second; a transfer's payload costs ``(payload + TLP overhead) /
  payload`` wire bytes per byte — max-payload-sized posted writes for D2H copies and peer
  writes, completion-sized TLPs for DMA reads (H2D copies, peer reads) — see ``pcie.yaml``.
  Each socket's host memory is one pool (reads and writes share it); the inter-socket link
  has an aggregate per direction and an optional per-transfer ceiling; an NVLink bridge
  carries ``links × per-link rate × nvlink_efficiency`` each way.
* **Sharing.** Transfers share every resource they cross max-min fairly (progressive
  filling: all rates rise together; a transfer stops rising when a resource it crosses is
  full or it reaches its own ceiling).
* **Peer or staged.** GPU-to-GPU goes over NVLink where bridged, peer-to-peer over PCIe where
  the platform allows it (both cards' drivers allow it; the common switch allows it, or the
  root complex — and for two sockets the inter-socket link — forwards it; never through a
  chipset), else **staged** through host memory: a D2H copy into a bounce buffer on the
  source's socket, then an H2D copy out of it — two copies one after the other, so the
  transfer runs at ``1 / (1/leg₁ + 1/leg₂)`` and crosses host memory twice.
* **Write collapse.** On a socket whose I/O die collapses posted writes
  (``write_collapse``), peer writes leaving one switch for ≥ N different root complexes at
  once each run at the collapsed rate; reads are unaffected.
* **Latency.** A peer write costs the GPU's base plus every hop (switch, root complex,
  inter-socket, NVLink); a staged copy adds the set-up of two driver copies.

Units: GB/s (10^9 B/s) per direction, µs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from tuning.fabric.graph import Fabric, Node, NodeKind, gpu_node_name
from tuning.fabric.params import load_params, raw_gbps

Resource = Hashable
Usage = dict[Resource, float]


class P2pMode(StrEnum):
    """How one GPU reaches another: a bridge, PCIe peer-to-peer, or through host memory."""

    NVLINK = "nvlink"
    PEER = "peer"
    STAGED = "staged"


@dataclass(frozen=True)
class Transfer:
    """One copy that runs while the others do.

    ``kind``: ``h2d``/``d2h`` (GPU ``gpu`` and pinned host memory on socket ``host_socket``,
    default the GPU's own), ``p2p`` (GPU ``src`` to GPU ``dst``; ``op`` ``write``: the source
    pushes, ``read``: the destination pulls), ``device`` (NVMe/NIC ``device`` moving its
    ``traffic_gbps`` to or from host memory).
    """

    kind: Literal["h2d", "d2h", "p2p", "device"]
    gpu: int | None = None
    src: int | None = None
    dst: int | None = None
    op: Literal["write", "read"] = "write"
    host_socket: int | None = None
    device: str | None = None
    to_host: bool = True


def _write_weight(fabric: Fabric) -> float:
    p = load_params()
    mps = fabric.spec.max_payload_b
    return (mps + p.write_tlp_overhead_b) / mps


def _read_weight(fabric: Fabric) -> float:
    p = load_params()
    rcb = fabric.spec.read_completion_b
    return (rcb + p.completion_tlp_overhead_b) / rcb


def capacities(fabric: Fabric) -> dict[Resource, float]:
    """Every resource of the fabric and what it carries. Units: GB/s (wire bytes for links)."""
    p = load_params()
    caps: dict[Resource, float] = {}
    for s, socket in enumerate(fabric.spec.sockets):
        caps[("mem", s)] = socket.memory_bw_gbps
    for node in fabric.nodes:
        if node.kind is NodeKind.SOCKET or node.gen is None or node.width is None:
            continue
        wire = raw_gbps(node.gen, node.width) * p.link_efficiency
        caps[("link", node.name, "up")] = wire
        caps[("link", node.name, "down")] = wire
    n = len(fabric.spec.sockets)
    if fabric.spec.inter_socket is not None:
        for a in range(n):
            for b in range(n):
                if a != b:
                    caps[("xs", a, b)] = fabric.spec.inter_socket.bw_gbps
    for nv in fabric.spec.nvlink:
        rate = nv.links * nv.gbps_per_link * p.nvlink_efficiency
        caps[("nv", nv.a, nv.b)] = rate
        caps[("nv", nv.b, nv.a)] = rate
    return caps


def _up(fabric: Fabric, name: str, weight: float, stop: str | None = None) -> Usage:
    usage: Usage = {}
    for node in fabric.chain(name):
        if node.name == stop:
            break
        usage[("link", node.name, "up")] = weight
    return usage


def _down(fabric: Fabric, name: str, weight: float, stop: str | None = None) -> Usage:
    usage: Usage = {}
    for node in fabric.chain(name):
        if node.name == stop:
            break
        usage[("link", node.name, "down")] = weight
    return usage


def _common_switch(fabric: Fabric, a: str, b: str) -> Node | None:
    """The lowest switch or chipset both nodes hang below, ``None`` when they meet higher."""
    above_b = {n.name for n in fabric.chain(b)[1:]}
    for node in fabric.chain(a)[1:]:
        if node.name in above_b:
            return node
    return None


def p2p_mode(fabric: Fabric, a: int, b: int) -> P2pMode:
    """How GPU ``a`` reaches GPU ``b`` on this platform (see the module docstring)."""
    if fabric.nvlink(a, b) is not None:
        return P2pMode.NVLINK
    if not (fabric.gpu_p2p_capable(a) and fabric.gpu_p2p_capable(b)):
        return P2pMode.STAGED
    na, nb = gpu_node_name(a), gpu_node_name(b)
    common = _common_switch(fabric, na, nb)
    if common is not None:
        ok = (
            common.kind is NodeKind.SWITCH
            and fabric.spec.switches[_switch_index(fabric, common.name)].p2p
        )
        return P2pMode.PEER if ok else P2pMode.STAGED
    if fabric.behind_chipset(a) or fabric.behind_chipset(b):
        return P2pMode.STAGED
    sa, sb = fabric.gpu_node(a).socket, fabric.gpu_node(b).socket
    sockets = fabric.spec.sockets
    if not (sockets[sa].p2p_through_root and sockets[sb].p2p_through_root):
        return P2pMode.STAGED
    if sa != sb and not (fabric.spec.inter_socket is not None and fabric.spec.inter_socket.p2p):
        return P2pMode.STAGED
    return P2pMode.PEER


def _switch_index(fabric: Fabric, name: str) -> int:
    return next(i for i, sw in enumerate(fabric.spec.switches) if sw.name == name)


def _host_socket(fabric: Fabric, t: Transfer, gpu: int) -> int:
    return fabric.gpu_node(gpu).socket if t.host_socket is None else t.host_socket


def _add(total: Usage, part: Usage) -> None:
    for key, weight in part.items():
        total[key] = total.get(key, 0.0) + weight


def _h2d(fabric: Fabric, gpu: int, host: int) -> Usage:
    usage: Usage = {("mem", host): 1.0}
    s = fabric.gpu_node(gpu).socket
    if s != host:
        usage[("xs", host, s)] = 1.0
    _add(usage, _down(fabric, gpu_node_name(gpu), _read_weight(fabric)))
    return usage


def _d2h(fabric: Fabric, gpu: int, host: int) -> Usage:
    usage = _up(fabric, gpu_node_name(gpu), _write_weight(fabric))
    s = fabric.gpu_node(gpu).socket
    if s != host:
        usage[("xs", s, host)] = 1.0
    usage[("mem", host)] = usage.get(("mem", host), 0.0) + 1.0
    return usage


def _peer(fabric: Fabric, a: int, b: int, op: str) -> Usage:
    weight = _write_weight(fabric) if op == "write" else _read_weight(fabric)
    na, nb = gpu_node_name(a), gpu_node_name(b)
    common = _common_switch(fabric, na, nb)
    stop = common.name if common is not None else None
    usage = _up(fabric, na, weight, stop)
    _add(usage, _down(fabric, nb, weight, stop))
    if common is None:
        sa, sb = fabric.gpu_node(a).socket, fabric.gpu_node(b).socket
        if sa != sb:
            usage[("xs", sa, sb)] = 1.0
    return usage


def _alone(usage: Usage, caps: dict[Resource, float]) -> float:
    return min(caps[r] / w for r, w in usage.items() if w > 0)


def usage_of(fabric: Fabric, t: Transfer, caps: dict[Resource, float]) -> tuple[Usage, float]:
    """The resources a transfer crosses (wire bytes per payload byte) and its own ceiling."""
    ceiling = math.inf
    xs = fabric.spec.inter_socket
    if t.kind in ("h2d", "d2h"):
        assert t.gpu is not None
        host = _host_socket(fabric, t, t.gpu)
        usage = _h2d(fabric, t.gpu, host) if t.kind == "h2d" else _d2h(fabric, t.gpu, host)
    elif t.kind == "p2p":
        assert t.src is not None
        assert t.dst is not None
        mode = p2p_mode(fabric, t.src, t.dst)
        if mode is P2pMode.NVLINK:
            usage = {("nv", t.src, t.dst): 1.0}
        elif mode is P2pMode.PEER:
            usage = _peer(fabric, t.src, t.dst, t.op)
        else:
            bounce = fabric.gpu_node(t.src).socket
            leg1, leg2 = _d2h(fabric, t.src, bounce), _h2d(fabric, t.dst, bounce)
            ceiling = 1.0 / (1.0 / _alone(leg1, caps) + 1.0 / _alone(leg2, caps))
            usage = dict(leg1)
            _add(usage, leg2)
    else:
        assert t.device is not None
        node = fabric.node(t.device)
        dev = next(d for d in fabric.spec.devices if d.name == t.device)
        ceiling = dev.traffic_gbps
        if t.to_host:
            usage = _up(fabric, node.name, _write_weight(fabric))
        else:
            usage = _down(fabric, node.name, _read_weight(fabric))
        usage[("mem", node.socket)] = 1.0
    if (
        xs is not None
        and xs.per_flow_gbps is not None
        and any(isinstance(r, tuple) and r[0] == "xs" for r in usage)
    ):
        ceiling = min(ceiling, xs.per_flow_gbps)
    return usage, ceiling


def collapsed(fabric: Fabric, transfers: Sequence[Transfer]) -> dict[int, float]:
    """Index → collapsed ceiling (GB/s) of each peer write caught by a socket's write collapse.

    A group is the peer writes leaving one top-level switch (the one on the root port) and
    crossing its root complex; it collapses when it reaches at least
    ``min_destination_roots`` different destination root complexes.
    """
    groups: dict[str, list[tuple[int, str | None]]] = {}
    for i, t in enumerate(transfers):
        if t.kind != "p2p" or t.op != "write" or t.src is None or t.dst is None:
            continue
        if p2p_mode(fabric, t.src, t.dst) is not P2pMode.PEER:
            continue
        na, nb = gpu_node_name(t.src), gpu_node_name(t.dst)
        if _common_switch(fabric, na, nb) is not None:
            continue  # stays inside a switch: never reaches the I/O die
        switches = [n for n in fabric.chain(na) if n.kind is NodeKind.SWITCH]
        if not switches:
            continue
        groups.setdefault(switches[-1].name, []).append((i, fabric.gpu_node(t.dst).root_complex))
    out: dict[int, float] = {}
    for name, flows in groups.items():
        rule = fabric.spec.sockets[fabric.node(name).socket].write_collapse
        if rule is None or len(flows) < 2:
            continue
        if len({root for _, root in flows}) >= rule.min_destination_roots:
            for i, _ in flows:
                out[i] = rule.per_flow_gbps
    return out


def max_min_fair(
    caps: dict[Resource, float], usages: Sequence[Usage], ceilings: Sequence[float]
) -> list[float]:
    """Progressive filling: every active rate rises at once until a resource it crosses is
    full (``Σ rate × weight = capacity``) or it reaches its ceiling. Units: GB/s."""
    n = len(usages)
    rates = [0.0] * n
    remaining = {r: caps[r] for u in usages for r in u}
    active = {i for i in range(n) if ceilings[i] > 0}
    while active:
        step = math.inf
        for r, left in remaining.items():
            weight = sum(usages[i].get(r, 0.0) for i in active)
            if weight > 0:
                step = min(step, left / weight)
        for i in active:
            step = min(step, ceilings[i] - rates[i])
        if not math.isfinite(step):
            raise ValueError("a transfer crosses no finite resource")
        step = max(step, 0.0)
        for i in active:
            rates[i] += step
            for r, w in usages[i].items():
                remaining[r] -= step * w
        full = {r for r, left in remaining.items() if left <= 1e-9 * max(caps[r], 1.0)}
        done = {
            i
            for i in active
            if (
                math.isfinite(ceilings[i])
                and ceilings[i] - rates[i] <= 1e-9 * max(ceilings[i], 1.0)
            )
            or full & usages[i].keys()
        }
        if not done:
            break
        active -= done
    return rates


def solve(fabric: Fabric, transfers: Sequence[Transfer]) -> list[float]:
    """The rate of each transfer while all of them run. Units: GB/s of payload."""
    caps = capacities(fabric)
    usages: list[Usage] = []
    ceilings: list[float] = []
    for t in transfers:
        usage, ceiling = usage_of(fabric, t, caps)
        usages.append(usage)
        ceilings.append(ceiling)
    for i, ceiling in collapsed(fabric, transfers).items():
        ceilings[i] = min(ceilings[i], ceiling)
    return max_min_fair(caps, usages, ceilings)


def alone_gbps(fabric: Fabric, transfer: Transfer) -> float:
    """The rate of one transfer on an otherwise idle fabric. Units: GB/s."""
    return solve(fabric, [transfer])[0]


def expected_h2d_gbps(fabric: Fabric, gpu: int) -> float:
    """What the GPU's negotiated link alone should carry host-to-device (its DMA reads).

    The link's own figure, before host memory or anything upstream. Units: GB/s.
    """
    node = fabric.gpu_node(gpu)
    assert node.gen is not None
    assert node.width is not None
    p = load_params()
    return raw_gbps(node.gen, node.width) * p.link_efficiency / _read_weight(fabric)


def latency_us(fabric: Fabric, a: int, b: int) -> float:
    """One small write from GPU ``a`` to GPU ``b`` becoming visible there. Units: µs."""
    lat = load_params().latency
    mode = p2p_mode(fabric, a, b)
    if mode is P2pMode.NVLINK:
        return lat.gpu_peer_base_us + lat.nvlink_hop_us
    na, nb = gpu_node_name(a), gpu_node_name(b)
    if mode is P2pMode.PEER:
        return lat.gpu_peer_base_us + _hops_us(fabric, na, nb)
    bounce = fabric.gpu_node(a).socket
    legs = _to_socket_us(fabric, na) + _to_socket_us(fabric, nb)
    if fabric.gpu_node(b).socket != bounce:
        legs += lat.inter_socket_hop_us
    return 2 * lat.staged_copy_setup_us + lat.gpu_peer_base_us + legs


def _to_socket_us(fabric: Fabric, name: str) -> float:
    lat = load_params().latency
    switches = sum(1 for n in fabric.chain(name) if n.kind in (NodeKind.SWITCH, NodeKind.CHIPSET))
    return switches * lat.switch_hop_us + lat.root_complex_hop_us


def _hops_us(fabric: Fabric, na: str, nb: str) -> float:
    lat = load_params().latency
    common = _common_switch(fabric, na, nb)
    if common is not None:
        below = {n.name for n in fabric.chain(na)} | {n.name for n in fabric.chain(nb)}
        above = {n.name for n in fabric.chain(common.name)}
        crossed = [n for n in fabric.nodes if n.name in below - above and n.kind is NodeKind.SWITCH]
        return (len(crossed) + 1) * lat.switch_hop_us
    us = _to_socket_us(fabric, na) + _to_socket_us(fabric, nb) - lat.root_complex_hop_us
    if fabric.node(na).socket != fabric.node(nb).socket:
        us += lat.inter_socket_hop_us
    return us
