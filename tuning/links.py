"""The ``rigforge links`` probe: what it measures on a rig's fabric and how it judges each link.

The fabric it probes is :func:`tuning.rig_fabric.fabric_of_rig`'s; :class:`SimProber` answers
from the fabric model, :mod:`tuning.links_gpu` from real copies.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tuning.backends.base import Rig
from tuning.core.rig import rig_fingerprint
from tuning.fabric.graph import Fabric, LaneBudget, gpu_node_name
from tuning.fabric.links_file import GpuLinks, LaneCounts, LinksFile, LinksRig, PairLinks
from tuning.fabric.model import P2pMode, Transfer, p2p_mode, solve
from tuning.fabric.model import latency_us as model_latency_us
from tuning.fabric.params import load_params, raw_gbps

# --------------------------------------------------------------------------------------------
# The probe: what `rigforge links` measures and how it judges each link
# --------------------------------------------------------------------------------------------

#: A GPU whose H2D alone is below this share of what its negotiated gen × width should carry
#: is flagged ``below_expectation`` (a bad riser, a retraining link, a throttled root port).
LOW_LINK_RATIO = 0.80
#: A GPU whose H2D while every GPU copies is below this share of its H2D alone is flagged
#: ``shared_uplink``: something upstream (a switch/chipset uplink, host memory, the
#: inter-socket link) cannot feed them all.
CONCURRENT_SHARE_RATIO = 0.70
#: A peer write that, run with the other writes leaving its switch, keeps less than this
#: share of its rate alone is flagged ``write_collapse``.
WRITE_COLLAPSE_RATIO = 0.50
#: Transfer size of one measured copy unless ``--size-mib`` says otherwise. Units: MiB.
DEFAULT_SIZE_MIB = 256


class Verdict(StrEnum):
    """What ``rigforge links`` can say about a link (codes as in ``--json`` and links.yaml)."""

    BELOW_EXPECTATION = "below_expectation"
    SHARED_UPLINK = "shared_uplink"
    BEHIND_CHIPSET = "behind_chipset"
    DOWNTRAINED = "downtrained"
    P2P_UNAVAILABLE = "p2p_unavailable"
    WRITE_COLLAPSE = "write_collapse"


class LinkProber(ABC):
    """Runs copies and reports what they achieved: the simulator's model, or real GPUs."""

    @abstractmethod
    def run(self, transfers: Sequence[Transfer], size_mib: int) -> list[float]:
        """Run the copies at the same time; each one's rate. Units: GB/s."""

    @abstractmethod
    def latency_us(self, src: int, dst: int) -> float | None:
        """One small peer write from GPU src to GPU dst. Units: µs. ``None``: not measured."""

    @abstractmethod
    def mode(self, src: int, dst: int) -> P2pMode:
        """How src reaches dst: NVLink, PCIe peer access, or staged through host memory."""

    @abstractmethod
    def link_under_load(self, index: int) -> tuple[int | None, int | None]:
        """(gen, width) the GPU's link reads while it copies."""


class SimProber(LinkProber):
    """The simulated rig's fabric model plus seeded measurement noise (the rig's
    ``noise.throughput_rel``); copies take no wall time."""

    def __init__(self, fabric: Fabric, *, noise_rel: float = 0.0, seed: int = 0) -> None:
        self.fabric = fabric
        self._rng = random.Random(seed)
        self._noise_rel = noise_rel

    def _noisy(self, value: float) -> float:
        if self._noise_rel <= 0:
            return value
        return max(0.0, value * (1.0 + self._rng.gauss(0.0, self._noise_rel)))

    def run(self, transfers: Sequence[Transfer], size_mib: int) -> list[float]:
        return [self._noisy(r) for r in solve(self.fabric, transfers)]

    def latency_us(self, src: int, dst: int) -> float | None:
        return self._noisy(model_latency_us(self.fabric, src, dst))

    def mode(self, src: int, dst: int) -> P2pMode:
        return p2p_mode(self.fabric, src, dst)

    def link_under_load(self, index: int) -> tuple[int | None, int | None]:
        node = self.fabric.gpu_node(index)
        return node.gen, node.width


