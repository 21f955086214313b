"""Workloads the tuner loads GPUs with, behind one interface.

A :class:`Workload` is started and stopped per GPU (by UUID) and keeps a cumulative count of
output tokens per GPU; the sweep measures throughput as Δtokens / Δt over a probe window, so
every workload — simulated, an external command, an HTTP endpoint — is measured the same way.

Specs (``rigforge sweep --workload``):

* ``decode`` | ``prefill`` | ``batched`` — on a simulated rig, its workload classes
  (:class:`SimWorkload`); on real GPUs a synthetic load, one worker process per GPU, that
  needs torch or cupy (:class:`SyntheticWorkload`, :mod:`tuning.synthetic`).
* ``cmd:COMMAND`` — run ``COMMAND`` repeatedly on the GPU (``CUDA_VISIBLE_DEVICES=<uuid>``,
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) and parse tokens/s from its output with a regex whose
  group ``tps`` is the rate (default: llama-bench's markdown ``t/s`` column,
  ``| … | tg 128 | 131.66 ± 0.23 |``; the last match of a run counts).
* ``openai:URL`` — async HTTP load against an OpenAI-compatible endpoint (``/v1/completions``
  or ``/v1/chat/completions``); output tokens are ``usage.completion_tokens``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shlex
import subprocess
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tuning.backends.base import Rig
from tuning.errors import BackendUnavailable, ConfigError
from tuning.synthetic import WorkerProcess

WORKLOAD_CLASSES = ("decode", "prefill", "batched")

#: llama-bench's markdown row ends with ``| 131.66 ± 0.23 |`` (mean ± stddev tokens/s)
LLAMA_BENCH_TPS_RE = r"(?P<tps>\d+(?:\.\d+)?)\s*±\s*\d+(?:\.\d+)?\s*\|?\s*$"


class Workload(ABC):
    """Load on GPUs, counted in output tokens."""

    name: str

    @abstractmethod
    def start(self, uuid: str) -> None:
        """Begin loading the GPU (idempotent)."""

    @abstractmethod
    def stop(self, uuid: str) -> None:
        """Stop loading the GPU (idempotent)."""

    @abstractmethod
    def tokens_total(self, uuid: str) -> float:
        """Output tokens produced on the GPU since the workload was created."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything and release resources."""


class SimWorkload(Workload):
    """The simulated rig's workload classes; the only sim-specific code in the tuner."""

    def __init__(self, rig: Any, workload_class: str) -> None:
        if workload_class not in WORKLOAD_CLASSES:
            raise ConfigError(
                f"unknown workload class {workload_class!r}; choose one of {WORKLOAD_CLASSES}"
            )
        self.rig = rig
        self.name = workload_class
        self._running: set[str] = set()

    def start(self, uuid: str) -> None:
        if uuid not in self._running:
            self.rig.set_workload(uuid, self.name)
            self._running.add(uuid)

    def stop(self, uuid: str) -> None:
        if uuid in self._running:
            self.rig.set_workload(uuid, None)
            self._running.discard(uuid)

    def tokens_total(self, uuid: str) -> float:
        return float(self.rig.tokens_total(uuid))

    def close(self) -> None:
        for uuid in list(self._running):
            self.stop(uuid)


# --------------------------------------------------------------------------------------------
# cmd:
# --------------------------------------------------------------------------------------------


def parse_tps(output: str, pattern: str = LLAMA_BENCH_TPS_RE) -> float | None:
    """The last tokens/s figure in ``output`` (regex group ``tps``, or group 1), else ``None``."""
    regex = re.compile(pattern, re.MULTILINE)
    last = None
    for match in regex.finditer(output):
        last = match.group("tps") if "tps" in regex.groupindex else match.group(1)
    return float(last) if last is not None else None


