"""Fault injection: however a sweep ends, every GPU is back at its original cap.

Cases: SIGINT, SIGTERM, SIGHUP, SIGQUIT, kill -9 + ``rigforge restore``, kill -9 + resumed
sweep, an exception mid-probe, a GPU lost mid-sweep, a GPU still lost during restore (journal
kept, restored later), an NVML error on set. The subprocess cases run ``rigforge sweep`` in
slow motion (``--pace-s``) and signal it once the persisted simulated caps show its first
changes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.unit.sim_caps import caps_now, stock_caps
from tuning.apply.actuator import open_tuning_rig
from tuning.apply.journal import Journal, journal_path, restore_journal
from tuning.apply.session import SafetySession
from tuning.apply.signals import Terminated
from tuning.errors import GpuLost, NoPermission, RigforgeError
from tuning.sweep import Sweep, SweepConfig
from tuning.workloads import SimWorkload


def run_sweep_in_process(rig_file: str, **patches) -> None:
    rig, actuator = open_tuning_rig(rig_file)
    for gpu_index, name, fake in patches.get("gpu", []):
        gpu = rig.gpus[gpu_index]
        setattr(gpu, name, fake(getattr(gpu, name)))
    config = SweepConfig(heat_soak_s=60.0)
    load = SimWorkload(rig, "decode")
    if "tokens" in patches:
        load.tokens_total = patches["tokens"](load.tokens_total)  # type: ignore[method-assign]
    with SafetySession(actuator, sweep_key=config.resume_key(rig_file), log=lambda m: None) as s:
        Sweep(rig, actuator, load, config, session=s).run()


def fail_on_call(n: int, error: Exception):
    def wrap(original):
        calls = {"n": 0}

        def fake(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise error
            return original(*args, **kwargs)

        return fake

    return wrap


def test_exception_mid_probe(rig_file: str) -> None:
    original = caps_now(rig_file)
    with pytest.raises(RuntimeError, match="benchmark crashed"):
        run_sweep_in_process(rig_file, tokens=fail_on_call(25, RuntimeError("benchmark crashed")))
    assert caps_now(rig_file) == original
    assert not journal_path(rig_file).exists()


def test_gpu_lost_mid_sweep(rig_file: str) -> None:
    original = caps_now(rig_file)
    lost = GpuLost("GPU 00000000:21:00.0 fell off the bus")
    with pytest.raises(GpuLost):
        run_sweep_in_process(rig_file, gpu=[(1, "sample", fail_on_call(12, lost))])
    assert caps_now(rig_file) == original
    assert not journal_path(rig_file).exists()


def test_gpu_still_lost_during_restore_keeps_the_journal_until_it_answers(rig_file: str) -> None:
    original = caps_now(rig_file)
    state = {"lost": False}

    def flaky_sample(original_sample):
        def fake(now):
            if now > 20:
                state["lost"] = True
            if state["lost"]:
                raise GpuLost("gone")
            return original_sample(now)

        return fake

    def flaky_set(original_set):
        def fake(w):
            if state["lost"]:
                raise GpuLost("gone")
            return original_set(w)

        return fake

    with pytest.raises(GpuLost):
        run_sweep_in_process(
            rig_file, gpu=[(1, "sample", flaky_sample), (1, "set_power_limit_w", flaky_set)]
        )
    assert journal_path(rig_file).exists(), "a GPU not restored keeps the journal"
    # the GPU is back after a reset: the next start restores it
    assert restore_journal(journal_path(rig_file)) == {}
    assert caps_now(rig_file) == original


def test_nvml_error_on_set(rig_file: str) -> None:
    original = caps_now(rig_file)
    denied = NoPermission("changing the power limit needs root")
    with pytest.raises(NoPermission):
        run_sweep_in_process(rig_file, gpu=[(0, "set_power_limit_w", fail_on_call(3, denied))])
    assert caps_now(rig_file) == original


def _sim_state_caps(rig_file: str) -> dict[str, float]:
    """The persisted simulated caps, read directly (cheap enough to poll)."""
    from tuning.apply.state import rig_slug, state_dir

    path = state_dir() / f"sim-{rig_slug(rig_file)}.json"
    try:
        return json.loads(path.read_text())["power_limit_w"]
    except (OSError, ValueError, KeyError):
        return {}


def start_cli(rig_file: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuning.cli", "sweep", "--rig", rig_file, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _first_changes_made(rig_file: str, stock: dict[str, float]) -> bool:
    """The journal has a completed probe and the hardware holds a changed cap."""
    path = journal_path(rig_file)
    if not path.is_file():
        return False
    try:
        probes = Journal.load(path).probes
    except RigforgeError:
        return False
    return bool(probes) and _sim_state_caps(rig_file) not in ({}, stock)


def signal_after_first_changes(rig_file: str, proc: subprocess.Popen[str], signum: int) -> None:
    """Send ``signum`` to the sweep once it has completed a probe and holds a changed cap.

    The sweep is stopped (SIGSTOP) while its state is read and continued after the signal, so
    it cannot finish, and restore its caps, between the check and the signal however loaded
    the machine is (a signal sent after the sweep's end meets the default handlers).
    """
    stock = stock_caps(rig_file)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGSTOP)
        try:
            if _first_changes_made(rig_file, stock):
                proc.send_signal(signum)
                return
        finally:
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the sweep made no change in time")


@pytest.mark.parametrize(
    ("signum", "exit_code", "message"),
    [
        (signal.SIGINT, 130, "aborted"),
        (signal.SIGTERM, 2, "SIGTERM"),
        # a closed terminal or SSH session, and Ctrl-\: by default both kill without cleanup
        (signal.SIGHUP, 2, "SIGHUP"),
        (signal.SIGQUIT, 2, "SIGQUIT"),
    ],
)
def test_signal_restores(rig_file: str, signum: int, exit_code: int, message: str) -> None:
    original = stock_caps(rig_file)
    proc = start_cli(rig_file, "--pace-s", "0.01", "--heat-soak-s", "60")
    signal_after_first_changes(rig_file, proc, signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == exit_code, stderr
    assert message in stderr
    assert caps_now(rig_file) == original
    assert not journal_path(rig_file).exists()


def kill_9_mid_sweep(rig_file: str) -> dict[str, float]:
    """Start a sweep, SIGKILL it once it has changed a cap; return the stock caps (the probe's
    caps are left on the simulated hardware, as a real kill -9 would leave them)."""
    original = stock_caps(rig_file)
    proc = start_cli(rig_file, "--pace-s", "0.01", "--heat-soak-s", "60")
    signal_after_first_changes(rig_file, proc, signal.SIGKILL)
    proc.wait(timeout=10)
    assert caps_now(rig_file) != original, "kill -9 left the probe's caps on the hardware"
    return original


def test_kill_9_then_restore_and_then_a_resumed_sweep(rig_file: str) -> None:
    original = kill_9_mid_sweep(rig_file)
    journal = Journal.load(journal_path(rig_file))
    done = sum(len(p) for p in journal.probes.values())
    assert done >= 1

    # a new sweep finds the stale journal, restores it, and resumes after the done probes
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuning.cli",
            "sweep",
            "--rig",
            rig_file,
            "--json",
            "--heat-soak-s",
            "60",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "restored original settings" in resumed.stderr
    assert json.loads(resumed.stdout)["totals"]["resumed_probes"] == done
    assert caps_now(rig_file) == original
    assert not journal_path(rig_file).exists()


def test_kill_9_then_rigforge_restore(rig_file: str) -> None:
    original = kill_9_mid_sweep(rig_file)
    restored = subprocess.run(
        [sys.executable, "-m", "tuning.cli", "restore", "--json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["journals"][0]["failures"] == {}
    assert caps_now(rig_file) == original
    assert not journal_path(rig_file).exists()


def test_a_signal_while_the_caps_are_persisted_still_ends_the_sweep(rig_file: str) -> None:
    """A signal's :class:`Terminated` can land while the actuator records the caps the
    simulated GPUs hold, where a lost GPU's read is skipped. It must end the run: caught there
    along with the lost GPU's error, it was swallowed and the sweep ran on. A lost GPU keeps
    its last persisted cap."""
    rig, actuator = open_tuning_rig(rig_file)
    gpu = rig.gpus[1]
    before = caps_now(rig_file)[gpu.uuid]
    real_read = gpu.power_limit_w

    def raising(error: Exception):
        def read() -> float:
            raise error

        return read

    gpu.power_limit_w = raising(GpuLost("gone"))  # type: ignore[method-assign]
    actuator._save()
    assert caps_now(rig_file)[gpu.uuid] == before, "a lost GPU keeps its last persisted cap"
    gpu.power_limit_w = raising(Terminated("stopped by signal SIGHUP"))  # type: ignore[method-assign]
    with pytest.raises(Terminated):
        actuator._save()
    gpu.power_limit_w = real_read  # type: ignore[method-assign]