@dataclass(frozen=True)
class GpuLinkResult:
    """One GPU's host link as measured, with the verdicts and the sentence for each."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str | None
    gen: int | None
    width: int | None
    max_gen: int | None
    max_width: int | None
    h2d_gbps: float
    d2h_gbps: float
    h2d_concurrent_gbps: float
    d2h_concurrent_gbps: float
    bidir_gbps: float | None
    expected_gbps: float | None
    verdicts: tuple[tuple[Verdict, str], ...] = ()


@dataclass(frozen=True)
class PairResult:
    """GPU src → GPU dst, measured."""

    src: int
    dst: int
    src_uuid: str
    dst_uuid: str
    gbps: float
    latency_us: float | None
    mode: P2pMode
    verdicts: tuple[tuple[Verdict, str], ...] = ()


@dataclass(frozen=True)
class LinksReport:
    """Everything ``rigforge links`` found on one rig."""

    rig_name: str
    fingerprint: str
    size_mib: int
    gpus: tuple[GpuLinkResult, ...]
    p2p: tuple[PairResult, ...]
    lanes: LaneBudget | None

    @property
    def flagged(self) -> bool:
        return any(g.verdicts for g in self.gpus)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (keys fixed by issue 11)."""
        return {
            "gpus": [
                {
                    "uuid": g.uuid,
                    "h2d_gbps": round(g.h2d_gbps, 2),
                    "d2h_gbps": round(g.d2h_gbps, 2),
                    "h2d_concurrent_gbps": round(g.h2d_concurrent_gbps, 2),
                    "expected_gbps": _round(g.expected_gbps),
                    "verdicts": [v.value for v, _ in g.verdicts],
                }
                for g in self.gpus
            ],
            "p2p": [
                {
                    "src": p.src_uuid,
                    "dst": p.dst_uuid,
                    "gbps": round(p.gbps, 2),
                    "latency_us": _round(p.latency_us),
                    "mode": p.mode.value,
                }
                for p in self.p2p
            ],
            "lanes": self.lanes.to_json() if self.lanes is not None else None,
        }

    def to_links_file(self) -> LinksFile:
        return LinksFile(
            rig=LinksRig(name=self.rig_name, fingerprint=self.fingerprint),
            size_mib=self.size_mib,
            gpus=[
                GpuLinks(
                    uuid=g.uuid,
                    index=g.index,
                    pci_bus_id=g.pci_bus_id,
                    gen=g.gen,
                    width=g.width,
                    max_gen=g.max_gen,
                    max_width=g.max_width,
                    h2d_gbps=round(g.h2d_gbps, 2),
                    d2h_gbps=round(g.d2h_gbps, 2),
                    h2d_concurrent_gbps=round(g.h2d_concurrent_gbps, 2),
                    d2h_concurrent_gbps=round(g.d2h_concurrent_gbps, 2),
                    bidir_gbps=_round(g.bidir_gbps),
                    expected_gbps=_round(g.expected_gbps),
                    verdicts=[v.value for v, _ in g.verdicts],
                )
                for g in self.gpus
            ],
            p2p=[
                PairLinks(
                    src=p.src_uuid,
                    dst=p.dst_uuid,
                    gbps=round(p.gbps, 2),
                    latency_us=_round(p.latency_us),
                    mode=p.mode.value,
                    verdicts=[v.value for v, _ in p.verdicts],
                )
                for p in self.p2p
            ],
            lanes=LaneCounts(**self.lanes.to_json()) if self.lanes is not None else None,
        )


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


Progress = Callable[[str], None]


