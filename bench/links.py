"""The fabric model against published measurements, one rig file of that hardware each.

Each line: what was measured, the model's figure, the published range, the error (0 inside
the range, else the distance to its nearer end relative to that end) and the source; then a
summary line. The bar is every figure within ±10 %. The rig files (``bench/rigs/``) cite each
figure and mark what the sources do not say as an estimate. Then the wall time of
``rigforge links --rig sim:reference`` (the bar is < 1 s).

    .venv/bin/python bench/links.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuning.backends.sim import SimRig
from tuning.fabric.graph import Fabric
from tuning.fabric.model import Transfer, latency_us, solve
from tuning.links import fabric_of_rig

RIGS = Path(__file__).with_name("rigs")
#: The bar: every model figure within this share of the published range.
TOLERANCE = 0.10


@dataclass(frozen=True)
class Figure:
    label: str
    rig: str
    model: Callable[[Fabric], float]
    low: float
    high: float
    unit: str
    source: str


def _one(fabric: Fabric, t: Transfer) -> float:
    return solve(fabric, [t])[0]


def _bidir_staged(fabric: Fabric) -> float:
    rates = solve(fabric, [Transfer("p2p", src=0, dst=1), Transfer("p2p", src=1, dst=0)])
    return sum(rates)


def _collapse_pair(fabric: Fabric, op: str) -> list[float]:
    # SW1 GPUs 0, 1 -> GPU 4 (SW2) and GPU 8 (SW3): two destination root complexes
    if op == "write":
        return solve(fabric, [Transfer("p2p", src=0, dst=4), Transfer("p2p", src=1, dst=8)])
    return solve(
        fabric,
        [Transfer("p2p", src=4, dst=0, op="read"), Transfer("p2p", src=8, dst=1, op="read")],
    )


def _concurrent_h2d(fabric: Fabric, gpu: int) -> float:
    transfers = [Transfer("h2d", gpu=g, host_socket=0) for g in range(8)]
    return solve(fabric, transfers)[gpu]


FIGURES: tuple[Figure, ...] = (
    Figure(
        "RTX 4090 Gen4 x16 H2D alone",
        "8x4090-gen4",
        lambda f: _one(f, Transfer("h2d", gpu=0)),
        23.90,
        26.38,
        "GB/s",
        "NVIDIA/nvbandwidth#15",
    ),
    Figure(
        "RTX 4090 Gen4 x16 D2H alone",
        "8x4090-gen4",
        lambda f: _one(f, Transfer("d2h", gpu=0)),
        26.25,
        27.11,
        "GB/s",
        "NVIDIA/nvbandwidth#15",
    ),
    Figure(
        "3x RTX 4090 P2P off, bidirectional",
        "3x4090-p2p-off",
        _bidir_staged,
        25.60,
        26.15,
        "GB/s",
        "tinygrad/open-gpu-kernel-modules#6",
    ),
    Figure(
        "P2P off latency (staged)",
        "3x4090-p2p-off",
        lambda f: latency_us(f, 0, 1),
        14.0,
        14.0,
        "us",
        "rtx6kpro hardware/pcie-bandwidth.md",
    ),
    Figure(
        "RTX PRO 6000 Gen5 P2P write, same NUMA",
        "2x-turin-rtxpro6000",
        lambda f: _one(f, Transfer("p2p", src=0, dst=1)),
        54.0,
        56.0,
        "GB/s",
        "rtx6kpro hardware/pcie-bandwidth.md",
    ),
    Figure(
        "RTX PRO 6000 Gen5 P2P write, across NUMA",
        "2x-turin-rtxpro6000",
        lambda f: _one(f, Transfer("p2p", src=0, dst=3)),
        39.0,
        51.0,
        "GB/s",
        "rtx6kpro hardware/pcie-bandwidth.md",
    ),
    Figure(
        "P2P latency, same NUMA",
        "2x-turin-rtxpro6000",
        lambda f: latency_us(f, 0, 1),
        0.36,
        0.45,
        "us",
        "rtx6kpro hardware/pcie-bandwidth.md",
    ),
    Figure(
        "P2P latency, across NUMA",
        "2x-turin-rtxpro6000",
        lambda f: latency_us(f, 0, 3),
        0.44,
        0.44,
        "us",
        "rtx6kpro hardware/pcie-bandwidth.md",
    ),
    Figure(
        "PM50100 switches: 1 pair SW1->SW2 write",
        "wrx90-4switch-rtxpro6000",
        lambda f: _one(f, Transfer("p2p", src=0, dst=4)),
        52.5,
        52.5,
        "GB/s",
        "rtx6kpro hardware/collapse-report.md",
    ),
    Figure(
        "write collapse, per pair (2 dst roots)",
        "wrx90-4switch-rtxpro6000",
        lambda f: _collapse_pair(f, "write")[0],
        6.0,
        7.0,
        "GB/s",
        "rtx6kpro hardware/collapse-report.md",
    ),
    Figure(
        "same pattern as reads, both pairs",
        "wrx90-4switch-rtxpro6000",
        lambda f: sum(_collapse_pair(f, "read")),
        53.2,
        53.2,
        "GB/s",
        "rtx6kpro hardware/collapse-report.md",
    ),
    Figure(
        "8 Gen5 GPUs, H2D alone",
        "2s-gen5-8gpu",
        lambda f: _one(f, Transfer("h2d", gpu=0, host_socket=0)),
        56.12,
        56.21,
        "GB/s",
        "NVIDIA/cuda-samples#357",
    ),
    Figure(
        "8 Gen5 GPUs, D2H alone",
        "2s-gen5-8gpu",
        lambda f: _one(f, Transfer("d2h", gpu=0, host_socket=0)),
        53.53,
        57.15,
        "GB/s",
        "NVIDIA/cuda-samples#357",
    ),
    Figure(
        "all 8 H2D at once, socket-0 GPU",
        "2s-gen5-8gpu",
        lambda f: _concurrent_h2d(f, 0),
        43.68,
        44.80,
        "GB/s",
        "NVIDIA/cuda-samples#357",
    ),
    Figure(
        "all 8 H2D at once, socket-1 GPU",
        "2s-gen5-8gpu",
        lambda f: _concurrent_h2d(f, 4),
        25.32,
        25.49,
        "GB/s",
        "NVIDIA/cuda-samples#357",
    ),
)


def error(model: float, low: float, high: float) -> float:
    """0 inside [low, high], else the distance to the nearer end relative to it."""
    if low <= model <= high:
        return 0.0
    end = low if model < low else high
    return (model - end) / end


def main() -> int:
    fabrics: dict[str, Fabric] = {}
    passed = 0
    for fig in FIGURES:
        if fig.rig not in fabrics:
            fabrics[fig.rig] = fabric_of_rig(SimRig.from_file(RIGS / f"{fig.rig}.yaml"))
        value = fig.model(fabrics[fig.rig])
        err = error(value, fig.low, fig.high)
        ok = abs(err) <= TOLERANCE
        passed += ok
        published = f"{fig.low:g}" if fig.low == fig.high else f"{fig.low:g}–{fig.high:g}"
        print(
            f"{'ok  ' if ok else 'MISS'} {fig.label:<44} model {value:7.2f} {fig.unit:<4} "
            f"published {published:>11} {fig.unit:<4} error {err:+6.1%}  {fig.source}"
        )
    print(
        f"summary: {passed}/{len(FIGURES)} figures within ±{TOLERANCE:.0%} of the published range"
    )
    cmd = [sys.executable, "-m", "tuning.cli", "links", "--rig", "sim:reference", "--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - start
    if done.returncode in (0, 1):
        print(f"rigforge links --rig sim:reference --json: {wall_s:.2f} s wall (bar < 1 s)")
    else:
        print(
            f"rigforge links --rig sim:reference failed ({done.returncode}): {done.stderr.strip()}"
        )
    return 0 if passed == len(FIGURES) else 1


if __name__ == "__main__":
    raise SystemExit(main())
