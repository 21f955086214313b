"""The journal: the original settings of every GPU, written before the first change.

A :class:`~tuning.apply.session.SafetySession` writes the journal — the original power limit
and persistence mode of every GPU, by UUID — to :func:`~tuning.apply.state.state_dir` before
the first change (atomically: :func:`~tuning.apply.state.atomic_write_json`), and deletes it
only once every GPU is back. After ``kill -9`` or a power loss the journal stays behind; the
next ``rigforge sweep|apply|restore`` finds it (its process is gone) and restores it first
(:func:`recover_stale_journals`). The journal also records each completed probe so an
interrupted sweep resumes at the probe where it stopped.

The journal is the only copy of the original power limits, so it verifies itself
(``journal_version: 2``): the document is ``{"journal_version": 2, "sha256": …, "body": …}``
where ``sha256`` is the digest of the body's canonical JSON, and every save writes a second
copy (``journal-….json.bak``) before the primary, each atomically. :meth:`Journal.load` reads
the primary, else the copy; when neither is whole (0 bytes, truncated, not JSON, not UTF-8,
a key missing, a value of the wrong type, a checksum mismatch) it raises
:class:`JournalUnreadable` naming the file and what to do, and nothing deletes or overwrites
it. A journal named for one rig but written for another (copied from another machine) raises
:class:`JournalForeign`. A journal whose writer is a live process of another program (a
reused PID) is stale. An original power limit outside the GPU's range is not sent to the GPU:
its default limit is restored instead, and the message says so. Version-1 journals (no
checksum) are still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from tuning.apply.actuator import Actuator, GpuSettings, open_tuning_rig
from tuning.apply.runlock import RigBusy, RigLock
from tuning.apply.state import atomic_write_json, rig_slug, state_dir
from tuning.backends.base import Rig
from tuning.errors import RigforgeError

JOURNAL_VERSION = 2
#: Versions :meth:`Journal.load` reads: 1 (no checksum, PR 1–9 era), 2 (checksummed body).
READABLE_VERSIONS = (1, 2)
#: Largest journal read (bytes): six GPUs × hundreds of probes is ~200 kB (estimate).
MAX_JOURNAL_BYTES = 16 * 1024 * 1024
#: Fields of one probe record (:class:`tuning.telemetry.ProbeMeasurement`) and their kinds.
PROBE_FIELDS: Mapping[str, type] = {
    "cap_w": float,
    "throughput_tps": float,
    "power_w": float,
    "temp_c": float,
    "peak_temp_c": float,
    "throttled": bool,
    "steady": bool,
    "duration_s": float,
}


class JournalUnreadable(RigforgeError):
    """A journal exists but neither it nor its copy can be read; it is kept untouched."""

    def __init__(self, path: Path, reasons: list[str]) -> None:
        self.path = path
        super().__init__(
            f"{path}: the journal of an interrupted run cannot be read ({'; '.join(reasons)}). "
            "It held the GPUs' original power limits, so rigforge changes nothing and keeps the "
            "file. Check each GPU (nvidia-smi -q -d POWER: 'Current Power Limit' vs 'Default "
            "Power Limit'), put the default back (sudo nvidia-smi -i UUID -pl WATTS) or "
            f"reboot, then move {path.name} and {backup_path(path).name} out of {path.parent}"
        )


class JournalForeign(RigforgeError):
    """A readable journal that belongs to another rig than its file name says."""


def backup_path(path: Path) -> Path:
    """The journal's second copy (written before the primary on every save)."""
    return path.with_name(path.name + ".bak")


def _canonical(body: Mapping[str, Any]) -> bytes:
    # NaN is allowed: a probe's temperature is NaN when the GPU reports none.
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def probe_problem(record: Any) -> str | None:
    """Why one journaled probe record cannot be replayed, or ``None``."""
    if not isinstance(record, dict):
        return f"is a {type(record).__name__}, not a probe record"
    if set(record) != set(PROBE_FIELDS):
        missing = sorted(set(PROBE_FIELDS) - set(record))
        extra = sorted(set(record) - set(PROBE_FIELDS))
        return f"has keys missing {missing} / unexpected {extra}"
    for key, kind in PROBE_FIELDS.items():
        value = record[key]
        if kind is bool and not isinstance(value, bool):
            return f"{key} {value!r} is not true/false"
        unknown_temp = key.endswith("temp_c") and isinstance(value, float) and math.isnan(value)
        if kind is float and not unknown_temp and not (_finite(value) and value >= 0):
            return f"{key} {value!r} is not a finite, non-negative number"
    return None