def run_links(
    rig: Rig,
    prober: LinkProber,
    fabric: Fabric | None,
    *,
    size_mib: int = DEFAULT_SIZE_MIB,
    quick: bool = False,
    progress: Progress | None = None,
) -> LinksReport:
    """Measure every GPU's host link alone, all at once and both ways, then GPU pairs.

    ``fabric``: what the rig is known to be (names the shared uplink, the chipset, the
    expectation of each link); ``None`` for real GPUs whose fabric nobody described — the
    expectation then comes from the link the GPU reports. ``quick``: one direction per pair
    and no bidirectional runs.
    """
    say = progress or (lambda _line: None)
    gpus = list(rig.gpus)
    n = len(gpus)
    say(f"host links: {n} GPUs alone, {size_mib} MiB per copy")
    h2d = [prober.run([Transfer("h2d", gpu=i)], size_mib)[0] for i in range(n)]
    d2h = [prober.run([Transfer("d2h", gpu=i)], size_mib)[0] for i in range(n)]
    say("host links: all GPUs at once")
    h2d_all = prober.run([Transfer("h2d", gpu=i) for i in range(n)], size_mib)
    d2h_all = prober.run([Transfer("d2h", gpu=i) for i in range(n)], size_mib)
    bidir: list[float | None] = [None] * n
    if not quick:
        say("host links: both directions")
        for i in range(n):
            both = prober.run([Transfer("h2d", gpu=i), Transfer("d2h", gpu=i)], size_mib)
            bidir[i] = sum(both)
    results = []
    for i, gpu in enumerate(gpus):
        gen, width = prober.link_under_load(i)
        link = gpu.pcie_link()
        max_gen, max_width = link.gen_max, link.width_max
        if fabric is not None:
            max_gen, max_width = _slot_max(fabric, i)
        expected = _expected(fabric, i, gen, width)
        verdicts = _host_verdicts(
            fabric, i, h2d[i], h2d_all[i], expected, (gen, width), (max_gen, max_width)
        )
        results.append(
            GpuLinkResult(
                index=i,
                uuid=gpu.uuid,
                name=gpu.name,
                pci_bus_id=gpu.pci_bus_id,
                gen=gen,
                width=width,
                max_gen=max_gen,
                max_width=max_width,
                h2d_gbps=h2d[i],
                d2h_gbps=d2h[i],
                h2d_concurrent_gbps=h2d_all[i],
                d2h_concurrent_gbps=d2h_all[i],
                bidir_gbps=bidir[i],
                expected_gbps=expected,
                verdicts=verdicts,
            )
        )
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b and (not quick or a < b)]
    say(f"peer links: {len(pairs)} pairs")
    collapsed = _collapse_probe(prober, fabric, size_mib) if fabric is not None else {}
    p2p = []
    for a, b in pairs:
        mode = prober.mode(a, b)
        rate = prober.run([Transfer("p2p", src=a, dst=b)], size_mib)[0]
        pair_verdicts: list[tuple[Verdict, str]] = []
        if mode is P2pMode.STAGED:
            pair_verdicts.append(
                (
                    Verdict.P2P_UNAVAILABLE,
                    f"GPU {a} → GPU {b}: no peer access; copies are staged through host "
                    f"memory ({rate:.1f} GB/s)",
                )
            )
        if (a, b) in collapsed and collapsed[(a, b)] < WRITE_COLLAPSE_RATIO * rate:
            pair_verdicts.append(
                (
                    Verdict.WRITE_COLLAPSE,
                    f"GPU {a} → GPU {b}: peer writes fall from {rate:.1f} to "
                    f"{collapsed[(a, b)]:.1f} GB/s while the other GPUs behind its switch "
                    "write to other root complexes",
                )
            )
        p2p.append(
            PairResult(
                src=a,
                dst=b,
                src_uuid=gpus[a].uuid,
                dst_uuid=gpus[b].uuid,
                gbps=rate,
                latency_us=prober.latency_us(a, b),
                mode=mode,
                verdicts=tuple(pair_verdicts),
            )
        )
    snapshot_gpus = tuple(g.info() for g in gpus)
    return LinksReport(
        rig_name=rig.name,
        fingerprint=rig_fingerprint(snapshot_gpus),
        size_mib=size_mib,
        gpus=tuple(results),
        p2p=tuple(p2p),
        lanes=fabric.lane_budget() if fabric is not None and fabric.described else None,
    )


def _slot_max(fabric: Fabric, index: int) -> tuple[int | None, int | None]:
    """The best link the GPU could train at here: the lesser of the card and its slot."""
    node = fabric.gpu_node(index)
    port = node.port or ""
    found: tuple[int, int] | None = next(
        ((p.gen, p.width) for s in fabric.spec.sockets for p in s.root_ports if p.name == port),
        None,
    )
    if found is None:  # behind a switch or chipset: that device's downstream side
        parent = fabric.node(node.parent) if node.parent else None
        found = (parent.max_gen or 6, 16) if parent is not None else (6, 16)
    slot = found
    return (
        min(x for x in (node.max_gen, slot[0]) if x is not None),
        min(x for x in (node.max_width, slot[1]) if x is not None),
    )


def _expected(
    fabric: Fabric | None, index: int, gen: int | None, width: int | None
) -> float | None:
    """What the negotiated link should carry host-to-device. Units: GB/s."""
    if gen is None or width is None:
        return None
    completion = fabric.spec.read_completion_b if fabric is not None else 128
    p = load_params()
    return (
        raw_gbps(gen, width)
        * p.link_efficiency
        * completion
        / (completion + p.completion_tlp_overhead_b)
    )


