"""Fixtures of the bad-input corpora: no test here may reach a host."""

from __future__ import annotations

import socket

import paramiko
import pytest


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) every attempt to open a network connection or an SSH session."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError(f"a connection was attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(paramiko.SSHClient, "connect", refuse)
    return attempts


def pytest_terminal_summary(terminalreporter: object) -> None:
    """Print the size of every bad-input corpus (``pytest tests/inventory`` shows it)."""
    from pathlib import Path

    here = Path(__file__).parent
    counts = {
        folder.name: sum(1 for p in folder.iterdir() if p.is_file() and p.suffix != ".expect")
        for folder in sorted(here.glob("bad*"))
        if folder.is_dir()
    }
    write = getattr(terminalreporter, "write_line", print)
    total = sum(counts.values())
    write(f"bad-input corpora: {total} files — " + ", ".join(f"{k} {v}" for k, v in counts.items()))
