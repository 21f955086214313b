"""``cmd:`` workloads: failures raise, rates are visible inside a window, stop ends the run."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tuning.errors import WorkloadFailed
from tuning.workloads import CmdWorkload, make_workload

GPU = "GPU-00000000-0000-0000-0000-00000000000a"


def _bench(rate: str, sleep_s: float = 0.1) -> str:
    """A fake llama-bench: sleeps, then prints a markdown row ending in ``rate ± 1.00 |``."""
    return f"sh -c 'sleep {sleep_s}; echo \"| llama 8B | tg 128 | {rate} ± 1.00 |\"'"


def _wait(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_failing_command_raises_with_its_exit_status_and_stderr() -> None:
    load = CmdWorkload("sh -c 'echo no GPU found >&2; exit 3'")
    load.start(GPU)
    try:
        with pytest.raises(WorkloadFailed, match=r"exited with status 3.*no GPU found") as caught:
            _wait(lambda: load.tokens_total(GPU) < 0)
        assert GPU in str(caught.value)
        assert "CUDA_VISIBLE_DEVICES" in str(caught.value)  # says how to reproduce it
        with pytest.raises(WorkloadFailed):
            load.start(GPU)  # a failed load does not quietly restart
    finally:
        load.close()


def test_cmd_false_through_make_workload_fails_loudly() -> None:
    load = make_workload("cmd:false", rig=object())  # type: ignore[arg-type]
    load.start(GPU)
    try:
        with pytest.raises(WorkloadFailed, match=r"'false'.*exited with status 1"):
            _wait(lambda: load.tokens_total(GPU) < 0)
    finally:
        load.close()


def test_a_command_that_cannot_start_names_the_program() -> None:
    load = CmdWorkload("/nonexistent/llama-bench -m x.gguf")
    load.start(GPU)
    try:
        with pytest.raises(WorkloadFailed, match="could not be started"):
            _wait(lambda: load.tokens_total(GPU) < 0)
    finally:
        load.close()


def test_output_without_a_rate_asks_for_a_regex() -> None:
    load = CmdWorkload("echo hello")
    with pytest.raises(WorkloadFailed, match=r"printed no throughput.*--tps-regex"):
        load.run_once(GPU)


def test_a_run_past_its_timeout_is_killed_and_fails() -> None:
    load = CmdWorkload("sleep 5", timeout_s=0.2)
    load.start(GPU)
    try:
        with pytest.raises(WorkloadFailed, match="timeout"):
            _wait(lambda: load.tokens_total(GPU) < 0)
    finally:
        load.close()


def test_runs_at_zero_tokens_per_second_fail_after_the_timeout() -> None:
    load = CmdWorkload(_bench("0.00", sleep_s=0.05), timeout_s=0.25)
    load.start(GPU)
    try:
        with pytest.raises(WorkloadFailed, match="produced no tokens"):
            _wait(lambda: load.tokens_total(GPU) < 0)
    finally:
        load.close()


def test_the_rate_is_played_back_continuously_between_runs() -> None:
    load = CmdWorkload(_bench("100.00"))
    load.start(GPU)
    try:
        assert not load.ready(GPU)
        assert load.tokens_total(GPU) == 0.0  # no rate known yet: nothing invented
        _wait(lambda: load.ready(GPU))
        # sample like a probe window: several times inside one run, not only at completions
        samples = []
        for _ in range(4):
            samples.append((time.monotonic(), load.tokens_total(GPU)))
            time.sleep(0.04)
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        assert all(b[1] > a[1] for a, b in itertools.pairwise(samples))
        assert (n1 - n0) / (t1 - t0) == pytest.approx(100.0, rel=0.15)
    finally:
        load.close()


def test_the_command_runs_on_its_gpu() -> None:
    load = CmdWorkload(
        "sh -c 'echo \"| x | $CUDA_DEVICE_ORDER | 7.00 ± 0.1 |\" $CUDA_VISIBLE_DEVICES'",
        tps_regex=r"PCI_BUS_ID \| (?P<tps>[\d.]+) ± [\d.]+ \| " + GPU + "$",
    )
    assert load.run_once(GPU)[0] == 7.0


def test_settle_waits_for_a_run_that_started_after_it() -> None:
    load = CmdWorkload(_bench("50.00", sleep_s=0.08))
    load.start(GPU)
    try:
        _wait(lambda: load.ready(GPU))
        load.settle(GPU)
        settled = time.monotonic()
        assert not load.ready(GPU)
        _wait(lambda: load.ready(GPU))
        # the run in flight at settle() started before it; the next one must complete too
        assert time.monotonic() - settled >= 0.08
    finally:
        load.close()


def test_stop_ends_the_run_in_flight_and_start_runs_again() -> None:
    load = CmdWorkload(_bench("100.00", sleep_s=0.15))
    load.start(GPU)
    try:
        _wait(lambda: load.ready(GPU))
        tick = time.monotonic()
        load.stop(GPU)
        assert time.monotonic() - tick < 0.5  # the sleeping run was ended, not waited for
        frozen = load.tokens_total(GPU)
        time.sleep(0.1)
        assert load.tokens_total(GPU) == frozen  # nothing credited while stopped
        assert not load.ready(GPU)
        load.start(GPU)
        assert load.tokens_total(GPU) == frozen  # no rate for the new period yet
        _wait(lambda: load.ready(GPU))
        time.sleep(0.05)
        assert load.tokens_total(GPU) > frozen
    finally:
        load.close()


def test_stop_kills_the_commands_children(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    load = CmdWorkload(f"sh -c 'sleep 30 & echo $! > {pid_file}; wait'")
    load.start(GPU)
    _wait(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    child = int(pid_file.read_text())
    load.stop(GPU)

    def gone() -> bool:
        # a killed orphan stays a zombie until the reaper gets to it: that counts as ended
        try:
            return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
        except FileNotFoundError:
            return True

    _wait(gone)


def test_make_workload_passes_the_tps_regex() -> None:
    load = make_workload("cmd:vllm bench", rig=object(), tps_regex=r"tok/s: (?P<tps>[\d.]+)")  # type: ignore[arg-type]
    assert isinstance(load, CmdWorkload)
    assert load.tps_regex == r"tok/s: (?P<tps>[\d.]+)"
    default = make_workload("cmd:llama-bench", rig=object())  # type: ignore[arg-type]
    assert isinstance(default, CmdWorkload)
    assert default.tps_regex.endswith("$")  # llama-bench's row


def test_a_regex_that_does_not_compile_is_a_config_error() -> None:
    from tuning.errors import ConfigError

    with pytest.raises(ConfigError, match="does not compile"):
        CmdWorkload("llama-bench", tps_regex="(?P<tps>")