class CmdWorkload(Workload):
    """Run an external benchmark in a loop per GPU; tokens += parsed rate × run duration."""

    def __init__(
        self, command: str, *, tps_regex: str = LLAMA_BENCH_TPS_RE, timeout_s: float = 600.0
    ) -> None:
        if not command.strip():
            raise ConfigError("cmd: workload needs a command, e.g. 'cmd:llama-bench -m model.gguf'")
        re.compile(tps_regex)
        self.name = f"cmd:{command}"
        self.argv = shlex.split(command)
        self.tps_regex = tps_regex
        self.timeout_s = timeout_s
        self._tokens: dict[str, float] = {}
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def run_once(self, uuid: str) -> tuple[float, float]:
        """Run the command once on ``uuid``; return (tokens/s, seconds). Raises on no match."""
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        started = time.monotonic()
        done = subprocess.run(
            self.argv, env=env, capture_output=True, text=True, timeout=self.timeout_s, check=False
        )
        elapsed = time.monotonic() - started
        tps = parse_tps(done.stdout, self.tps_regex)
        if done.returncode != 0 or tps is None:
            raise ConfigError(
                f"workload command {self.argv[0]!r} exited {done.returncode} and printed no "
                f"throughput matching {self.tps_regex!r}; last output: {done.stdout[-200:]!r}"
            )
        return tps, elapsed

    def _loop(self, uuid: str, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                tps, elapsed = self.run_once(uuid)
            except (ConfigError, subprocess.TimeoutExpired, OSError) as error:
                self.errors.append(str(error))
                return
            with self._lock:
                self._tokens[uuid] = self._tokens.get(uuid, 0.0) + tps * elapsed

    def start(self, uuid: str) -> None:
        if uuid in self._threads:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._loop, args=(uuid, stop), daemon=True)
        self._threads[uuid] = (thread, stop)
        thread.start()

    def stop(self, uuid: str) -> None:
        entry = self._threads.pop(uuid, None)
        if entry:
            entry[1].set()

    def tokens_total(self, uuid: str) -> float:
        with self._lock:
            return self._tokens.get(uuid, 0.0)

    def close(self) -> None:
        for uuid in list(self._threads):
            self.stop(uuid)


# --------------------------------------------------------------------------------------------
# openai:URL
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """A bounded HTTP load run: completed requests, output tokens, wall seconds."""

    requests: int
    completion_tokens: int
    elapsed_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _endpoint(url: str) -> tuple[str, bool]:
    """(full URL, is_chat). A bare server URL gets ``/v1/completions``."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url, True
    if url.endswith("/completions"):
        return url, False
    if url.endswith("/v1"):
        return url + "/completions", False
    return url + "/v1/completions", False


async def run_openai_load(
    url: str,
    *,
    requests: int,
    concurrency: int = 4,
    model: str = "default",
    prompt: str = "Write a long story about a GPU that learned to save power.",
    max_tokens: int = 128,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send ``requests`` completions, ``concurrency`` at a time; sum ``usage.completion_tokens``."""
    endpoint, chat = _endpoint(url)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0.0}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    semaphore = asyncio.Semaphore(concurrency)
    tokens = 0
    done = 0

    async with httpx.AsyncClient(timeout=timeout_s) as client:

        async def one() -> None:
            nonlocal tokens, done
            async with semaphore:
                response = await client.post(endpoint, json=body)
                response.raise_for_status()
                usage = response.json().get("usage") or {}
                tokens += int(usage.get("completion_tokens", 0))
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(requests)))
        elapsed = time.monotonic() - started
    return LoadResult(requests=done, completion_tokens=tokens, elapsed_s=elapsed)


class OpenAIWorkload(Workload):
    """Continuous load against an endpoint in a background thread, in bounded batches.

    The endpoint serves on some set of GPUs; its tokens are credited to every started GPU
    (sweep the GPUs behind one endpoint together).
    """

    def __init__(self, url: str, *, batch_requests: int = 16, concurrency: int = 4) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"openai: workload needs an http(s) URL, got {url!r}")
        self.name = f"openai:{url}"
        self.url = url
        self.batch_requests = batch_requests
        self.concurrency = concurrency
        self._tokens = 0.0
        self._active: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = asyncio.run(
                    run_openai_load(
                        self.url, requests=self.batch_requests, concurrency=self.concurrency
                    )
                )
            except (httpx.HTTPError, ValueError) as error:
                self.errors.append(str(error))
                return
            self._tokens += result.completion_tokens

    def start(self, uuid: str) -> None:
        self._active.add(uuid)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self, uuid: str) -> None:
        self._active.discard(uuid)
        if not self._active:
            self._stop.set()

    def tokens_total(self, uuid: str) -> float:
        return self._tokens

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------------
# decode | prefill | batched on real GPUs
# --------------------------------------------------------------------------------------------


def _no_synthetic_backend(workload_class: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"the synthetic {workload_class!r} load needs torch or cupy, and neither is installed "
        "in this Python; 'pip install torch' (or cupy-cuda12x) into rigforge's environment, or "
        "load the GPUs with 'cmd:llama-bench -m MODEL.gguf' or "
        "'openai:http://127.0.0.1:8000' (an OpenAI-compatible server)"
    )


