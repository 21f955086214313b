"""The objective: a GPU set's predicted tokens/s for a split, and how plans compare.

Throughput is the serving step-time model's (:func:`tuning.model.serving.predict`): aggregate
decode tokens/s of the replica with ``max_sequences`` in flight, each sequence halfway through
its ``context``, on the set's GPUs (their presets' memory bandwidth and tensor TFLOPS) over the
set's worst link (nvidia-smi's class → :func:`tuning.model.serving.link_for_topology`), under
every member's power limit — the profile's tuned cap, else the limit the GPU has now: the
split's operating point (:func:`tuning.model.split.split_operating_point`: each card's stage
on its own hardware at the highest clock whose power fits its cap, the pipeline's rate from
its stages; the simulator's serving run paces a split by the same definition). Heat is not
in it: the tuned caps passed a heat-soak, and ``rigforge loop``'s serving run measures what
heat takes on top.

A plan's :data:`Key` is (placed priority, Σ priority · tokens/s), compared lexicographically
with a 1e-9 tolerance (:func:`better`). GPU sets are bit masks over the snapshot's GPU order
(:func:`mask_bits`, :func:`iter_masks`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence

from inventory.models import ModelSpec
from tuning.core.pcie import link_rank, nvlink_count
from tuning.fabric.params import raw_gbps
from tuning.model.serving import HostShare, Link, Prediction, link_for_topology
from tuning.model.split import SplitMember, split_member, split_operating_point
from tuning.placement.problem import GpuView

#: Links over which CUDA peer-to-peer works (NVLink, PCIe switches without a host bridge).
P2P_LINKS = frozenset({"PIX", "PXB"})


EPS = 1e-9


def decode_context(model: ModelSpec) -> int:
    """Tokens in a sequence's KV cache on average while it decodes: half its context (a
    sequence that fills its context grows from the prompt to the limit)."""
    return max(1, model.context // 2)


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


def group_prediction(
    gpus: Sequence[GpuView],
    mask: int,
    tp: int,
    pp: int,
    links: Mapping[tuple[int, int], str],
    model: ModelSpec,
    measured: Mapping[tuple[int, int], Link] | None = None,
    *,
    cores: int | None = None,
    other_engines: int = 0,
) -> tuple[Prediction, str]:
    """The serving model's prediction for one replica on ``mask`` split ``tp × pp``, and the
    set's worst link (``X`` for one GPU). A degraded member's current PCIe link sets the rate.
    ``measured``: links ``rigforge links`` measured, by GPU position pair (low, high); when
    every pair of the set was measured, the set's slowest measured pair is its link.
    ``cores``/``other_engines``: the engine's host cores and the engines sharing them
    (:class:`~tuning.model.serving.HostShare`; default: its own full allotment)."""
    members = [gpus[i] for i in mask_bits(mask)]
    worst = "X" if len(members) == 1 else _worst_link(mask, links)
    gens = [g.pcie_gen for g in members if g.pcie_gen]
    widths = [g.pcie_width for g in members if g.pcie_width]
    gen = min(gens) if gens else None
    width = min(widths) if widths else None
    link = None
    if len(members) > 1:
        link = _measured_link(mask, measured) if measured else None
        if link is None:
            link = link_for_topology(worst, gen, width)
    # the unit's CPUs are on one node (the CPU plan's): GPUs on another node reach them remotely
    nodes = {g.numa_node for g in members if g.numa_node is not None}
    host = HostShare(
        cores=cores,
        other_engines=other_engines,
        pcie_gbps=raw_gbps(gen or 4, width or 16),
        remote_numa=len(nodes) > 1,
    )
    point = split_operating_point(
        model,
        [split_member_of(g) for g in members],
        tp=tp,
        pp=pp,
        concurrency=model.max_sequences,
        context=decode_context(model),
        prompt_tokens=decode_context(model),
        link=link,
        host=host,
    )
    return point.prediction, worst


def split_member_of(gpu: GpuView) -> SplitMember:
    """A GPU of a set as its split sees it: its hardware, its preset's power split and clocks
    and its limit (``GpuView.power_w``: the profile's cap, else its current limit); a GPU whose
    figures are no preset's has no power model and runs at full clock."""
    preset = gpu.hardware.preset
    if preset is None:
        return SplitMember(hardware=gpu.hardware, params=None, max_clock_mhz=0.0)
    member = split_member(preset, gpu.power_w)
    if member.hardware == gpu.hardware:
        return member
    return dataclasses.replace(member, hardware=gpu.hardware)


def _measured_link(mask: int, measured: Mapping[tuple[int, int], Link]) -> Link | None:
    """The slowest measured pair of ``mask`` (lowest one-way GB/s, then highest latency);
    ``None`` when a pair of the set was not measured."""
    bits = mask_bits(mask)
    worst: Link | None = None
    for i, a in enumerate(bits):
        for b in bits[i + 1 :]:
            link = measured.get((a, b))
            if link is None:
                return None
            if worst is None or (link.bandwidth_gbps, -link.latency_us) < (
                worst.bandwidth_gbps,
                -worst.latency_us,
            ):
                worst = link
    return worst


def group_throughput(
    gpus: Sequence[GpuView],
    mask: int,
    tp: int,
    pp: int,
    links: Mapping[tuple[int, int], str],
    model: ModelSpec,
    measured: Mapping[tuple[int, int], Link] | None = None,
) -> tuple[float, str]:
    """Predicted aggregate decode tokens/s of one replica on ``mask`` (see the module), and
    its worst link."""
    prediction, worst = group_prediction(gpus, mask, tp, pp, links, model, measured)
    return prediction.tokens_per_s, worst


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
