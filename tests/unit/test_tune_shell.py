"""The shell lines of the remote-tuning deploys (``deploys/tune.py``, ``deploys/tuner.py``).

Quoting: a venv, log or profile path with a space or ``;`` stays one word. The detached sweep
and its follower are run here for real with ``/bin/sh`` (the ``setsid`` variant, in a
temporary folder): the follower prints every line the job logs, in order, once, and exits with
the job's status; it refuses a second start while the first runs and notices a job killed
without a status. A stand-in shell line plays the sweep, so nothing here needs root or GPUs.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploys.tune import follow_command, job_files, start_command, sweep_command
from deploys.tuner import pip_install_commands

ODD = "/opt/rig forge;x/venv"


def _sh(line: str, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", line], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def test_pip_install_keeps_odd_venv_and_args_one_word_each() -> None:
    commands = pip_install_commands(
        ODD, "/opt/d ist/rigforge-0.1-py3-none-any.whl", "--pre -i 'a b'"
    )
    for line in commands:
        words = shlex.split(line)
        assert words[0] == f"{ODD}/bin/pip"
        assert words[-1] == "/opt/d ist/rigforge-0.1-py3-none-any.whl"
        assert words[words.index("-i") + 1] == "a b"
    assert "--force-reinstall" in shlex.split(commands[0])


def test_pip_args_cannot_inject_a_command() -> None:
    (line, _) = pip_install_commands("/opt/v", "/w.whl", "--pre; touch /tmp/owned")
    assert "--pre;" in shlex.split(line), "the ';' must stay inside a pip argument"


def test_sweep_command_quotes_every_path() -> None:
    line = sweep_command(
        f"{ODD}/bin/rigforge", "/etc/rig forge/r.yaml", ["--heat-soak-s", "600"],
        "/etc/rig forge/profile.yaml", "/var/lib/rig forge", "rig forge", "/etc/b u.yaml",
    )  # fmt: skip
    words = shlex.split(line)
    assert f"{ODD}/bin/rigforge" in words
    assert words[words.index("--rig") + 1] == "/etc/rig forge/r.yaml"
    assert words[words.index("--budget") + 1] == "/etc/b u.yaml"
    assert "root:rig forge" in words


def _job(tmp_path: Path, body: str) -> tuple[str, Path]:
    log = tmp_path / "lo g" / "tune.log"
    return start_command(body, str(log), systemd=False), log


def _cleanup(log: Path) -> None:
    pid_file, _ = job_files(str(log))
    with contextlib.suppress(OSError, ValueError):
        os.killpg(int(Path(pid_file).read_text()), signal.SIGKILL)


def _wait_for_log(log: Path, text: str, timeout_s: float = 20) -> None:
    """Wait until the job has logged ``text``. The start line returns once the job has written
    its PID, which is before the job's first line reaches the log."""
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"the job did not log {text!r} in {timeout_s} s"
        time.sleep(0.02)


def test_follower_prints_every_line_once_and_exits_with_the_status(tmp_path: Path) -> None:
    body = (
        "echo probe 1; sleep 0.3; echo probe 2 >&2; sleep 0.3; echo probe 3; "
        "printf 'summary without newline'; exit 3"
    )
    start, log = _job(tmp_path, body)
    try:
        started = _sh(start)
        assert started.returncode == 0, started.stderr
        followed = _sh(follow_command(str(log), 0.1))
    finally:
        _cleanup(log)
    assert followed.returncode == 3, followed.stderr
    assert followed.stdout.splitlines() == [
        "probe 1",
        "probe 2",
        "probe 3",
        "summary without newline",
    ]
    assert "probe 3" in log.read_text()


def test_second_start_is_refused_while_the_sweep_runs(tmp_path: Path) -> None:
    start, log = _job(tmp_path, "echo first; sleep 30")
    try:
        assert _sh(start).returncode == 0
        _wait_for_log(log, "first\n")
        again = _sh(start)
        assert again.returncode == 1
        assert "a sweep is still running" in again.stderr
        assert log.read_text().startswith("first"), "the running sweep's log was truncated"
    finally:
        _cleanup(log)


def test_follower_notices_a_sweep_killed_without_status(tmp_path: Path) -> None:
    start, log = _job(tmp_path, "echo working; sleep 30")
    try:
        assert _sh(start).returncode == 0
        # Killed before its first line, the job would leave nothing for the follower to print.
        _wait_for_log(log, "working\n")
        follower = subprocess.Popen(
            ["/bin/sh", "-c", follow_command(str(log), 0.1)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pid_file, _ = job_files(str(log))
        os.killpg(int(Path(pid_file).read_text()), signal.SIGKILL)
        out, err = follower.communicate(timeout=20)
    finally:
        _cleanup(log)
    assert follower.returncode == 1
    assert "ended without an exit status" in err
    assert "working" in out


@pytest.mark.parametrize("systemd", [True, False])
def test_start_command_is_valid_shell(systemd: bool, tmp_path: Path) -> None:
    line = start_command("true", "/var/log/rig forge/tune.log", systemd=systemd)
    assert _sh(f"exit 0; {line}").returncode == 0
    assert subprocess.run(["/bin/sh", "-n", "-c", line], check=False).returncode == 0
    if systemd:
        assert "systemd-run --unit rigforge-tune --collect" in line


def test_systemd_run_gets_dollars_and_percents_doubled() -> None:
    """systemd.service(5), "Command lines": "$$" is a literal dollar sign and "%%" a literal
    percent in ExecStart, which is what ``systemd-run`` makes of its arguments. Undoubled, the
    job's ``echo $$`` wrote "$" as the sweep's PID (seen on the systemd-booted CI target)."""
    line = start_command("date +%s", "/var/log/rigforge/tune.log", systemd=True)
    words = shlex.split(line.split("systemd-run", 1)[1])
    job = words[words.index("-c") + 1]
    assert job.startswith("echo $$$$ > /var/log/rigforge/tune.pid; ( date +%%s )")
    # What systemd hands to /bin/sh -c: the script as written.
    assert job.replace("$$", "$").replace("%%", "%").startswith("echo $$ > ")
