"""Synthetic load, for real: worker processes in numpy (CPU) mode and the workload around them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from tuning.errors import BackendUnavailable, WorkloadFailed
from tuning.workloads import SyntheticWorkload, make_workload

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tuning.synthetic", "--backend", "numpy"]


@pytest.fixture(autouse=True)
def _one_blas_thread(monkeypatch) -> None:
    # workers inherit the environment; a CPU load per test is enough
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")


def _eventually(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- the worker's protocol -------------------------------------------------------------------


def test_worker_reports_cumulative_tokens_as_json_lines_and_exits_on_sigterm() -> None:
    proc = subprocess.Popen(
        [*WORKER, "--kind", "prefill", "--device-uuid", "GPU-a", "--report-every-s", "0.03"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    reports = [json.loads(proc.stdout.readline()) for _ in range(3)]
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=3)
    took_s = time.monotonic() - sent

    assert ready["ready"] is True
    assert ready["backend"] == "numpy"
    assert ready["shape"] == [256, 512, 512]
    assert all(r["kind"] == "prefill" and r["running"] for r in reports)
    tokens = [r["tokens"] for r in reports]
    assert tokens == sorted(tokens)
    assert tokens[-1] > 0
    # cumulative and whole calls: every count is a multiple of one call's tokens
    for count in tokens:
        assert count / ready["tokens_per_call"] == pytest.approx(
            round(count / ready["tokens_per_call"])
        )
    assert [r["t"] for r in reports] == sorted(r["t"] for r in reports)
    last = _lines(rest)[-1]
    assert last["exit"] == "signal"
    assert last["tokens"] >= tokens[-1]
    assert last["tokens_per_s"] > 0
    assert proc.returncode == 0
    assert took_s < 1.0


def test_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "worker.jsonl"
    parent_code = (
        "import subprocess, sys, time\n"
        f"out = open({str(log)!r}, 'w')\n"
        "p = subprocess.Popen([sys.executable, '-m', 'tuning.synthetic', '--backend', 'numpy',"
        " '--kind', 'decode', '--device-uuid', 'GPU-a', '--report-every-s', '0.05'],"
        " stdout=out, stdin=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    try:
        assert _eventually(lambda: '"running":true' in log.read_text())
        parent.kill()  # kill -9: no chance to stop its child
        parent.wait()
        assert _eventually(lambda: '"exit"' in log.read_text())
        assert _lines(log.read_text())[-1]["exit"] == "parent-exited"
    finally:
        parent.kill()
        if not _eventually(lambda: not _alive(worker_pid), 2.0):
            os.kill(worker_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


# -- SyntheticWorkload -----------------------------------------------------------------------


def test_workload_lifecycle_start_stop_cumulative_tokens_close() -> None:
    load = SyntheticWorkload("decode", ["GPU-a", "GPU-b"], backend="numpy", report_every_s=0.02)
    try:
        a, b = load.worker("GPU-a"), load.worker("GPU-b")
        assert a is not None
        assert b is not None
        assert a.info["backend"] == "numpy"
        assert load.tokens_total("GPU-a") == 0.0  # spawned paused

        started = time.monotonic()
        load.start("GPU-a")
        assert time.monotonic() - started < 0.05  # start on a spawned worker is quick
        assert _eventually(lambda: load.tokens_total("GPU-a") > 0)
        assert load.tokens_total("GPU-b") == 0.0

        load.stop("GPU-a")
        assert _eventually(lambda: not a.reported_running)  # the chunk in flight has landed
        paused = load.tokens_total("GPU-a")
        time.sleep(0.1)
        assert load.tokens_total("GPU-a") == paused

        load.start("GPU-a")
        assert _eventually(lambda: load.tokens_total("GPU-a") > paused)  # cumulative
        assert load.tokens_total("GPU-unknown") == 0.0
    finally:
        load.close()
    assert a.proc.poll() == 0
    assert b.proc.poll() == 0


def test_make_workload_on_a_real_rig_loads_each_gpu_and_a_dead_worker_voids_it(
    monkeypatch,
) -> None:
    monkeypatch.setattr("tuning.workloads.synthetic.synthetic_backend", lambda: "numpy")
    rig = types.SimpleNamespace(gpus=[types.SimpleNamespace(uuid="GPU-a")])
    load = make_workload("batched", rig)  # type: ignore[arg-type]
    try:
        assert isinstance(load, SyntheticWorkload)
        worker = load.worker("GPU-a")
        assert worker is not None
        assert worker.info["device_uuid"] == "GPU-a"
        load.start("GPU-a")
        worker.proc.kill()
        worker.proc.wait()
        with pytest.raises(WorkloadFailed, match=r"GPU-a stopped \(exit status -9"):
            load.tokens_total("GPU-a")
    finally:
        load.close()


def test_a_silent_worker_is_reported_hung_and_close_still_ends_it() -> None:
    load = SyntheticWorkload("decode", backend="numpy", report_every_s=0.02, stall_timeout_s=0.08)
    try:
        load.start("GPU-a")  # no worker yet: spawned on first start
        worker = load.worker("GPU-a")
        assert worker is not None
        assert _eventually(lambda: load.tokens_total("GPU-a") > 0)
        os.kill(worker.proc.pid, signal.SIGSTOP)  # stands in for a GPU that stopped answering
        time.sleep(0.12)
        with pytest.raises(WorkloadFailed, match="reported nothing"):
            load.tokens_total("GPU-a")
    finally:
        load.close()
    assert worker.proc.poll() is not None


def test_a_worker_that_cannot_start_names_why_and_the_alternatives() -> None:
    with pytest.raises(BackendUnavailable, match=r"could not start on GPU-a.*cannot hold.*cmd:"):
        SyntheticWorkload("decode", ["GPU-a"], backend="numpy", max_mib=0)


def test_no_torch_or_cupy_says_pip_install_torch_and_names_cmd_and_openai(monkeypatch) -> None:
    monkeypatch.setattr("tuning.workloads.synthetic.synthetic_backend", lambda: None)
    with pytest.raises(BackendUnavailable, match=r"pip install torch.*cmd:.*openai:"):
        SyntheticWorkload("prefill", ["GPU-a"])
