"""``power_limit``'s read-back command, run in ``sh`` against a stub ``nvidia-smi``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploys.operations.nvidia import read_back_command

STUB = """#!/bin/sh
case "$*" in *--query-gpu=power.limit*) [ -n "$STUB_LIMIT" ] && echo " $STUB_LIMIT" ;; esac
exit 0
"""


@pytest.mark.parametrize(
    ("reported", "ok"),
    [("250.00", True), ("250.40", True), ("300.00", False), ("249.00", False), ("", False)],
)
def test_read_back_fails_unless_the_limit_took(tmp_path: Path, reported: str, ok: bool) -> None:
    (tmp_path / "nvidia-smi").write_text(STUB)
    (tmp_path / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "STUB_LIMIT": reported}
    proc = subprocess.run(
        ["sh", "-c", read_back_command("GPU-a", 250)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode == 0) is ok, proc.stderr
    if not ok:
        assert "reads back" in proc.stderr
