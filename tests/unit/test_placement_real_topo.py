"""Placement on real ``nvidia-smi topo -m`` captures (parsed by tuning.captures.topo).

Every GPU is assumed to have 24 GiB; the model needs exactly two of them. For every capture
and every choice of one GPU already taken by another model, a 2-GPU group is never placed
across NUMA nodes/sockets (or host bridges) when a pair with a better link is free, and never
on a degraded link when a healthy pair is free.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pytest
from test_placement_rigs import model, models_file

from tuning.captures.topo import parse_topo
from tuning.core.pcie import PcieLink, link_rank
from tuning.core.rig import GpuInfo, RigSnapshot
from tuning.placement import plan

ASSUMED_VRAM_MIB = 24576
PAIR_MODEL = {"params_b": 32.8, "quant_bits": 8, "layers": 64, "attention_heads": 40}
DEGRADED = PcieLink(gen_current=3, gen_max=4, width_current=8, width_max=16, under_load=True)


def topo_files(real: Path) -> list[Path]:
    return sorted(p for p in (real / "topo").glob("*.txt") if not p.name.startswith("1x-"))


def rig_from_capture(path: Path) -> RigSnapshot:
    matrix = parse_topo(path.read_text(encoding="utf-8"))
    gpus = tuple(
        GpuInfo(
            index=g.index,
            uuid=f"GPU-{g.index}",
            memory_total_mib=ASSUMED_VRAM_MIB,
            numa_node=g.numa_node,
            cpu_list=g.cpu_list,
            pcie=PcieLink(gen_current=4, gen_max=4, width_current=16, width_max=16),
        )
        for g in matrix.gpus
    )
    return RigSnapshot(name=path.stem, gpus=gpus, topology=matrix.links)


def pair_rank(rig: RigSnapshot, a: int, b: int) -> int:
    return link_rank(rig.link(a, b) or "SYS")


@pytest.fixture(scope="module")
def captures(real_fixtures: Path) -> list[RigSnapshot]:
    rigs = [rig_from_capture(p) for p in topo_files(real_fixtures)]
    assert len(rigs) >= 10
    return rigs


def test_captures_parse_into_multi_gpu_rigs(captures) -> None:
    assert all(len(rig.gpus) >= 2 for rig in captures)


def test_pair_takes_the_best_free_link(captures) -> None:
    checked = 0
    for rig in captures:
        indices = [g.index for g in rig.gpus]
        for taken in [None, *indices]:
            specs = [model("pair", **PAIR_MODEL, priority=2)]
            if taken is not None:
                specs.append(model("blocker", gpus=(f"GPU-{taken}",)))
            result = plan(rig, models_file(*specs))
            free = [i for i in indices if i != taken]
            if len(free) < 2:
                continue
            pair = next(p for p in result.placements if p.model == "pair")
            assert len(pair.gpu_indices) == 2, (rig.name, taken, pair)
            a, b = pair.gpu_indices
            best = min(pair_rank(rig, x, y) for x, y in combinations(free, 2))
            assert pair_rank(rig, a, b) == best, (rig.name, taken, pair.gpu_indices)
            same_node_free = any(
                rig.gpu(x).numa_node == rig.gpu(y).numa_node for x, y in combinations(free, 2)
            )
            if same_node_free:
                assert rig.gpu(a).numa_node == rig.gpu(b).numa_node, (rig.name, taken)
            checked += 1
    assert checked > 50


def test_pair_avoids_degraded_links(captures) -> None:
    checked = 0
    for rig in captures:
        if len(rig.gpus) < 3:
            continue
        for bad in range(len(rig.gpus)):
            gpus = tuple(replace(g, pcie=DEGRADED) if g.index == bad else g for g in rig.gpus)
            result = plan(replace(rig, gpus=gpus), models_file(model("pair", **PAIR_MODEL)))
            pair = result.placements[0]
            assert bad not in pair.gpu_indices, (rig.name, bad, pair.gpu_indices)
            checked += 1
    assert checked > 30
