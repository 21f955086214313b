"""The real-GPU copy worker of ``rigforge links``, through its process protocol (no GPU:
``--backend numpy`` runs the same protocol with host memcpy)."""

from __future__ import annotations

import sys

import pytest

from tuning.backends import open_rig
from tuning.errors import BackendUnavailable, WorkloadFailed
from tuning.fabric.model import Transfer
from tuning.links_gpu import CopyWorker, GpuProber


def test_worker_answers_ready_then_each_command() -> None:
    worker = CopyWorker(["GPU-none"], 4, "numpy")
    try:
        assert worker.peer_access is None  # no GPU, nothing reported
        reply = worker.ask({"op": "h2d", "iters": 2})
        assert reply["op"] == "h2d"
        assert reply["gbps"] > 0
        both = worker.ask({"op": "bidir", "iters": 1})
        assert both["gbps"] > 0
        assert worker.ask({"op": "p2p_latency"})["latency_us"] > 0
    finally:
        worker.close()
    assert worker._proc.poll() == 0


def test_a_worker_that_cannot_start_names_the_gpu() -> None:
    with pytest.raises(WorkloadFailed, match=r"GPU-x.*not supported"):
        CopyWorker(["GPU-x"], 4, "cupy-nonexistent", python=sys.executable)


def test_prober_runs_simultaneous_copies_on_several_workers() -> None:
    rig = open_rig("sim:reference")
    prober = GpuProber(rig, 4, "numpy")
    try:
        rates = prober.run([Transfer("h2d", gpu=0), Transfer("h2d", gpu=1)], 4)
        assert len(rates) == 2
        assert min(rates) > 0
        idle = rig.gpus[0].pcie_link()  # the simulated card is idle: it reports its idle gen
        assert prober.link_under_load(0) == (idle.gen_current, idle.width_current)
    finally:
        prober.close()


def test_without_torch_the_error_names_pip_install_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tuning.links_gpu.available_backend", lambda: None)
    with pytest.raises(BackendUnavailable, match="pip install torch"):
        GpuProber.start(open_rig("sim:reference"))