def _host_verdicts(
    fabric: Fabric | None,
    index: int,
    h2d: float,
    h2d_all: float,
    expected: float | None,
    now: tuple[int | None, int | None],
    best: tuple[int | None, int | None],
) -> tuple[tuple[Verdict, str], ...]:
    out: list[tuple[Verdict, str]] = []
    gen, width = now
    best_gen, best_width = best
    if (
        gen is not None
        and width is not None
        and best_gen is not None
        and best_width is not None
        and (gen < best_gen or width < best_width)
    ):
        out.append(
            (
                Verdict.DOWNTRAINED,
                f"GPU {index}: link trained at gen {gen} x{width} under load, below the gen "
                f"{best_gen} x{best_width} card and slot allow — reseat the card or replace "
                "the riser",
            )
        )
    if expected is not None and h2d < LOW_LINK_RATIO * expected:
        out.append(
            (
                Verdict.BELOW_EXPECTATION,
                f"GPU {index}: H2D {h2d:.1f} GB/s is {h2d / expected:.0%} of the {expected:.1f} "
                f"GB/s its gen {gen} x{width} link should carry",
            )
        )
    if h2d > 0 and h2d_all < CONCURRENT_SHARE_RATIO * h2d:
        shared = fabric.shared_uplink(index) if fabric is not None else None
        what = (
            f"the {shared.name} uplink ({shared.port})"
            if shared is not None
            else "host memory or the inter-socket link"
        )
        out.append(
            (
                Verdict.SHARED_UPLINK,
                f"GPU {index}: with every GPU copying it gets {h2d_all:.1f} GB/s, "
                f"{h2d_all / h2d:.0%} of {h2d:.1f} alone — {what} cannot feed them all",
            )
        )
    if fabric is not None and fabric.behind_chipset(index):
        out.append(
            (
                Verdict.BEHIND_CHIPSET,
                f"GPU {index}: behind the chipset, sharing its narrow uplink with the devices "
                "there; move it to a CPU slot",
            )
        )
    return tuple(out)


def _collapse_probe(
    prober: LinkProber, fabric: Fabric, size_mib: int
) -> dict[tuple[int, int], float]:
    """Per switch with two or more GPUs: each GPU writes to a GPU behind a different other
    root complex, all at once; each pair's rate then."""
    out: dict[tuple[int, int], float] = {}
    outside_by_root: dict[str | None, list[int]] = {}
    for g in range(len(fabric.gpus)):
        outside_by_root.setdefault(fabric.gpu_node(g).root_complex, []).append(g)
    for sw in fabric.spec.switches:
        mine = [
            g
            for g in range(len(fabric.gpus))
            if sw.name in {n.name for n in fabric.chain(gpu_node_name(g))}
        ]
        if len(mine) < 2:
            continue
        root = fabric.gpu_node(mine[0]).root_complex
        targets = [gs[0] for r, gs in outside_by_root.items() if r != root and gs]
        if len(targets) < 2:
            continue
        pairs = list(zip(mine, targets, strict=False))
        rates = prober.run([Transfer("p2p", src=a, dst=b) for a, b in pairs], size_mib)
        out.update(dict(zip(pairs, rates, strict=True)))
    return out


# --------------------------------------------------------------------------------------------
# Checks of a measured links.yaml (the verify suite's gpu tier runs them on the box)
# --------------------------------------------------------------------------------------------

#: A peer pair measured below this share of what the saved links.yaml recorded has lost
#: bandwidth (a switch retrained, ACS turned back on, a driver update disabled P2P).
P2P_LOSS_RATIO = 0.80


def low_host_links(measured: LinksFile) -> list[str]:
    """One sentence per GPU whose H2D is below ``LOW_LINK_RATIO`` of its link's expectation."""
    out = []
    for g in measured.gpus:
        if g.expected_gbps and g.h2d_gbps < LOW_LINK_RATIO * g.expected_gbps:
            out.append(
                f"{g.uuid}: H2D {g.h2d_gbps:.1f} GB/s is below {LOW_LINK_RATIO:.0%} of the "
                f"{g.expected_gbps:.1f} GB/s its gen {g.gen} x{g.width} link should carry"
            )
    return out


def p2p_losses(measured: LinksFile, saved: LinksFile) -> list[str]:
    """One sentence per pair that went peer/NVLink in ``saved`` but is staged now, or carries
    less than ``P2P_LOSS_RATIO`` of what ``saved`` recorded."""
    out = []
    for before in saved.p2p:
        now = measured.pair(before.src, before.dst)
        if now is None:
            out.append(f"{before.src} → {before.dst}: not measured now (a GPU is gone?)")
            continue
        if before.mode != "staged" and now.mode == "staged":
            out.append(
                f"{before.src} → {before.dst}: was {before.mode}, now staged through host "
                "memory (P2P lost: ACS, IOMMU or driver change?)"
            )
        elif now.gbps < P2P_LOSS_RATIO * before.gbps:
            out.append(
                f"{before.src} → {before.dst}: {now.gbps:.1f} GB/s, was {before.gbps:.1f} "
                f"({now.gbps / before.gbps:.0%})"
            )
    return out