class SyntheticWorkload(Workload):
    """One :mod:`tuning.synthetic` worker process per GPU, counted in reference tokens.

    Workers are spawned paused (buffers allocated) for ``uuids`` at construction, in parallel,
    and for any other GPU at its first :meth:`start`; :meth:`start`/:meth:`stop` then only
    write ``run``/``pause`` to the worker (quick). :meth:`tokens_total` is the worker's last
    report of completed work (every ``report_every_s``) and raises
    :class:`~tuning.errors.WorkloadFailed` when a worker died or went silent. ``backend``:
    ``torch``/``cupy`` (default: whichever is importable, torch first) or ``numpy`` (CPU test
    mode). :meth:`close` terminates every worker (SIGTERM, then SIGKILL); workers also exit on
    their own when this process dies.
    """

    def __init__(
        self,
        workload_class: str,
        uuids: Sequence[str] = (),
        *,
        backend: str | None = None,
        report_every_s: float = 0.1,
        max_mib: int | None = None,
        ready_timeout_s: float = 120.0,
        stall_timeout_s: float = 30.0,
    ) -> None:
        if workload_class not in WORKLOAD_CLASSES:
            raise ConfigError(
                f"unknown workload class {workload_class!r}; choose one of {WORKLOAD_CLASSES}"
            )
        backend = backend or synthetic_backend()
        if backend is None:
            raise _no_synthetic_backend(workload_class)
        self.name = workload_class
        self.backend = backend
        self.report_every_s = report_every_s
        self.max_mib = max_mib
        self.ready_timeout_s = ready_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._workers: dict[str, WorkerProcess] = {}
        self._running: set[str] = set()
        # workers exit when this process dies anyway; this also stops them at interpreter exit
        self._finalizer = weakref.finalize(self, _terminate_all, self._workers)
        try:
            for uuid in dict.fromkeys(uuids):
                self._spawn(uuid)
            for uuid in list(self._workers):
                self._workers[uuid].wait_ready(self.ready_timeout_s)
        except BaseException:
            self.close()
            raise

    def _spawn(self, uuid: str) -> WorkerProcess:
        worker = WorkerProcess(
            uuid,
            self.name,
            backend=self.backend,
            report_every_s=self.report_every_s,
            max_mib=self.max_mib,
            stall_timeout_s=self.stall_timeout_s,
        )
        self._workers[uuid] = worker
        return worker

    def worker(self, uuid: str) -> WorkerProcess | None:
        """The worker loading ``uuid`` (its ``info``: backend, GEMM shape, buffer size)."""
        return self._workers.get(uuid)

    def start(self, uuid: str) -> None:
        worker = self._workers.get(uuid)
        if worker is None:
            worker = self._spawn(uuid)
            worker.wait_ready(self.ready_timeout_s)
        worker.check()
        if uuid not in self._running:
            worker.run()
            self._running.add(uuid)

    def stop(self, uuid: str) -> None:
        worker = self._workers.get(uuid)
        if worker is not None and uuid in self._running:
            worker.pause()
        self._running.discard(uuid)

    def tokens_total(self, uuid: str) -> float:
        worker = self._workers.get(uuid)
        if worker is None:
            return 0.0
        worker.check()
        return worker.tokens

    def close(self) -> None:
        self._running.clear()
        _terminate_all(self._workers)


def _terminate_all(workers: dict[str, WorkerProcess]) -> None:
    for worker in workers.values():  # all at once, then wait: workers finish in parallel
        worker.send_sigterm()
    for worker in workers.values():
        worker.terminate()


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def synthetic_backend() -> str | None:
    """``torch`` or ``cupy`` when importable (a synthetic load can run), else ``None``."""
    for module in ("torch", "cupy"):
        if importlib.util.find_spec(module) is not None:
            return module
    return None


def make_workload(spec: str, rig: Rig) -> Workload:
    """Build the workload named by ``spec`` for ``rig`` (see the module docstring)."""
    if spec.startswith("cmd:"):
        return CmdWorkload(spec.removeprefix("cmd:"))
    if spec.startswith("openai:"):
        return OpenAIWorkload(spec.removeprefix("openai:"))
    if spec in WORKLOAD_CLASSES:
        if hasattr(rig, "set_workload") and hasattr(rig, "tokens_total"):
            return SimWorkload(rig, spec)
        backend = synthetic_backend()
        if backend is None:
            raise _no_synthetic_backend(spec)
        return SyntheticWorkload(spec, [gpu.uuid for gpu in rig.gpus], backend=backend)
    raise ConfigError(
        f"unknown workload {spec!r}; choose decode, prefill, batched, cmd:COMMAND or openai:URL"
    )
