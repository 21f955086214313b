"""``decode`` | ``prefill`` | ``batched`` on real GPUs: one :mod:`tuning.synthetic` worker each.

:class:`WorkerProcess` is the parent side of the worker's process protocol (spawn
``python -m tuning.synthetic``, read its JSON lines, write ``run``/``pause``/``exit``; the
protocol is in :mod:`tuning.synthetic`'s docstring); :class:`SyntheticWorkload` keeps one per GPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuning.errors import BackendUnavailable, ConfigError, WorkloadFailed
from tuning.workloads.base import WORKLOAD_CLASSES, Workload


class WorkerProcess:
    """Spawn and steer one worker; a reader thread keeps its latest cumulative tokens.

    All methods return quickly except :meth:`wait_ready` (bounded) and :meth:`terminate`
    (bounded: SIGTERM, then SIGKILL after ``grace_s``).
    """

    def __init__(
        self,
        uuid: str,
        kind: str,
        *,
        backend: str = "auto",
        report_every_s: float = 0.1,
        max_mib: int | None = None,
        python: str = sys.executable,
        stall_timeout_s: float = 30.0,
    ) -> None:
        self.uuid = uuid
        self.kind = kind
        self.stall_timeout_s = stall_timeout_s
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._tokens = 0.0
        self._t_reported = time.monotonic()
        self._info: dict[str, Any] = {}
        self._error: str | None = None
        self._closing = False
        self._sigterm_sent = False
        self._reported_running = False
        self._stderr: deque[str] = deque(maxlen=40)
        # the directory holding the tuning package (this file is tuning/workloads/synthetic.py)
        root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": uuid,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        }
        argv = [
            python,
            "-m",
            "tuning.synthetic",
            "--kind",
            kind,
            "--device-uuid",
            uuid,
            "--backend",
            backend,
            "--report-every-s",
            str(report_every_s),
            "--paused",
            "--control",
            "stdin",
        ]
        if max_mib is not None:
            argv += ["--max-mib", str(max_mib)]
        # own session: a terminal's Ctrl-C reaches the tuner, which restores caps and then
        # stops the workers, instead of killing the load mid-measurement
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- reader threads ---------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                self._stderr.append(line.rstrip())
                continue
            if not isinstance(record, dict):
                continue
            with self._lock:
                self._t_reported = time.monotonic()
                if "error" in record:
                    self._error = str(record["error"])
                if "tokens" in record:
                    self._tokens = float(record["tokens"])
                if "running" in record:
                    self._reported_running = bool(record["running"])
                if record.get("ready"):
                    self._info = record
                    self._ready.set()
        self._ready.set()  # EOF: wake wait_ready so it sees the exit

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip())

    # -- state ------------------------------------------------------------------------------

    @property
    def tokens(self) -> float:
        """Cumulative reference tokens of completed work, as last reported."""
        with self._lock:
            return self._tokens

    @property
    def reported_running(self) -> bool:
        """The last report's ``running``: ``False`` once paused with nothing left in flight."""
        with self._lock:
            return self._reported_running

    @property
    def info(self) -> dict[str, Any]:
        """The worker's ``ready`` record (backend, shape, tokens_per_call, buffer_mib)."""
        with self._lock:
            return dict(self._info)

    def _why(self) -> str:
        tail = " | ".join(list(self._stderr)[-5:])
        said = self._error or tail or "no output"
        return f"exit status {self.proc.poll()}: {said}"

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the worker has allocated its buffers; raise if it failed or timed out."""
        if not self._ready.wait(timeout_s):
            self.terminate()
            raise BackendUnavailable(
                f"the synthetic load on {self.uuid} was not ready after {timeout_s:g} s "
                "(importing torch/cupy and allocating VRAM); it was stopped"
            )
        if not self._info:
            self.proc.wait(timeout=5)
            for thread in self._threads:
                thread.join(timeout=1)
            raise BackendUnavailable(
                f"the synthetic {self.kind!r} load could not start on {self.uuid} "
                f"({self._why()}); load the GPUs with 'cmd:llama-bench -m MODEL.gguf' or "
                "'openai:http://127.0.0.1:8000' instead"
            )

    def check(self) -> None:
        """Raise :class:`WorkloadFailed` if the worker exited or went silent unasked."""
        if self._closing:
            return
        if self.proc.poll() is not None:
            for thread in self._threads:
                thread.join(timeout=1)
            raise WorkloadFailed(
                f"the synthetic load on GPU {self.uuid} stopped ({self._why()}); its "
                "measurements are void — check the GPU (nvidia-smi, dmesg for Xid) and rerun"
            )
        with self._lock:
            silent_s = time.monotonic() - self._t_reported
        if silent_s > self.stall_timeout_s:
            raise WorkloadFailed(
                f"the synthetic load on GPU {self.uuid} has reported nothing for "
                f"{silent_s:.0f} s (a hung GPU?); check nvidia-smi and dmesg for Xid errors"
            )

    # -- control ----------------------------------------------------------------------------

    def _send(self, word: str) -> None:
        if self.proc.stdin is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()

    def run(self) -> None:
        """Start loading (non-blocking)."""
        self._send("run")

    def pause(self) -> None:
        """Stop loading after the chunk in flight (non-blocking); buffers stay allocated."""
        self._send("pause")

    def send_sigterm(self) -> None:
        """Ask the worker to finish its chunk and exit (once: see :meth:`terminate`)."""
        self._closing = True
        if self._sigterm_sent or self.proc.poll() is not None:
            return
        self._sigterm_sent = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)  # a stopped worker acts on SIGTERM now

    def terminate(self, grace_s: float = 2.0) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; return the exit status.

        SIGTERM goes once: a second one could land while the worker is already exiting, after
        Python has put the default action back, and kill it with -15 instead of a clean 0.
        """
        if self.proc.poll() is None:
            self.send_sigterm()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
        for thread in self._threads:
            thread.join(timeout=1)
        return self.proc.returncode


def synthetic_backend() -> str | None:
    """``torch`` or ``cupy`` when importable (a synthetic load can run), else ``None``."""
    for module in ("torch", "cupy"):
        if importlib.util.find_spec(module) is not None:
            return module
    return None


def no_synthetic_backend(workload_class: str) -> BackendUnavailable:
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
            raise no_synthetic_backend(workload_class)
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
