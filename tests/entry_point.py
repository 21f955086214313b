"""``rigforge ARGV`` in this process, through the real entry point (``tuning.cli:main``).

For tests that must see exactly what a person sees: the exit status ``main`` ends with and
everything printed, stdout then stderr. Anything other than :class:`SystemExit` escapes (a
traceback is what such tests exist to catch).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytest

import tuning.cli


def run_rigforge(
    argv: Sequence[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``(exit status, stdout + stderr)`` of ``rigforge ARGV`` (earlier captured output dropped)."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["rigforge", *argv])
    try:
        tuning.cli.main()
        status = 0
    except SystemExit as stop:
        # click exits with an int; a message instead of a code means failure (status 1)
        status = stop.code if isinstance(stop.code, int) else 1
    out = capsys.readouterr()
    return status, out.out + out.err
