"""The journal: the original settings of every GPU, written before the first change.

A :class:`~tuning.apply.session.SafetySession` writes the journal — the original power limit
and persistence mode of every GPU, by UUID — to :func:`~tuning.apply.state.state_dir` before
the first change (atomically: :func:`~tuning.apply.state.atomic_write_json`), and deletes it
only once every GPU is back. After ``kill -9`` or a power loss the journal stays behind; the
next ``rigforge sweep|apply|restore`` finds it (its process is gone) and restores it first
(:func:`recover_stale_journals`). The journal also records each completed probe so an
interrupted sweep resumes at the probe where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from tuning.apply.actuator import Actuator, GpuSettings, open_tuning_rig
from tuning.apply.runlock import RigBusy, RigLock
from tuning.apply.state import atomic_write_json, rig_slug, state_dir
from tuning.backends.base import Rig

JOURNAL_VERSION = 1


def journal_path(spec: str) -> Path:
    """The rig's journal file in :func:`~tuning.apply.state.state_dir`."""
    return state_dir() / f"journal-{rig_slug(spec)}.json"


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch s), or None when it is gone or ``pid`` <= 0."""
    if pid <= 0:
        return None  # -1 marks a journal left on purpose for the next start
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@dataclass
class Journal:
    """The on-disk record of a run in progress (see the module docstring)."""

    path: Path
    rig_spec: str
    original: dict[str, GpuSettings]
    pid: int = field(default_factory=os.getpid)
    pid_started: float | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    sweep_key: dict[str, Any] | None = None
    probes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "journal_version": JOURNAL_VERSION,
            "rig_spec": self.rig_spec,
            "pid": self.pid,
            "pid_started": self.pid_started,
            "created_at": self.created_at,
            "original": {uuid: asdict(s) for uuid, s in self.original.items()},
            "sweep_key": self.sweep_key,
            "probes": self.probes,
        }

    def save(self) -> None:
        atomic_write_json(self.path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Journal:
        data = json.loads(path.read_text())
        return cls(
            path=path,
            rig_spec=data["rig_spec"],
            original={u: GpuSettings(**s) for u, s in data["original"].items()},
            pid=data["pid"],
            pid_started=data.get("pid_started"),
            created_at=data["created_at"],
            sweep_key=data.get("sweep_key"),
            probes=data.get("probes", {}),
        )

    def owner_alive(self) -> bool:
        """True when the process that wrote the journal is still running (and is that process)."""
        if self.pid == os.getpid():
            return True
        started = process_start(self.pid)
        if started is None:
            return False
        return self.pid_started is None or abs(started - self.pid_started) < 1.0

    def record_probe(self, uuid: str, measurement: dict[str, Any]) -> None:
        self.probes.setdefault(uuid, []).append(measurement)
        self.save()


def restore_journal(
    path: Path, *, rig: Rig | None = None, actuator: Actuator | None = None
) -> dict[str, str]:
    """Restore the settings in a journal and delete it when every GPU is back.

    Returns the failures (``{uuid: error}``); the journal is kept when there are any.
    Raises :class:`RigBusy` when a live run holds the rig.
    """
    journal = Journal.load(path)
    with RigLock(journal.rig_spec):
        if not path.is_file():
            return {}  # restored by another process between the load and the lock
        if actuator is None:
            _, actuator = open_tuning_rig(journal.rig_spec)
        present = {gpu.uuid for gpu in actuator.rig.gpus}
        failures = actuator.restore({u: s for u, s in journal.original.items() if u in present})
        for uuid in set(journal.original) - present:
            failures[uuid] = "GPU not present on the rig"
        if not failures:
            path.unlink(missing_ok=True)
    return failures


def stale_journals() -> list[Path]:
    """Journals whose writer is gone (killed, crashed, power lost)."""
    stale = []
    for path in sorted(state_dir().glob("journal-*.json")):
        try:
            journal = Journal.load(path)
        except (OSError, ValueError, KeyError):
            continue
        if not journal.owner_alive():
            stale.append(path)
    return stale


def recover_stale_journals(
    log: Callable[[str], None] = lambda m: None, *, keep_spec: str | None = None
) -> dict[str, dict[str, str]]:
    """Restore every stale journal (run at the start of each rigforge command).

    ``keep_spec``: leave that rig's journal to the caller (a sweep resumes from it).
    """
    results: dict[str, dict[str, str]] = {}
    keep = journal_path(keep_spec) if keep_spec is not None else None
    for path in stale_journals():
        if path == keep:
            continue
        journal = Journal.load(path)
        try:
            failures = restore_journal(path)
        except RigBusy:
            continue  # its owner is alive after all (a reused PID); it restores on exit
        results[journal.rig_spec] = failures
        if failures:
            log(f"rigforge: could not restore {journal.rig_spec} from {path}: {failures}")
        else:
            log(
                f"rigforge: restored original settings of {journal.rig_spec} "
                "from an interrupted run"
            )
    return results
