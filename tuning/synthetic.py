"""Synthetic GPU load for real rigs: one worker process per GPU, counted in reference tokens.

This module is the worker; its parent side (spawn, read the reports, steer) is
:class:`tuning.workloads.synthetic.WorkerProcess`. Run by hand or by
:class:`tuning.workloads.synthetic.SyntheticWorkload`::

    CUDA_VISIBLE_DEVICES=GPU-… CUDA_DEVICE_ORDER=PCI_BUS_ID \\
        python -m tuning.synthetic --kind decode --device-uuid GPU-… [--report-every-s 0.5]

The worker sees exactly one GPU (``CUDA_VISIBLE_DEVICES`` names it by UUID), so GPUs load in
parallel and a stuck worker can be killed without touching the others. It never touches power
limits, clocks or any other setting: the tuner's actuator owns those.

**Kernels** — every kind is one fp16 GEMM ``Y[m,n] = X[m,k] @ W[k,n]`` repeated, shaped like
the workload class it mimics:

* ``decode`` (memory-bound): ``m = 1`` (a GEMV), ``W`` about 2 GiB — far beyond any L2
  (H100: 50 MB, RTX 4090: 72 MB) — so each call streams ``W`` from VRAM once, as a decoder
  streams its weights once per token.
* ``batched`` (in between): ``m = 256`` over the same ``W``: 256 FLOPs per weight byte, near the
  ridge point of current cards (H100 SXM: 989 TFLOP/s ÷ 3.35 TB/s ≈ 295 FLOP/B), so both
  bandwidth and SM clocks matter, as in continuous batching.
* ``prefill`` (compute-bound): ``m = 4096, k = n = 8192``, tensor-core bound.

**Tokens** — throughput is reported in tokens of a reference dense 8 B-parameter fp16 model
(16 GB of weights; 2 × 8e9 FLOPs per token). A GEMM call of shape ``(m, k, n)`` does the work of
``m`` tokens passing through ``k·n`` of the model's 8e9 parameters, so it counts

    tokens_per_call = m · k · n / 8e9

which is ``weight_bytes / 16 GB`` for ``decode`` (``m = 1``, 2 bytes per weight) and
``FLOPs / (2 × 8e9)`` for ``prefill`` and ``batched``. The absolute scale is arbitrary; the
tuner only compares a GPU's tokens/s and tokens/J across power caps.

**Counting** — only completed work counts: calls are enqueued in chunks of about
``CHUNK_TARGET_S``, one chunk queued behind the one being waited on (a CUDA event per chunk), and
a chunk's tokens are added when its event has completed.

**Memory** — sized from free VRAM: ``headroom = max(1 GiB, 10 % of total)`` stays free, the load
takes at most half of the rest and at most ``--max-mib``; below ``MIN_WEIGHT_BYTES`` of weights
the worker refuses to start rather than run a load that fits in cache or OOMs the card.

**Protocol** (stdout, one JSON object per line, flushed):

* first ``{"ready": true, "t", "tokens": 0, "kind", "backend", "shape": [m, k, n],
  "tokens_per_call", "buffer_mib"}``, or ``{"error": "…"}`` and exit status 3;
* then every ``--report-every-s`` ``{"t": monotonic_s, "tokens": cumulative, "kind", "running"}``
  — ``t`` is when ``tokens`` was last counted (``time.monotonic``, the system-wide
  ``CLOCK_MONOTONIC`` the parent also reads), also while paused (a heartbeat);
  ``"running": false`` means paused with no work in flight: the count is final until ``run``;
* last ``{"t", "tokens", "kind", "exit": reason, "busy_s", "tokens_per_s", "weight_gbps",
  "tflops"}`` (reasons: ``signal``, ``parent-exited``, ``stdin-closed``, ``exit-command``,
  ``time-up``); the rates are over the time spent loading — ``weight_gbps`` (W bytes read per
  second) is the figure to compare with the card's memory bandwidth for ``decode``, ``tflops``
  with its fp16 tensor throughput for ``prefill``.

With ``--control stdin`` the worker obeys lines ``run`` / ``pause`` / ``exit`` on stdin and exits
when stdin closes; ``--paused`` starts it idle (buffers allocated, waiting for ``run``). It exits
on SIGTERM/SIGINT, when its parent process dies (``os.getppid()`` changes) and, with
``--seconds S``, after loading S seconds.

``--backend numpy`` runs the same loop on the CPU with float32 and a few MiB: a test/CPU mode
for the process protocol, not a GPU load.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TextIO

from tuning.errors import BackendUnavailable

KINDS = ("decode", "prefill", "batched")
BACKENDS = ("torch", "cupy", "numpy")

#: the reference model the token count is expressed in: dense, 8e9 parameters
REFERENCE_PARAMS = 8e9
#: fp16 weights streamed per decoded token of the reference model. Units: bytes.
REFERENCE_BYTES_PER_TOKEN = 2 * REFERENCE_PARAMS
#: FLOPs per token of the reference model (one multiply-add per parameter).
REFERENCE_FLOPS_PER_TOKEN = 2 * REFERENCE_PARAMS

#: rows of X per call: one sequence for decode, a serving batch for batched
BATCH_ROWS = {"decode": 1, "batched": 256}
MAX_K = 8192
#: target working set per kind on a GPU. Units: bytes.
GPU_TARGET_BYTES = {"decode": 2 << 30, "batched": 2 << 30, "prefill": 512 << 20}
#: the smallest weight matrix worth streaming: 7 × the L2 of an RTX 4090 (72 MB), 10 × H100 (50 MB)
MIN_WEIGHT_BYTES = 512 << 20
#: numpy (CPU test mode) working set when --max-mib is not given. Units: MiB.
NUMPY_DEFAULT_MIB = 4
#: wall time one chunk of calls should take; bounds pause latency and count granularity. Units: s.
CHUNK_TARGET_S = 0.05

EXIT_STARTUP_ERROR = 3


# --------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GemmShape:
    """One call ``Y[m,n] = X[m,k] @ W[k,n]`` with elements of ``elem_bytes`` bytes."""

    m: int
    k: int
    n: int
    elem_bytes: int

    @property
    def tokens_per_call(self) -> float:
        """Reference-model tokens one call is worth: ``m·k·n / 8e9`` (module docstring)."""
        return self.m * self.k * self.n / REFERENCE_PARAMS

    @property
    def weight_bytes(self) -> int:
        """Bytes of ``W`` (streamed from memory once per call). Units: bytes."""
        return self.k * self.n * self.elem_bytes

    @property
    def total_bytes(self) -> int:
        """Bytes of X, W and Y together. Units: bytes."""
        return (self.m * self.k + self.k * self.n + self.m * self.n) * self.elem_bytes

    @property
    def flops_per_call(self) -> float:
        """Multiply-adds × 2. Units: FLOP."""
        return 2.0 * self.m * self.k * self.n


def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1.0))))


def plan_shape(kind: str, budget_bytes: int, elem_bytes: int) -> GemmShape:
    """The largest GEMM of ``kind`` whose X + W + Y fit in ``budget_bytes``.

    ``decode``/``batched``: ``k`` a power of two ≤ 8192, ``n`` a multiple of 64 filling the
    budget. ``prefill``: ``k = n = s``, ``m = s/2`` with ``s`` a power of two ≤ 8192.
    Raises ``ValueError`` when the budget cannot hold a meaningful shape.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    elems = budget_bytes // elem_bytes
    if kind == "prefill":
        s = min(MAX_K, _pow2_floor(math.sqrt(elems / 2)))
        if s < 64:
            raise ValueError(f"{budget_bytes} bytes cannot hold a prefill GEMM")
        return GemmShape(m=s // 2, k=s, n=s, elem_bytes=elem_bytes)
    m = BATCH_ROWS[kind]
    k = min(MAX_K, _pow2_floor(math.sqrt(elems)))
    n = (elems - m * k) // (k + m) // 64 * 64
    if k < 64 or n < 64:
        raise ValueError(f"{budget_bytes} bytes cannot hold a {kind} GEMM")
    return GemmShape(m=m, k=k, n=n, elem_bytes=elem_bytes)


def gpu_budget_bytes(
    kind: str, free_bytes: int, total_bytes: int, max_bytes: int | None = None
) -> int:
    """Working-set bytes for ``kind`` on a GPU with ``free_bytes`` of ``total_bytes`` free.

    Leaves ``max(1 GiB, 10 % of total)`` free, takes at most half of the rest, at most the
    kind's target and at most ``max_bytes``. Raises :class:`BackendUnavailable` when the
    weights would fall under ``MIN_WEIGHT_BYTES`` (decode/batched) or the GEMM cannot fit.
    """
    headroom = max(1 << 30, total_bytes // 10)
    budget = min(GPU_TARGET_BYTES[kind], max(0, free_bytes - headroom) // 2)
    if max_bytes is not None:
        budget = min(budget, max_bytes)
    needed = MIN_WEIGHT_BYTES if kind != "prefill" else 16 << 20
    if budget < needed:
        raise BackendUnavailable(
            f"the synthetic {kind!r} load needs {needed >> 20} MiB of VRAM beyond a "
            f"{headroom >> 20} MiB headroom, but only {free_bytes >> 20} MiB of "
            f"{total_bytes >> 20} MiB is free (and --max-mib may cap it); stop what runs on "
            "the GPU (a serving stack?) or load it with 'cmd:…'/'openai:URL' instead"
        )
    return budget


# --------------------------------------------------------------------------------------------
# Engines: enqueue calls, wait for their completion
# --------------------------------------------------------------------------------------------


class Engine(Protocol):
    """A GEMM loop on one device.

    ``launch(calls)`` enqueues ``calls`` GEMMs and returns a handle; ``wait(handle)`` blocks
    until that work is complete. ``pipelined``: launches return before the work is done (GPU),
    so the worker keeps one chunk queued behind the one it waits on.
    """

    backend: str
    shape: GemmShape
    pipelined: bool

    def launch(self, calls: int) -> Any: ...

    def wait(self, handle: Any) -> None: ...


class NumpyEngine:
    """CPU float32 GEMMs (test/CPU mode): launches run synchronously."""

    backend = "numpy"
    pipelined = False

    def __init__(self, kind: str, max_bytes: int | None) -> None:
        import numpy as np

        budget = max_bytes if max_bytes is not None else NUMPY_DEFAULT_MIB << 20
        self.shape = plan_shape(kind, budget, 4)
        s = self.shape
        rng = np.random.default_rng(0)
        self._np = np
        self.x = rng.standard_normal((s.m, s.k), dtype=np.float32)
        self.w = rng.standard_normal((s.k, s.n), dtype=np.float32)
        self.y = np.empty((s.m, s.n), dtype=np.float32)

    def launch(self, calls: int) -> None:
        for _ in range(calls):
            self._np.matmul(self.x, self.w, out=self.y)

    def wait(self, handle: Any) -> None:
        return None


class TorchEngine:
    """fp16 GEMMs on ``cuda:0`` (the one GPU ``CUDA_VISIBLE_DEVICES`` shows) with torch."""

    backend = "torch"
    pipelined = True

    def __init__(self, kind: str, max_bytes: int | None, torch: ModuleType) -> None:
        self._torch = torch
        free_b, total_b = torch.cuda.mem_get_info()
        budget = gpu_budget_bytes(kind, int(free_b), int(total_b), max_bytes)
        self.shape = plan_shape(kind, budget, 2)
        s = self.shape
        # Random data: constant buffers toggle fewer bits and draw visibly less power.
        gen = torch.Generator(device="cuda").manual_seed(0)
        opts: dict[str, Any] = {"dtype": torch.float16, "device": "cuda"}
        self.x = torch.randn((s.m, s.k), generator=gen, **opts)
        self.w = torch.randn((s.k, s.n), generator=gen, **opts)
        self.y = torch.empty((s.m, s.n), **opts)
        torch.cuda.synchronize()

    def launch(self, calls: int) -> Any:
        torch = self._torch
        for _ in range(calls):
            torch.matmul(self.x, self.w, out=self.y)
        # blocking: the waiting CPU thread sleeps instead of spinning a core per GPU, which
        # would add platform draw to the very budget being measured
        event = torch.cuda.Event(blocking=True)
        event.record()
        return event

    def wait(self, handle: Any) -> None:
        handle.synchronize()


class CupyEngine:
    """fp16 GEMMs on device 0 with cupy."""

    backend = "cupy"
    pipelined = True

    def __init__(self, kind: str, max_bytes: int | None, cupy: ModuleType) -> None:
        self._cp = cupy
        free_b, total_b = cupy.cuda.runtime.memGetInfo()
        budget = gpu_budget_bytes(kind, int(free_b), int(total_b), max_bytes)
        self.shape = plan_shape(kind, budget, 2)
        s = self.shape
        rng = cupy.random.default_rng(0)
        self.x = self._randn(rng, s.m, s.k)
        self.w = self._randn(rng, s.k, s.n)
        self.y = cupy.empty((s.m, s.n), dtype=cupy.float16)
        cupy.cuda.Device().synchronize()

    def _randn(self, rng: Any, rows: int, cols: int) -> Any:
        cp = self._cp
        out = cp.empty((rows, cols), dtype=cp.float16)
        # cupy draws float32 at best: fill in slabs so the float32 temporary stays ≤ 256 MiB
        step = max(1, (256 << 20) // (4 * cols))
        for r in range(0, rows, step):
            out[r : r + step] = rng.standard_normal((min(step, rows - r), cols), dtype=cp.float32)
        return out

    def launch(self, calls: int) -> Any:
        cp = self._cp
        for _ in range(calls):
            cp.matmul(self.x, self.w, out=self.y)
        event = cp.cuda.Event(block=True, disable_timing=True)  # see TorchEngine.launch
        event.record()
        return event

    def wait(self, handle: Any) -> None:
        handle.synchronize()


def available_backend() -> str | None:
    """``torch`` if importable, else ``cupy``, else ``None`` (numpy is never chosen by itself)."""
    import importlib.util

    for name in ("torch", "cupy"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def open_engine(backend: str, kind: str, max_bytes: int | None = None) -> Engine:
    """Import ``backend`` (``auto``: torch, else cupy) and allocate the buffers for ``kind``."""
    if backend == "auto":
        backend = available_backend() or ""
        if not backend:
            raise BackendUnavailable(
                "neither torch nor cupy is importable: 'pip install torch' (or cupy-cuda12x)"
            )
    if backend == "numpy":
        return NumpyEngine(kind, max_bytes)
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    try:
        module = importlib.import_module(backend)
    except ImportError as error:
        raise BackendUnavailable(f"cannot import {backend}: {error}") from error
    if backend == "torch":
        if not module.cuda.is_available():
            raise BackendUnavailable(
                "torch is installed but sees no CUDA device (a CPU-only wheel, or "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} names no GPU)"
            )
        return TorchEngine(kind, max_bytes, module)
    return CupyEngine(kind, max_bytes, module)


# --------------------------------------------------------------------------------------------
# The worker loop
# --------------------------------------------------------------------------------------------


@dataclass
class Control:
    """Flags shared by the loop, the stdin reader and the signal handlers."""

    running: threading.Event
    stop: threading.Event
    reason: str = ""

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()
        self.running.set()  # wakes a paused loop


def _emit(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, separators=(",", ":")) + "\n")
    out.flush()


def read_control(stream: TextIO, control: Control) -> None:
    """Obey ``run``/``pause``/``exit`` lines from ``stream``; EOF means the parent is gone."""
    for line in stream:
        word = line.strip().lower()
        if word == "run":
            control.running.set()
        elif word == "pause":
            control.running.clear()
        elif word == "exit":
            control.request_stop("exit-command")
            return
    control.request_stop("stdin-closed")


def serve(
    engine: Engine,
    *,
    kind: str,
    control: Control,
    out: TextIO,
    report_every_s: float = 0.5,
    parent_pid: int | None = None,
    run_for_s: float | None = None,
    chunk_target_s: float = CHUNK_TARGET_S,
    clock: Any = time.monotonic,
) -> float:
    """Run ``engine`` while ``control.running`` is set, report, return the final token count.

    Returns when ``control.stop`` is set, the parent process (``parent_pid``) is gone, or the
    load has run ``run_for_s`` seconds; work in flight is waited for and counted before the last
    report, which also carries the achieved rates over the running time (``busy_s``).
    """
    shape = engine.shape
    per_call = shape.tokens_per_call
    tokens = 0.0
    calls_done = 0
    busy_s = 0.0
    calls = 1
    inflight: deque[tuple[Any, int]] = deque()
    t_counted = clock()
    last_done: float | None = None
    next_report = t_counted + report_every_s

    def complete_oldest() -> None:
        nonlocal tokens, calls_done, busy_s, t_counted, calls, last_done
        handle, n = inflight.popleft()
        engine.wait(handle)
        now = clock()
        calls_done += n
        tokens = calls_done * per_call
        t_counted = now
        if last_done is not None and now > last_done:
            busy_s += now - last_done
            # next chunk sized to take chunk_target_s; at most ×2 / ÷2 per step
            ideal = n * chunk_target_s / (now - last_done)
            calls = max(1, min(calls * 2, max(calls // 2, round(ideal))))
        last_done = now

    try:
        while not control.stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                control.request_stop("parent-exited")
                break
            if run_for_s is not None and busy_s >= run_for_s:
                control.request_stop("time-up")
                break
            if control.running.is_set():
                started = clock()
                inflight.append((engine.launch(calls), calls))
                if last_done is None:
                    last_done = started
                if len(inflight) > (1 if engine.pipelined else 0):
                    complete_oldest()
            else:
                while inflight:
                    complete_oldest()
                last_done = None
                control.running.wait(timeout=max(0.0, min(0.1, next_report - clock())))
            now = clock()
            if now >= next_report and not control.stop.is_set():
                # "running": false promises the count is final: nothing left in flight
                running = control.running.is_set() or bool(inflight)
                t = t_counted if running else now
                _emit(out, {"t": t, "tokens": tokens, "kind": kind, "running": running})
                next_report = max(next_report + report_every_s, now)
    finally:
        while inflight:
            complete_oldest()
    final: dict[str, Any] = {"t": clock(), "tokens": tokens, "kind": kind}
    final["exit"] = control.reason
    final["busy_s"] = round(busy_s, 3)
    if busy_s > 0:
        final["tokens_per_s"] = tokens / busy_s
        final["weight_gbps"] = calls_done * shape.weight_bytes / busy_s / 1e9
        final["tflops"] = calls_done * shape.flops_per_call / busy_s / 1e12
    with contextlib.suppress(OSError, ValueError):
        _emit(out, final)
    return tokens


def main(argv: list[str] | None = None) -> int:
    """``python -m tuning.synthetic``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tuning.synthetic", description=__doc__)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument(
        "--device-uuid",
        required=True,
        help="GPU-… UUID; must be what CUDA_VISIBLE_DEVICES shows (set it if unset)",
    )
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto")
    parser.add_argument("--report-every-s", type=float, default=0.5)
    parser.add_argument("--max-mib", type=int, default=None, help="cap on the working set")
    parser.add_argument("--paused", action="store_true", help="allocate, then wait for 'run'")
    parser.add_argument(
        "--seconds", type=float, default=None, help="stop after loading this long (a quick check)"
    )
    parser.add_argument("--control", choices=("none", "stdin"), default="none")
    args = parser.parse_args(argv)

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if args.backend != "numpy":
        if visible is None:
            # a worker on a GPU it was not asked for would load the wrong card
            os.environ["CUDA_VISIBLE_DEVICES"] = args.device_uuid
            os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        elif visible != args.device_uuid:
            _emit(
                sys.stdout,
                {
                    "error": f"CUDA_VISIBLE_DEVICES={visible!r} but --device-uuid is "
                    f"{args.device_uuid!r}; a worker loads exactly the GPU it is given"
                },
            )
            return EXIT_STARTUP_ERROR

    parent_pid = os.getppid()
    control = Control(running=threading.Event(), stop=threading.Event())
    if not args.paused:
        control.running.set()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: control.request_stop("signal"))

    max_bytes = args.max_mib << 20 if args.max_mib is not None else None
    try:
        engine = open_engine(args.backend, args.kind, max_bytes)
    except (BackendUnavailable, ValueError, RuntimeError, MemoryError) as error:
        # RuntimeError: torch's CUDA errors (init failure, OOM) surface as RuntimeError
        _emit(sys.stdout, {"error": str(error)})
        return EXIT_STARTUP_ERROR
    s = engine.shape
    _emit(
        sys.stdout,
        {
            "ready": True,
            "t": time.monotonic(),
            "tokens": 0.0,
            "kind": args.kind,
            "backend": engine.backend,
            "device_uuid": args.device_uuid,
            "shape": [s.m, s.k, s.n],
            "tokens_per_call": s.tokens_per_call,
            "buffer_mib": round(s.total_bytes / (1 << 20), 1),
        },
    )
    if args.control == "stdin":
        threading.Thread(target=read_control, args=(sys.stdin, control), daemon=True).start()
    try:
        serve(
            engine,
            kind=args.kind,
            control=control,
            out=sys.stdout,
            report_every_s=args.report_every_s,
            parent_pid=parent_pid,
            run_for_s=args.seconds,
        )
    except BrokenPipeError:
        return 0  # the reader is gone: nobody to load the GPU for
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    # skip interpreter teardown: the stdin reader is a daemon thread blocked in read(), and
    # torch's CUDA teardown is slow; the driver frees the context when the process ends
    os._exit(status)
