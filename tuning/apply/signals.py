"""Signals during a run: SIGTERM, SIGHUP, SIGQUIT and SIGINT raise, so ``finally`` restores.

A session turns the signals whose default action ends the process (SIGTERM; SIGHUP when the
terminal or SSH session closes; SIGQUIT) into :class:`Terminated` and SIGINT (Ctrl-C) into
:class:`KeyboardInterrupt`, and ignores them all while it restores.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

from tuning.errors import RigforgeError


class Terminated(RigforgeError):
    """SIGTERM, SIGHUP or SIGQUIT arrived; the run stopped and the original settings were
    restored."""


#: Signals whose default action ends the process; a session turns each into :class:`Terminated`.
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}; original settings restored")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    saved: dict[signal.Signals, Any] = {}
    try:
        for signum in (signal.SIGINT, *TERMINATING_SIGNALS):
            with contextlib.suppress(ValueError):
                saved[signum] = signal.signal(signum, signal.SIG_IGN)
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def install_raising_handlers() -> dict[int, Any]:
    """Make SIGTERM, SIGHUP and SIGQUIT raise :class:`Terminated` and SIGINT raise
    :class:`KeyboardInterrupt`; return the handlers they replace (for
    :func:`restore_handlers`). Off the main thread nothing is installed (``{}``).
    """
    old: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
        # SIGHUP: the terminal or SSH session closed; SIGQUIT: Ctrl-\. Their default
        # action kills the process without running ``finally`` — the caps would stay.
        for signum in TERMINATING_SIGNALS:
            old[signum] = signal.signal(signum, _raise_terminated)
        old[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)
    return old


def restore_handlers(old: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_raising_handlers` replaced."""
    for signum, handler in old.items():
        signal.signal(signum, handler)
