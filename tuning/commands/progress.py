"""The per-GPU sweep progress that ``rigforge sweep`` and ``rigforge loop`` both show (rich).

A sweep reports ``(uuid, event, details)``; on a ``probe`` event ``details`` carries the
probes done so far, the cap probed (``cap_w``, W) and the throughput measured under it
(``throughput_tps``, tokens/s). Each command keeps its own wording for the other events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn


def sweep_progress(console: Console, *, enabled: bool) -> Progress:
    """Bars of ``description | bar | status`` on ``console``; ``enabled=False``: none drawn."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not enabled,
    )


def probe_status(details: Mapping[str, Any]) -> str:
    """``"250 W → 31.4 tok/s"``: the cap a probe ran at and the throughput it measured."""
    return f"{details['cap_w']:.0f} W → {details['throughput_tps']:.1f} tok/s"


def show_probe(progress: Progress, task: TaskID, details: Mapping[str, Any]) -> None:
    """Advance a GPU's bar to the probes done and show the latest probe's status."""
    progress.update(task, completed=details["probes"], status=probe_status(details))
