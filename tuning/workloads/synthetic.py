"""``decode`` | ``prefill`` | ``batched`` on real GPUs: one :mod:`tuning.synthetic` worker each."""

from __future__ import annotations

import importlib.util
import weakref
from collections.abc import Sequence

from tuning.errors import BackendUnavailable, ConfigError
from tuning.synthetic import WorkerProcess
from tuning.workloads.base import WORKLOAD_CLASSES, Workload


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
