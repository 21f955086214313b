"""The ``fabric:`` section of a rig file: what carries bytes between host memory and GPUs.

A fabric is a tree per socket: the socket's host memory and root complex, its CPU root ports
(gen, width), and below them GPUs, PCIe switches (uplink + downstream ports), the chipset (a
narrow uplink with slots behind it), NVMe drives and NICs; risers sit between a port and a
GPU and cap the generation it trains at. Sockets are joined by an inter-socket link; NVLink
bridges join GPU pairs directly. Example (the reference rig carries a complete one)::

    fabric:
      sockets:
        - name: cpu0
          pcie_lanes: 128
          memory_bw_gbps: 184
          root_ports:
            - {name: SLOT1, gen: 4, width: 16}
            - {name: M2_1, gen: 4, width: 4}
      gpus:
        - {gpu: 0, at: SLOT1}
      devices:
        - {name: nvme0, kind: nvme, at: M2_1, gen: 4, width: 4, traffic_gbps: 7.0}

Every name is unique across the fabric (a port, switch, chipset, riser or device); ``at`` and
``uplink`` name where a thing plugs in. :func:`check_fabric` reports every inconsistency with
its YAML path (``fabric.gpus[2].at: …``) the way the rest of the rig file is checked.
Units: ``_gbps`` GB/s (10^9 bytes per second, per direction), ``_us`` microseconds, ``_b`` bytes.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PcieWidth = Literal[1, 2, 4, 8, 16]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RootPortSpec(_Strict):
    """A CPU root port: the lanes a slot, M.2 socket or switch/chipset uplink gets.

    ``root_complex``: the host bridge it hangs off (nvidia-smi's PHB vs NODE; AMD's NBIO
    quadrant, one ``pci0000:XX`` bus each); ports without one each count as their own.
    """

    name: str
    gen: int = Field(ge=1, le=6)
    width: PcieWidth
    root_complex: str | None = None


class WriteCollapseSpec(_Strict):
    """Posted-write collapse of a socket's I/O die (rtx6kpro ``hardware/collapse-report.md``).

    When P2P *writes* leaving one PCIe switch go, at the same time, to GPUs behind at least
    ``min_destination_roots`` different root complexes, each such flow drops to
    ``per_flow_gbps``. Reads are unaffected.
    """

    min_destination_roots: int = Field(default=2, ge=2)
    per_flow_gbps: float = Field(gt=0)


class SocketSpec(_Strict):
    """One CPU socket: its PCIe lanes, root ports and host memory.

    ``memory_bw_gbps``: sustained host-memory bandwidth of the socket (DMA reads and writes
    share it). ``p2p_through_root``: whether the root complex forwards peer traffic between
    its ports (AMD and recent Intel do; many older platforms do not).
    """

    name: str
    numa_node: int | None = Field(default=None, ge=0)
    pcie_lanes: int = Field(gt=0, le=1024)
    memory_bw_gbps: float = Field(gt=0)
    root_ports: list[RootPortSpec] = Field(min_length=1)
    p2p_through_root: bool = True
    write_collapse: WriteCollapseSpec | None = None


class InterSocketSpec(_Strict):
    """The link between sockets (Infinity Fabric/xGMI, UPI): aggregate per direction, and
    what one transfer gets (``per_flow_gbps``; transfers are not striped over its links)."""

    name: str = "inter-socket"
    bw_gbps: float = Field(gt=0)
    per_flow_gbps: float | None = Field(default=None, gt=0)
    p2p: bool = True


class SwitchSpec(_Strict):
    """A PCIe switch: its uplink (to a root port or another switch) and downstream ports.

    ``p2p``: peers behind it reach each other without leaving the switch.
    """

    name: str
    uplink: str
    gen: int = Field(ge=1, le=6)
    width: PcieWidth
    downstream_ports: int = Field(ge=1, le=128)
    p2p: bool = True


class ChipsetSpec(_Strict):
    """The chipset (PCH/FCH): a narrow uplink and ``lanes`` of its own for the slots behind."""

    name: str
    uplink: str
    gen: int = Field(ge=1, le=6)
    width: PcieWidth
    lanes: int = Field(ge=1, le=64)


class RiserSpec(_Strict):
    """A riser cable/card between a port and a GPU: the generation it carries cleanly."""

    name: str
    gen: int = Field(ge=1, le=6)
    width: PcieWidth = 16


class GpuAttachSpec(_Strict):
    """Where GPU ``gpu`` (its index in ``gpus:``) plugs in: a root port, switch or chipset.

    ``p2p``: whether the driver lets this card do PCIe peer-to-peer (GeForce cards: no,
    unless a patched driver); unset, the preset's entry in ``pcie.yaml`` decides.
    """

    gpu: int = Field(ge=0)
    at: str
    riser: str | None = None
    p2p: bool | None = None


class DeviceSpec(_Strict):
    """An NVMe drive or NIC: a lane consumer and, when busy, a source of host traffic.

    ``traffic_gbps``: what it moves when busy (NVMe sequential read into host memory; a NIC's
    line rate). ``direction``: ``to_host`` (DMA writes into memory), ``from_host`` or ``both``.
    """

    name: str
    kind: Literal["nvme", "nic"]
    at: str
    gen: int = Field(ge=1, le=6)
    width: PcieWidth
    traffic_gbps: float = Field(default=0.0, ge=0)
    direction: Literal["to_host", "from_host", "both"] = "to_host"


class NvlinkSpec(_Strict):
    """An NVLink bridge between GPUs ``a`` and ``b``: ``links`` × ``gbps_per_link`` each way."""

    a: int = Field(ge=0)
    b: int = Field(ge=0)
    links: int = Field(ge=1, le=18)
    gbps_per_link: float = Field(gt=0)


class FabricSpec(_Strict):
    """The ``fabric:`` section of a rig file (see the module docstring).

    ``max_payload_b``: the PCIe Max Payload Size the platform runs (``lspci -vv``: ``DevCtl:
    MaxPayload``); ``read_completion_b``: the size of the completions a root complex returns
    for a GPU's DMA reads (64, 128 or 256 B by platform).
    """

    sockets: list[SocketSpec] = Field(min_length=1)
    inter_socket: InterSocketSpec | None = None
    switches: list[SwitchSpec] = Field(default_factory=list)
    chipset: ChipsetSpec | None = None
    risers: list[RiserSpec] = Field(default_factory=list)
    gpus: list[GpuAttachSpec] = Field(min_length=1)
    devices: list[DeviceSpec] = Field(default_factory=list)
    nvlink: list[NvlinkSpec] = Field(default_factory=list)
    max_payload_b: Literal[128, 256, 512, 1024] = 256
    read_completion_b: Literal[64, 128, 256, 512] = 128
    sources: dict[str, str] = Field(default_factory=dict)


Problem = tuple[str, str]


def _unknown(what: str, name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{name!r} is not a known {what}{hint}; known: {', '.join(known) or 'none'}"


def check_fabric(
    fabric: FabricSpec,
    gpu_risers: Sequence[bool],
    gpu_links: Sequence[tuple[int, int] | None] = (),
) -> list[Problem]:
    """Every inconsistency of a fabric with itself and with the rig's GPU list.

    ``gpu_risers``: ``gpus[i].riser`` of the rig file, one per GPU (the GPU count comes from
    it); ``gpu_links``: the (gen, width) each GPU reports under load (``gpus[i].pcie``, else
    its preset's), so a slot narrower or slower than that is caught: the GPU would report a
    link its slot cannot carry. Returns ``(yaml path, what is wrong and how to fix it)``
    pairs; empty when sound.
    """
    problems: list[Problem] = []
    n_gpus = len(gpu_risers)
    owners: dict[str, str] = {}

    def claim(name: str, path: str) -> None:
        if name in owners:
            problems.append((path, f"name {name!r} repeats {owners[name]}; make it unique"))
        else:
            owners[name] = path

    ports: dict[str, int] = {}  # root port -> socket index
    port_width: dict[str, int] = {}
    for s, socket in enumerate(fabric.sockets):
        claim(socket.name, f"fabric.sockets[{s}].name")
        for p, port in enumerate(socket.root_ports):
            claim(port.name, f"fabric.sockets[{s}].root_ports[{p}].name")
            ports[port.name] = s
            port_width[port.name] = port.width
        total = sum(port.width for port in socket.root_ports)
        if total > socket.pcie_lanes:
            problems.append(
                (
                    f"fabric.sockets[{s}].root_ports",
                    f"{total} lanes wired to root ports but the socket has {socket.pcie_lanes}; "
                    "narrow a port or fix pcie_lanes",
                )
            )
    if len(fabric.sockets) > 1 and fabric.inter_socket is None:
        problems.append(("fabric.inter_socket", "is required with more than one socket; add it"))
    switch_names = [sw.name for sw in fabric.switches]
    for i, sw in enumerate(fabric.switches):
        claim(sw.name, f"fabric.switches[{i}].name")
    if fabric.chipset is not None:
        claim(fabric.chipset.name, "fabric.chipset.name")
    riser_names = [r.name for r in fabric.risers]
    for i, riser in enumerate(fabric.risers):
        claim(riser.name, f"fabric.risers[{i}].name")
    for i, dev in enumerate(fabric.devices):
        claim(dev.name, f"fabric.devices[{i}].name")

    # uplinks: a switch hangs off a root port or another switch, without a cycle
    uplink_ok = set(ports) | set(switch_names)
    for i, sw in enumerate(fabric.switches):
        if sw.uplink not in uplink_ok:
            problems.append(
                (
                    f"fabric.switches[{i}].uplink",
                    _unknown("root port or switch", sw.uplink, sorted(uplink_ok)),
                )
            )
    parents = {sw.name: sw.uplink for sw in fabric.switches}
    for i, sw in enumerate(fabric.switches):
        seen = {sw.name}
        up = sw.uplink
        while up in parents:
            if up in seen:
                problems.append((f"fabric.switches[{i}].uplink", "switches form a loop; fix it"))
                break
            seen.add(up)
            up = parents[up]
    if fabric.chipset is not None and fabric.chipset.uplink not in ports:
        problems.append(
            ("fabric.chipset.uplink", _unknown("root port", fabric.chipset.uplink, sorted(ports)))
        )

    # what plugs where: each attach point holds what its kind allows
    attach_ok = sorted(
        set(ports) | set(switch_names) | ({fabric.chipset.name} if fabric.chipset else set())
    )
    occupants: dict[str, list[str]] = {}
    for sw in fabric.switches:
        occupants.setdefault(sw.uplink, []).append(f"switch {sw.name}")
    if fabric.chipset is not None:
        occupants.setdefault(fabric.chipset.uplink, []).append(f"chipset {fabric.chipset.name}")
    attached: dict[int, int] = {}
    for i, g in enumerate(fabric.gpus):
        path = f"fabric.gpus[{i}]"
        if g.gpu >= n_gpus:
            problems.append(
                (f"{path}.gpu", f"GPU index {g.gpu} out of range; the rig has GPUs 0–{n_gpus - 1}")
            )
        elif g.gpu in attached:
            problems.append(
                (
                    f"{path}.gpu",
                    f"GPU {g.gpu} is already attached at fabric.gpus[{attached[g.gpu]}]; keep one",
                )
            )
        else:
            attached[g.gpu] = i
        if g.at not in attach_ok:
            problems.append(
                (f"{path}.at", _unknown("root port, switch or chipset", g.at, attach_ok))
            )
        occupants.setdefault(g.at, []).append(f"GPU {g.gpu}")
        if g.riser is not None and g.riser not in riser_names:
            problems.append((f"{path}.riser", _unknown("riser", g.riser, riser_names)))
        if g.gpu < n_gpus and (g.riser is not None) != gpu_risers[g.gpu]:
            said = "true" if gpu_risers[g.gpu] else "false"
            problems.append(
                (
                    f"{path}.riser",
                    f"gpus[{g.gpu}].riser is {said} but the fabric "
                    + (
                        "puts no riser there"
                        if gpu_risers[g.gpu]
                        else f"puts it on riser {g.riser!r}"
                    )
                    + "; make the two agree",
                )
            )
    slot_link: dict[str, tuple[int, int]] = {
        p.name: (p.gen, p.width) for socket in fabric.sockets for p in socket.root_ports
    }
    slot_link.update({sw.name: (sw.gen, 16) for sw in fabric.switches})
    if fabric.chipset is not None:
        slot_link[fabric.chipset.name] = (fabric.chipset.gen, 16)
    riser_gen = {r.name: r.gen for r in fabric.risers}
    for i, g in enumerate(fabric.gpus):
        link = gpu_links[g.gpu] if g.gpu < len(gpu_links) else None
        if link is None or g.at not in slot_link:
            continue
        gen_cap = min(slot_link[g.at][0], riser_gen.get(g.riser or "", 6))
        width_cap = slot_link[g.at][1]
        if link[0] > gen_cap or link[1] > width_cap:
            problems.append(
                (
                    f"fabric.gpus[{i}].at",
                    f"GPU {g.gpu} reports gen {link[0]} x{link[1]} but {g.at} "
                    + (f"with riser {g.riser} " if g.riser else "")
                    + f"carries at most gen {gen_cap} x{width_cap}; set gpus[{g.gpu}].pcie to "
                    "what it trains at there, or fix the port",
                )
            )
    for missing in sorted(set(range(n_gpus)) - set(attached)):
        problems.append(
            (
                "fabric.gpus",
                f"GPU {missing} is not attached anywhere; add {{gpu: {missing}, at: …}}",
            )
        )
    chipset_lanes = 0
    for i, dev in enumerate(fabric.devices):
        if dev.at not in attach_ok:
            problems.append(
                (
                    f"fabric.devices[{i}].at",
                    _unknown("root port, switch or chipset", dev.at, attach_ok),
                )
            )
        occupants.setdefault(dev.at, []).append(f"{dev.kind} {dev.name}")
        if dev.at in port_width and dev.width > port_width[dev.at]:
            problems.append(
                (
                    f"fabric.devices[{i}].width",
                    f"x{dev.width} does not fit port {dev.at} (x{port_width[dev.at]}); lower it",
                )
            )
        if fabric.chipset is not None and dev.at == fabric.chipset.name:
            chipset_lanes += dev.width
    if fabric.chipset is not None and chipset_lanes > fabric.chipset.lanes:
        problems.append(
            (
                "fabric.chipset.lanes",
                f"devices behind the chipset take {chipset_lanes} lanes but it has "
                f"{fabric.chipset.lanes}; move a device or fix lanes",
            )
        )
    for name, who in occupants.items():
        if name in ports and len(who) > 1:
            problems.append(
                (
                    "fabric",
                    f"root port {name!r} carries {len(who)} things ({', '.join(who)}); a port "
                    "takes one — put a switch between",
                )
            )
    for i, sw in enumerate(fabric.switches):
        below = occupants.get(sw.name, [])
        if len(below) > sw.downstream_ports:
            problems.append(
                (
                    f"fabric.switches[{i}].downstream_ports",
                    f"{len(below)} things hang off switch {sw.name!r} but it has "
                    f"{sw.downstream_ports} downstream ports; raise it or move one",
                )
            )
    seen_pairs: set[frozenset[int]] = set()
    for i, nv in enumerate(fabric.nvlink):
        path = f"fabric.nvlink[{i}]"
        if nv.a >= n_gpus or nv.b >= n_gpus:
            problems.append((path, f"GPU index out of range; the rig has GPUs 0–{n_gpus - 1}"))
        if nv.a == nv.b:
            problems.append((path, "a bridge joins two different GPUs; fix a or b"))
        pair = frozenset((nv.a, nv.b))
        if pair in seen_pairs:
            problems.append((path, f"pair {nv.a}–{nv.b} is listed twice; keep one"))
        seen_pairs.add(pair)
    return problems