def _body_problem(body: Any) -> str | None:
    """Why a journal body cannot be trusted, or ``None`` (types and ranges, every key)."""
    if not isinstance(body, dict):
        return "is not a JSON object"
    for key in ("rig_spec", "pid", "created_at", "original"):
        if key not in body:
            return f"has no {key!r} key"
    if not isinstance(body["rig_spec"], str) or not body["rig_spec"]:
        return "rig_spec is not a rig spec"
    if isinstance(body["pid"], bool) or not isinstance(body["pid"], int):
        return f"pid {body['pid']!r} is not a process id"
    started = body.get("pid_started")
    if started is not None and not _finite(started):
        return f"pid_started {started!r} is not a time"
    original = body["original"]
    if not isinstance(original, dict) or not original:
        return "original holds no GPU"
    for uuid, settings in original.items():
        if not isinstance(settings, dict) or "power_limit_w" not in settings:
            return f"original.{uuid} has no power_limit_w"
        if not _finite(settings["power_limit_w"]):
            return f"original.{uuid}.power_limit_w {settings['power_limit_w']!r} is not a number"
        if settings.get("persistence_mode") not in (None, True, False):
            return f"original.{uuid}.persistence_mode is not true/false/null"
        if set(settings) - {"power_limit_w", "persistence_mode"}:
            return f"original.{uuid} has unexpected keys {sorted(settings)}"
    probes = body.get("probes", {})
    if not isinstance(probes, dict) or not all(isinstance(v, list) for v in probes.values()):
        return "probes is not a map of GPU → list"
    if body.get("sweep_key") is not None and not isinstance(body["sweep_key"], dict):
        return "sweep_key is not a JSON object"
    return None


