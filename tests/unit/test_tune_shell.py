"""The shell lines of the remote-tuning deploys (``deploys/tune.py``, ``deploys/tuner.py``).

Quoting: a venv, log or profile path with a space or ``;`` stays one word.
"""

from __future__ import annotations

import shlex
import subprocess

from deploys.tune import sweep_command
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
