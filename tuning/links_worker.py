"""The copy worker of ``rigforge links`` on real GPUs: one process per GPU (or per GPU pair).

    CUDA_VISIBLE_DEVICES=GPU-…[,GPU-…] CUDA_DEVICE_ORDER=PCI_BUS_ID \\
        python -m tuning.links_worker --backend torch --size-mib 256

It allocates a pinned host buffer and a device buffer of ``--size-mib`` (and one on the second
visible GPU for pair workers), then obeys one JSON command per stdin line and answers one JSON
line per command on stdout:

* first ``{"ready": true, "gpus": n, "peer_access": bool | null}`` — peer access
  as the platform reports it (``cudaDeviceCanAccessPeer``); or ``{"error": "…"}``, exit 3;
* ``{"op": "h2d" | "d2h" | "bidir" | "p2p" | "p2p_latency", "iters": k, "start_at": t}`` →
  ``{"op", "gbps", "seconds"}`` (``bidir``: the sum of both directions; ``p2p_latency``:
  ``{"op", "latency_us"}``). ``start_at`` (``time.monotonic``, the system-wide clock the
  parent reads) lets the parent start copies on several workers at the same moment.
  ``p2p_latency`` times a 4-byte peer copy with its synchronisation, launch included: an
  upper bound on the latency p2pBandwidthLatencyTest's kernel writes show;
* ``{"op": "exit"}`` or a closed stdin ends it.

Copies are asynchronous on a stream, timed with CUDA events. The worker reads and writes only
its own buffers: it never changes a power limit, clock, persistence or P2P setting (the CUDA
runtime enables peer access inside this process only, and only where the platform reports it).
``--backend numpy`` runs the same protocol with host memcpy (a test mode, not a GPU figure).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Protocol, TextIO

MIB = 1 << 20


class CopyEngine(Protocol):
    peer_access: bool | None
    gpus: int

    def copy(self, op: str, iters: int) -> float: ...  # seconds for iters copies

    def latency_us(self) -> float: ...


class NumpyCopyEngine:
    """Host memcpy between two arrays: the protocol without a GPU."""

    def __init__(self, size_mib: int) -> None:
        import numpy as np

        self._a = np.ones(size_mib * MIB, dtype=np.uint8)
        self._b = np.zeros_like(self._a)
        self.peer_access: bool | None = None
        self.gpus = 0

    def copy(self, op: str, iters: int) -> float:
        start = time.perf_counter()
        for _ in range(iters):
            self._b[:] = self._a
            if op == "bidir":
                self._a[:] = self._b
        return time.perf_counter() - start

    def latency_us(self) -> float:
        start = time.perf_counter()
        for _ in range(100):
            self._b[:4] = self._a[:4]
        return (time.perf_counter() - start) / 100 * 1e6


class TorchCopyEngine:
    """Pinned host buffer ↔ device buffer (and device 0 → device 1 for pairs), CUDA events."""

    def __init__(self, size_mib: int, torch: Any) -> None:
        self._torch = torch
        n = size_mib * MIB
        self.gpus = torch.cuda.device_count()
        self._host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        self._host2 = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        self._dev = torch.empty(n, dtype=torch.uint8, device="cuda:0")
        self._dev2 = torch.empty(n, dtype=torch.uint8, device="cuda:0")
        self.peer_access = None
        self._peer = None
        if self.gpus >= 2:
            self.peer_access = bool(torch.cuda.can_device_access_peer(0, 1))
            self._peer = torch.empty(n, dtype=torch.uint8, device="cuda:1")
        self._up = torch.cuda.Stream(device=0)
        self._down = torch.cuda.Stream(device=0)

    def copy(self, op: str, iters: int) -> float:
        torch = self._torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(0)
        start.record(self._down)
        for _ in range(iters):
            if op == "h2d":
                with torch.cuda.stream(self._down):
                    self._dev.copy_(self._host, non_blocking=True)
            elif op == "d2h":
                with torch.cuda.stream(self._down):
                    self._host.copy_(self._dev, non_blocking=True)
            elif op == "bidir":
                with torch.cuda.stream(self._down):
                    self._dev.copy_(self._host, non_blocking=True)
                with torch.cuda.stream(self._up):
                    self._host2.copy_(self._dev2, non_blocking=True)
            elif op == "p2p" and self._peer is not None:
                with torch.cuda.stream(self._down):
                    self._peer.copy_(self._dev, non_blocking=True)
        self._down.wait_stream(self._up)
        end.record(self._down)
        end.synchronize()
        return float(start.elapsed_time(end)) / 1000.0

    def latency_us(self) -> float:
        torch = self._torch
        if self._peer is None:
            return float("nan")
        small_src, small_dst = self._dev[:4], self._peer[:4]
        small_dst.copy_(small_src)
        torch.cuda.synchronize(0)
        start = time.perf_counter()
        for _ in range(100):
            small_dst.copy_(small_src)
            torch.cuda.synchronize(0)
        return (time.perf_counter() - start) / 100 * 1e6


def open_copy_engine(backend: str, size_mib: int) -> CopyEngine:
    """``torch`` (pinned buffers, streams, events) or ``numpy`` (the test mode)."""
    if backend == "numpy":
        return NumpyCopyEngine(size_mib)
    if backend in ("torch", "auto"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(
                "torch sees no CUDA device (check CUDA_VISIBLE_DEVICES and the driver)"
            )
        return TorchCopyEngine(size_mib, torch)
    raise RuntimeError(f"copy backend {backend!r} is not supported; use torch (pip install torch)")


def _emit(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def serve(engine: CopyEngine, size_mib: int, stdin: TextIO, stdout: TextIO) -> int:
    """Answer commands until ``exit`` or end of input (see the module docstring)."""
    _emit(stdout, {"ready": True, "gpus": engine.gpus, "peer_access": engine.peer_access})
    for line in stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        op = command.get("op")
        if op == "exit":
            break
        start_at = float(command.get("start_at") or 0.0)
        while time.monotonic() < start_at:
            time.sleep(min(0.001, start_at - time.monotonic()))
        if op == "p2p_latency":
            _emit(stdout, {"op": op, "latency_us": engine.latency_us()})
            continue
        iters = int(command.get("iters", 4))
        seconds = engine.copy(op, iters)
        moved = size_mib * MIB * iters * (2 if op == "bidir" else 1)
        _emit(stdout, {"op": op, "seconds": seconds, "gbps": moved / seconds / 1e9})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--backend",
        default="auto",
    )
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        engine = open_copy_engine(args.backend, args.size_mib)
    except Exception as exc:
        _emit(sys.stdout, {"error": f"{type(exc).__name__}: {exc}"})
        return 3
    return serve(engine, args.size_mib, sys.stdin, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