def _read_body(path: Path) -> dict[str, Any]:
    """The verified body of one journal file; ``ValueError`` with a reason otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path.name}: cannot be read ({error.strerror})") from None
    if not raw:
        raise ValueError(f"{path.name} is empty (0 bytes)")
    if len(raw) > MAX_JOURNAL_BYTES:
        raise ValueError(f"{path.name} is {len(raw)} bytes, larger than any journal")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path.name} is not UTF-8 (byte {error.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path.name} is not JSON (line {error.lineno}, column {error.colno}: {error.msg}; "
            "truncated?)"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    version = data.get("journal_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path.name} has journal_version {version!r}, not one of {READABLE_VERSIONS}"
        )
    body: Any = data
    if version != 1:
        body = data.get("body")
        digest = data.get("sha256")
        if not isinstance(body, dict) or not isinstance(digest, str):
            raise ValueError(f"{path.name} has no checksummed body")
        if hashlib.sha256(_canonical(body)).hexdigest() != digest:
            raise ValueError(f"{path.name} fails its checksum (edited or damaged)")
    problem = _body_problem(body)
    if problem:
        raise ValueError(f"{path.name}: {problem}")
    return body


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

    def body(self) -> dict[str, Any]:
        """What the checksum covers: everything but the version."""
        return {
            "rig_spec": self.rig_spec,
            "pid": self.pid,
            "pid_started": self.pid_started,
            "created_at": self.created_at,
            "original": {uuid: asdict(s) for uuid, s in self.original.items()},
            "sweep_key": self.sweep_key,
            "probes": self.probes,
        }

    def to_json(self) -> dict[str, Any]:
        """The file's document: version, the body's SHA-256 and the body."""
        body = self.body()
        return {
            "journal_version": JOURNAL_VERSION,
            "sha256": hashlib.sha256(_canonical(body)).hexdigest(),
            "body": body,
        }

    def save(self) -> None:
        """Write the second copy, then the primary (each atomically, fsync'd)."""
        document = self.to_json()
        atomic_write_json(backup_path(self.path), document)
        atomic_write_json(self.path, document)

    def delete(self) -> None:
        """Remove the journal and its copy (only once every GPU is back)."""
        remove_journal(self.path)

    @classmethod
    def load(cls, path: Path) -> Journal:
        """The journal at ``path`` (or its copy when the primary is damaged).

        Raises :class:`JournalUnreadable` when neither is whole, :class:`JournalForeign` when
        it was written for a rig other than the one its name is for. Never changes the files.
        """
        reasons: list[str] = []
        data: dict[str, Any] | None = None
        for candidate in (path, backup_path(path)):
            if not candidate.exists():
                continue
            try:
                data = _read_body(candidate)
                break
            except ValueError as error:
                reasons.append(str(error))
        if data is None:
            raise JournalUnreadable(path, reasons or [f"{path.name} is missing"])
        expected = journal_path_name(data["rig_spec"])
        if path.name.startswith("journal-") and path.name != expected:
            raise JournalForeign(
                f"{path}: this journal was written for rig {data['rig_spec']!r} (whose journal "
                f"is {expected}), not for the rig its name is for — copied from another machine "
                "or renamed? It is kept: restore it with 'rigforge restore --rig "
                f"{data['rig_spec']}' where that rig is, or move it out of {path.parent}"
            )
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
        """True when the process that wrote the journal is still running (and is that process).

        A live PID is the writer only when its start time matches the journal's; a journal
        without a start time (version 1) counts a live PID only when that process is rigforge.
        """
        if self.pid == os.getpid():
            return True
        started = process_start(self.pid)
        if started is None:
            return False
        if self.pid_started is not None:
            return abs(started - self.pid_started) < 1.0
        return _is_rigforge(self.pid)

    def record_probe(self, uuid: str, measurement: dict[str, Any]) -> None:
        self.probes.setdefault(uuid, []).append(measurement)
        self.save()


def _is_rigforge(pid: int) -> bool:
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "rigforge" in cmdline or "tuning.cli" in cmdline


def journal_path_name(spec: str) -> str:
    """The file name of a rig's journal."""
    return f"journal-{rig_slug(spec)}.json"


def remove_journal(path: Path) -> None:
    """Delete a journal and its copy."""
    path.unlink(missing_ok=True)
    backup_path(path).unlink(missing_ok=True)


def settable_originals(
    journal: Journal, actuator: Actuator, log: Callable[[str], None] = lambda m: None
) -> dict[str, GpuSettings]:
    """The journal's originals for the GPUs the rig has; an original outside the GPU's
    power-limit range (a damaged or hand-edited journal) is replaced by the GPU's default
    limit, and ``log`` says so."""
    out: dict[str, GpuSettings] = {}
    gpus = {gpu.uuid: gpu for gpu in actuator.rig.gpus}
    for uuid, settings in journal.original.items():
        gpu = gpus.get(uuid)
        if gpu is None:
            continue
        limits = gpu.power_constraints()
        if not limits.min_w <= settings.power_limit_w <= limits.max_w:
            log(
                f"rigforge: {journal.path.name} says {uuid} was at {settings.power_limit_w:g} W, "
                f"outside its {limits.min_w:g}–{limits.max_w:g} W range (a damaged or edited "
                f"journal); restoring its default {limits.default_w:g} W instead"
            )
            settings = GpuSettings(limits.default_w, settings.persistence_mode)
        out[uuid] = settings
    return out


def restore_journal(
    path: Path,
    *,
    rig: Rig | None = None,
    actuator: Actuator | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, str]:
    """Restore the settings in a journal and delete it when every GPU is back.

    Returns the failures (``{uuid: error}``); the journal is kept when there are any.
    Raises :class:`RigBusy` when a live run holds the rig, :class:`JournalUnreadable` /
    :class:`JournalForeign` (journal kept) when it cannot be trusted.
    """
    journal = Journal.load(path)
    with RigLock(journal.rig_spec):
        if not path.is_file() and not backup_path(path).is_file():
            return {}  # restored by another process between the load and the lock
        if actuator is None:
            _, actuator = open_tuning_rig(journal.rig_spec)
        present = {gpu.uuid for gpu in actuator.rig.gpus}
        failures = actuator.restore(settable_originals(journal, actuator, log))
        for uuid in set(journal.original) - present:
            failures[uuid] = (
                "GPU not present on the rig (a journal from another machine, or the GPU was "
                "removed); the journal is kept"
            )
        if not failures:
            remove_journal(path)
    return failures


def journal_files() -> list[Path]:
    """Every journal in the state folder (a primary, or a copy whose primary is gone)."""
    folder = state_dir()
    primaries = {p for p in folder.glob("journal-*.json")}
    primaries |= {
        p.with_name(p.name.removesuffix(".bak")) for p in folder.glob("journal-*.json.bak")
    }
    return sorted(primaries)


def stale_journals() -> list[Path]:
    """Journals whose writer is gone (killed, crashed, power lost).

    Raises :class:`JournalUnreadable` / :class:`JournalForeign` for a journal that cannot be
    trusted: a command must stop rather than run on GPUs left at probe caps.
    """
    stale = []
    for path in journal_files():
        journal = Journal.load(path)
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
            failures = restore_journal(path, log=log)
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
