"""``rigforge links`` on real GPUs: copy workers (:mod:`tuning.links_worker`) behind a prober.

One worker per GPU (``CUDA_VISIBLE_DEVICES=<uuid>``) measures its host link; copies meant to
run at once are started on every worker at the same ``time.monotonic`` instant. GPU pairs get
a worker that sees both (``CUDA_VISIBLE_DEVICES=<src>,<dst>``), which reports whether the
platform allows peer access and measures the copy either way (the CUDA runtime stages it
through host memory where peer access is not available). The link is read through the rig
(NVML) while copies run. Nothing here changes a power limit, clock, persistence or P2P setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from tuning.backends.base import Rig
from tuning.errors import BackendUnavailable, WorkloadFailed
from tuning.fabric.model import P2pMode, Transfer
from tuning.links import LinkProber
from tuning.synthetic import available_backend

#: How long a worker may take to allocate its buffers and answer ready. Units: s.
READY_TIMEOUT_S = 60.0
#: Copies per measurement (after one warm-up run).
ITERS = 4
#: Lead time for a synchronised start of copies on several workers. Units: s.
START_LEAD_S = 0.2


class CopyWorker:
    """One ``python -m tuning.links_worker`` process and its JSON-lines protocol."""

    def __init__(
        self,
        uuids: Sequence[str],
        size_mib: int,
        backend: str,
        python: str = sys.executable,
    ) -> None:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        self.uuids = tuple(uuids)
        self._proc = subprocess.Popen(
            [
                python,
                "-m",
                "tuning.links_worker",
                "--backend",
                backend,
                "--size-mib",
                str(size_mib),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = self._read()
        if "error" in ready:
            self.close()
            raise WorkloadFailed(f"links worker for {', '.join(uuids)}: {ready['error']}")
        self.peer_access: bool | None = ready.get("peer_access")

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            raise WorkloadFailed(
                f"links worker for {', '.join(self.uuids)} exited "
                f"({self._proc.poll()}): {err.strip()[-400:] or 'no output'}"
            )
        record: dict[str, Any] = json.loads(line)
        return record

    def send(self, command: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        self.send(command)
        return self._read()

    def reply(self) -> dict[str, Any]:
        return self._read()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.send({"op": "exit"})
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()


class GpuProber(LinkProber):
    """Measures real GPUs with copy workers; reads each link through the rig while busy."""

    def __init__(self, rig: Rig, size_mib: int, backend: str) -> None:
        self._rig = rig
        self._size_mib = size_mib
        self._backend = backend
        self._workers: dict[int, CopyWorker] = {}
        self._pairs: dict[tuple[int, int], CopyWorker] = {}
        self._seen: dict[int, tuple[int | None, int | None]] = {}

    @classmethod
    def start(cls, rig: Rig, size_mib: int = 256, backend: str | None = None) -> GpuProber:
        """A prober for the rig's GPUs; :class:`BackendUnavailable` without torch."""
        chosen = backend or available_backend()
        if chosen is None:
            raise BackendUnavailable(
                "rigforge links on real GPUs needs torch for its copy workers: "
                "pip install torch (or pip install 'rigforge[gpu-load]')"
            )
        if chosen == "cupy":
            raise BackendUnavailable(
                "rigforge links' copy workers use torch (pinned buffers, CUDA events): "
                "pip install torch"
            )
        return cls(rig, size_mib, chosen)

    def _worker(self, index: int) -> CopyWorker:
        if index not in self._workers:
            uuid = self._rig.gpus[index].uuid
            self._workers[index] = CopyWorker([uuid], self._size_mib, self._backend)
            self._workers[index].ask({"op": "h2d", "iters": 1})  # warm-up
        return self._workers[index]

    def _pair(self, src: int, dst: int) -> CopyWorker:
        key = (src, dst)
        if key not in self._pairs:
            uuids = [self._rig.gpus[src].uuid, self._rig.gpus[dst].uuid]
            self._pairs[key] = CopyWorker(uuids, self._size_mib, self._backend)
            self._pairs[key].ask({"op": "p2p", "iters": 1})  # warm-up
        return self._pairs[key]

    def run(self, transfers: Sequence[Transfer], size_mib: int) -> list[float]:
        h2d_d2h = {t.gpu for t in transfers if t.kind in ("h2d", "d2h") and t.gpu is not None}
        bidir = (
            len(transfers) == 2
            and len(h2d_d2h) == 1
            and {t.kind for t in transfers} == {"h2d", "d2h"}
        )
        if bidir:
            (gpu,) = h2d_d2h
            reply = self._worker(gpu).ask({"op": "bidir", "iters": ITERS})
            self._sample_links(h2d_d2h)
            half = float(reply["gbps"]) / 2
            return [half, half]
        workers: list[tuple[CopyWorker, str]] = []
        for t in transfers:
            if t.kind in ("h2d", "d2h"):
                assert t.gpu is not None
                workers.append((self._worker(t.gpu), t.kind))
            elif t.kind == "p2p":
                assert t.src is not None
                assert t.dst is not None
                workers.append((self._pair(t.src, t.dst), "p2p"))
            else:
                raise ValueError("device transfers are not measured on real rigs")
        start_at = time.monotonic() + START_LEAD_S
        for worker, op in workers:
            worker.send({"op": op, "iters": ITERS, "start_at": start_at})
        time.sleep(START_LEAD_S)
        self._sample_links(h2d_d2h)
        return [float(worker.reply()["gbps"]) for worker, _ in workers]

    def _sample_links(self, gpus: set[int]) -> None:
        for index in gpus:
            link = self._rig.gpus[index].pcie_link()
            self._seen[index] = (link.gen_current, link.width_current)

    def latency_us(self, src: int, dst: int) -> float | None:
        value = float(self._pair(src, dst).ask({"op": "p2p_latency"})["latency_us"])
        return None if value != value else value

    def mode(self, src: int, dst: int) -> P2pMode:
        return P2pMode.PEER if self._pair(src, dst).peer_access else P2pMode.STAGED

    def link_under_load(self, index: int) -> tuple[int | None, int | None]:
        if index not in self._seen:
            link = self._rig.gpus[index].pcie_link()
            return link.gen_current, link.width_current
        return self._seen[index]

    def close(self) -> None:
        for worker in [*self._workers.values(), *self._pairs.values()]:
            worker.close()
        self._workers.clear()
        self._pairs.clear()
