"""The objective: a GPU set's relative throughput for a split, and how plans compare.

Throughput is relative, in single-GPU equivalents (see :mod:`tuning.placement`)::

    rate(g)     = throughput_rel(g) · thermal(g)          # profile; 1.0 without one
    throughput  = |S| · min_{g∈S} rate(g) · L^(tp−1) · (PP_EFFICIENCY · L^¼ if pp > 1)

A plan's :data:`Key` is (placed priority, Σ priority · throughput), compared
lexicographically with a 1e-9 tolerance (:func:`better`). GPU sets are bit masks over the
snapshot's GPU order (:func:`mask_bits`, :func:`iter_masks`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

from tuning.core.pcie import link_rank, nvlink_count
from tuning.core.rig import GpuInfo
from tuning.placement.problem import GpuHint, GpuView

#: Efficiency of the worst link inside a GPU set, per nvidia-smi ``topo -m`` class.
LINK_FACTOR: Mapping[str, float] = {
    "NV": 0.97,
    "PIX": 0.90,
    "PXB": 0.85,
    "PHB": 0.75,
    "NODE": 0.65,
    "SYS": 0.50,
}


#: A degraded PCIe link (narrower or slower than its max under load) ranks below SYS.
DEGRADED_LINK_FACTOR = 0.40


#: A single GPU, or an NVLink set, on a degraded PCIe link loses little (weights load once,
#: GPU-to-GPU traffic rides NVLink): a tie-breaker only.
DEGRADED_SINGLE_FACTOR = 0.98


#: Pipeline-parallel efficiency (the bubble) before the link's small share.
PP_EFFICIENCY = 0.80


#: Links over which CUDA peer-to-peer works (NVLink, PCIe switches without a host bridge).
P2P_LINKS = frozenset({"PIX", "PXB"})


#: Thermal headroom at which a GPU no longer loses throughput. Units: °C.
THERMAL_FULL_HEADROOM_C = 10.0


#: Thermal target assumed when the GPU reports none. Units: °C.
DEFAULT_TARGET_C = 83.0


EPS = 1e-9


def thermal_factor(gpu: GpuInfo, hint: GpuHint | None) -> float:
    """Throughput factor from heat-soak headroom: 1 at ≥ 10 °C below target, 0.8 at none."""
    if hint is None or hint.peak_temp_c is None:
        return 1.0
    thresholds = gpu.thresholds
    if thresholds.target_c is not None:
        limit_c = thresholds.target_c
    elif thresholds.slowdown_c is not None:
        limit_c = thresholds.slowdown_c - 5
    else:
        limit_c = DEFAULT_TARGET_C
    headroom_c = limit_c - hint.peak_temp_c
    if headroom_c >= THERMAL_FULL_HEADROOM_C:
        return 1.0
    return max(0.8, 1 - 0.2 * (THERMAL_FULL_HEADROOM_C - max(headroom_c, 0)) / 10)


def link_factor(link: str | None) -> float:
    """:data:`LINK_FACTOR` of a link name; unknown links count as cross-socket."""
    if link is None:
        return LINK_FACTOR["SYS"]
    if nvlink_count(link):
        return LINK_FACTOR["NV"]
    return LINK_FACTOR.get(link, LINK_FACTOR["SYS"])


def mask_bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _worst_link(mask: int, links: Mapping[tuple[int, int], str]) -> str:
    positions = mask_bits(mask)
    worst = "X"
    worst_rank = -1
    for a_pos, a in enumerate(positions):
        for b in positions[a_pos + 1 :]:
            link = links.get((a, b), "SYS")
            rank = link_rank(link)
            if rank > worst_rank:
                worst, worst_rank = link, rank
    return worst


def group_throughput(
    gpus: Sequence[GpuView],
    mask: int,
    tp: int,
    pp: int,
    links: Mapping[tuple[int, int], str],
    max_sequences: int | None = None,
) -> tuple[float, str]:
    """Relative throughput of one replica on ``mask`` split ``tp × pp`` and its worst link.

    A pipeline of ``pp`` stages keeps at most ``max_sequences`` of them busy (each in-flight
    sequence occupies one stage), so the stages beyond that add memory, not throughput.
    """
    members = [gpus[i] for i in mask_bits(mask)]
    busy_stages = pp if max_sequences is None else min(pp, max_sequences)
    base = tp * busy_stages * min(g.rate for g in members)
    if len(members) == 1:
        return base * (DEGRADED_SINGLE_FACTOR if members[0].degraded else 1.0), "X"
    worst = _worst_link(mask, links)
    factor = link_factor(worst)
    degraded = any(g.degraded for g in members)
    if degraded and not nvlink_count(worst):
        factor = min(factor, DEGRADED_LINK_FACTOR)
    efficiency = factor ** (tp - 1)
    if degraded and nvlink_count(worst):
        # GPU↔GPU traffic rides NVLink; only host traffic (loads, inputs) pays the slow link
        efficiency *= DEGRADED_SINGLE_FACTOR
    if pp > 1:
        efficiency *= PP_EFFICIENCY * factor**0.25
    return base * efficiency, worst


def p2p_available(worst_link: str) -> bool:
    """Whether CUDA P2P works across the worst link of a set (NVLink or a PCIe switch)."""
    return worst_link == "X" or bool(nvlink_count(worst_link)) or worst_link in P2P_LINKS


Key = tuple[float, float]  # (placed priority, priority-weighted throughput)


_NEG: Key = (-math.inf, -math.inf)


def better(a: Key, b: Key) -> bool:
    if a[0] > b[0] + EPS:
        return True
    if a[0] < b[0] - EPS:
        return False
    return a[1] > b[1] + EPS


def iter_masks(n: int) -> Iterator[int]:
    """Every non-empty GPU subset of an ``n``-GPU rig as a bit mask."""
    return iter(range(1, 1 << n))
