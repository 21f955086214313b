"""Safety: snapshot, journal and restore GPU settings; apply a profile's caps.

Every change the tuner makes goes through an :class:`Actuator`. Before the first change a
:class:`SafetySession` takes the rig's lock (one run per rig) and writes a **journal** — the
original power limit and persistence mode of every GPU, by UUID — to :func:`state_dir`
(``/var/lib/rigforge/state`` for root, ``~/.local/state/rigforge`` for others,
``$RIGFORGE_STATE_DIR`` when set), as JSON written to a temporary file, fsync'd and renamed
over the old one (a reader sees the old or the new journal, never half of one). The session
restores the originals when the run ends — success, exception, Ctrl-C (SIGINT), SIGTERM,
SIGHUP (terminal or SSH session closed) or SIGQUIT (handlers raise, so ``finally`` runs) —
and deletes the journal only once every GPU is back. After ``kill -9`` or a power loss the journal
stays behind; the next ``rigforge sweep|apply|restore`` finds it (its process is gone) and
restores it first. The journal also records each completed probe so an interrupted sweep
resumes at the probe where it stopped.

Simulated rigs have no hardware that outlives the process, so the actuator persists their
applied limits in ``sim-<rig>.json`` in the state dir and re-applies them when the rig is
opened again — through the :class:`~tuning.backends.base.Gpu` interface only. That makes a
``kill -9`` test mean something: the "hardware" really is left at the probe's cap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import psutil

from tuning.backends.base import Rig
from tuning.errors import (
    BackendUnavailable,
    ConfigError,
    GpuLost,
    NoPermission,
    OutOfRange,
    ReadBackMismatch,
    RigforgeError,
    SafetyAbort,
    UnknownGpu,
)

if TYPE_CHECKING:
    from tuning.budget import BudgetModel, RigBudget

JOURNAL_VERSION = 1


class Terminated(RigforgeError):
    """SIGTERM, SIGHUP or SIGQUIT arrived; the run stopped and the original settings were
    restored."""


#: Where root keeps journals: the boot unit's ``rigforge apply``, an on-box ``sudo rigforge
#: restore`` and a remote sweep (``deploys/tune.py``) must all find the same journal.
SYSTEM_STATE_DIR = Path("/var/lib/rigforge/state")


def state_dir() -> Path:
    """Where journals and locks live, created.

    ``$RIGFORGE_STATE_DIR`` when set; else :data:`SYSTEM_STATE_DIR` for root (euid 0: the
    only user who can change real power limits, under sudo, systemd or SSH alike); else
    ``$XDG_STATE_HOME/rigforge`` or ``~/.local/state/rigforge``.
    """
    env = os.environ.get("RIGFORGE_STATE_DIR")
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = SYSTEM_STATE_DIR
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "rigforge"
    path.mkdir(parents=True, exist_ok=True)
    return path


def rig_slug(spec: str) -> str:
    """A file-name-safe, collision-free name for a rig spec."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)[-40:]
    return f"{readable}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def atomic_write_json(path: Path, document: Any, *, durable: bool = True) -> None:
    """Write JSON to ``path`` so that a crash leaves the old file or the new one, never half.

    ``durable``: fsync the file and its directory (survives power loss, costs ~10 ms).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------------------------
# Actuator: the one place caps change
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSettings:
    """What the journal restores: power limit (W) and persistence mode."""

    power_limit_w: float
    persistence_mode: bool | None


class Actuator:
    """Sets caps on a rig; persists a simulated rig's caps so they outlive the process.

    ``on_change(uuid, cap_w)`` is called after every successful change (the sweep's trace).
    """

    def __init__(self, rig: Rig, spec: str, *, persist: bool | None = None) -> None:
        self.rig = rig
        self.spec = spec
        self.persist = spec != "nvml" if persist is None else persist
        self.on_change: Callable[[str, float], None] | None = None

    @property
    def sim_state_path(self) -> Path:
        return state_dir() / f"sim-{rig_slug(self.spec)}.json"

    def load_persisted(self) -> None:
        """Re-apply a simulated rig's caps from a previous process (its "hardware" state)."""
        if not self.persist or not self.sim_state_path.is_file():
            return
        saved = json.loads(self.sim_state_path.read_text())
        for gpu in self.rig.gpus:
            cap = saved.get("power_limit_w", {}).get(gpu.uuid)
            if cap is not None and abs(gpu.power_limit_w() - cap) > 0.5:
                gpu.set_power_limit_w(float(cap))

    def _save(self) -> None:
        if not self.persist:
            return
        # record what the simulated GPUs hold; a lost GPU keeps its last persisted value
        saved: dict[str, float] = {}
        if self.sim_state_path.is_file():
            saved = json.loads(self.sim_state_path.read_text()).get("power_limit_w", {})
        for gpu in self.rig.gpus:
            with contextlib.suppress(RigforgeError):
                saved[gpu.uuid] = gpu.power_limit_w()
        # a simulated rig has no power to lose: surviving kill -9 (page cache) is enough
        atomic_write_json(
            self.sim_state_path, {"spec": self.spec, "power_limit_w": saved}, durable=False
        )

    def settings(self) -> dict[str, GpuSettings]:
        """The current settings of every GPU, by UUID."""
        return {
            gpu.uuid: GpuSettings(gpu.power_limit_w(), gpu.persistence_mode())
            for gpu in self.rig.gpus
        }

    def set_cap(self, uuid: str, cap_w: float) -> float:
        """Set a power limit, read it back, persist it; return the enforced limit. Units: W.

        Raises :class:`ReadBackMismatch` when the card reports a different limit (> 1 W off).
        """
        gpu = self.rig.gpu(uuid)
        current = gpu.power_limit_w()
        if abs(current - cap_w) < 0.5:
            return current
        try:
            enforced = gpu.set_power_limit_w(cap_w)
        finally:
            # even a failed set may have changed something: record what the GPU now holds
            self._save()
        configured = gpu.power_limit_w()
        if abs(configured - cap_w) > 1.0:
            raise ReadBackMismatch(
                f"GPU {uuid}: asked for a {cap_w:g} W limit, the card reads back {configured:g} W "
                f"(enforced {enforced:g} W); check for another tool managing power limits"
            )
        if self.on_change is not None:
            self.on_change(uuid, configured)
        return enforced

    def restore(self, original: Mapping[str, GpuSettings]) -> dict[str, str]:
        """Put every GPU back; return ``{uuid: error}`` for the ones that could not be."""
        failures: dict[str, str] = {}
        for uuid, settings in original.items():
            try:
                self.set_cap(uuid, settings.power_limit_w)
                gpu = self.rig.gpu(uuid)
                if (
                    settings.persistence_mode is not None
                    and gpu.persistence_mode() is not None
                    and gpu.persistence_mode() != settings.persistence_mode
                ):
                    gpu.set_persistence_mode(settings.persistence_mode)
            except (RigforgeError, OSError) as error:
                failures[uuid] = f"{type(error).__name__}: {error}"
        return failures


def open_tuning_rig(
    spec: str, *, seed: int | None = None, budget: RigBudget | None = None
) -> tuple[Rig, Actuator]:
    """Open a rig and its actuator; a simulated rig gets back its persisted caps.

    ``budget``: the PSUs/circuits of real GPUs (see :func:`tuning.backends.open_rig`).
    """
    from tuning import backends

    rig = backends.open_rig(spec, seed=seed, budget=budget)
    actuator = Actuator(rig, spec)
    actuator.load_persisted()
    return rig, actuator


# --------------------------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------------------------


def journal_path(spec: str) -> Path:
    return state_dir() / f"journal-{rig_slug(spec)}.json"


def lock_path(spec: str) -> Path:
    """The rig's lock file, beside its journal."""
    return state_dir() / f"journal-{rig_slug(spec)}.lock"


class RigBusy(RigforgeError):
    """Another rigforge run holds the rig's lock (a sweep, an apply or a restore)."""


class RigLock:
    """One rigforge run per rig: an exclusive ``flock`` on :func:`lock_path`.

    Without it a second sweep would journal the first one's probe caps as the "originals",
    and an ``apply`` during a sweep would be undone by the sweep's restore. The kernel drops
    the lock when its holder dies (``kill -9`` included), so a lock is never stale; the
    holder's PID is written into the file for the message. Raises :class:`RigBusy` at once
    (no waiting) when another process holds it.
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.path = lock_path(spec)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RigBusy(
                f"another rigforge run (pid {holder}) is changing {self.spec}; wait for it to "
                f"finish or stop it (it restores the original settings on exit); lock: "
                f"{self.path}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # the file stays: unlinking a lock file lets a waiter lock an orphaned inode
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RigLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _process_start(pid: int) -> float | None:
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
        started = _process_start(self.pid)
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


# --------------------------------------------------------------------------------------------
# The safety session
# --------------------------------------------------------------------------------------------


#: Signals whose default action ends the process; a session turns each into :class:`Terminated`.
_TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}; original settings restored")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class SafetySession:
    """Journal the originals before the first change; restore them however the run ends.

    Usage::

        with SafetySession(actuator, sweep_key={...}) as session:
            session.resumed_probes  # probes of an interrupted identical sweep, by UUID
            ...change caps through the actuator...

    ``restore_on_exit=False`` keeps the changes on success (still restored on failure).
    """

    def __init__(
        self,
        actuator: Actuator,
        *,
        sweep_key: Mapping[str, Any] | None = None,
        restore_on_exit: bool = True,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    ) -> None:
        self.actuator = actuator
        self.sweep_key = dict(sweep_key) if sweep_key is not None else None
        self.restore_on_exit = restore_on_exit
        self.log = log
        self.path = journal_path(actuator.spec)
        self._lock = RigLock(actuator.spec)
        self.journal: Journal | None = None
        self.resumed_probes: dict[str, list[dict[str, Any]]] = {}
        self.restore_failures: dict[str, str] = {}
        self._old_handlers: dict[int, Any] = {}

    def __enter__(self) -> SafetySession:
        self._lock.acquire()
        try:
            return self._enter_locked()
        except BaseException:
            self._lock.release()
            raise

    def _enter_locked(self) -> SafetySession:
        original = None
        if self.path.is_file():
            previous = Journal.load(self.path)
            if previous.owner_alive():
                raise RigforgeError(
                    f"another rigforge run (pid {previous.pid}) is tuning {self.actuator.spec}; "
                    f"wait for it or stop it (its journal: {self.path})"
                )
            failures = self.actuator.restore(previous.original)
            if failures:
                raise RigforgeError(
                    f"an interrupted run left {self.path}; restoring it failed: {failures}. "
                    "Fix the GPU(s), then run 'rigforge restore'"
                )
            self.log(f"rigforge: restored original settings from an interrupted run ({self.path})")
            original = previous.original
            if self.sweep_key is not None and previous.sweep_key == self.sweep_key:
                self.resumed_probes = previous.probes
        self.journal = Journal(
            path=self.path,
            rig_spec=self.actuator.spec,
            original=original or self.actuator.settings(),
            pid_started=_process_start(os.getpid()),
            sweep_key=self.sweep_key,
            probes={u: list(p) for u, p in self.resumed_probes.items()},
        )
        self.journal.save()
        self._install_handlers()
        return self

    def _install_handlers(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
            # SIGHUP: the terminal or SSH session closed; SIGQUIT: Ctrl-\. Their default
            # action kills the process without running ``finally`` — the caps would stay.
            for signum in _TERMINATING_SIGNALS:
                self._old_handlers[signum] = signal.signal(signum, _raise_terminated)
            self._old_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)

    def _restore_handlers(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def record_probe(self, uuid: str, measurement: Mapping[str, Any]) -> None:
        assert self.journal is not None
        self.journal.record_probe(uuid, dict(measurement))

    def restore_now(self) -> dict[str, str]:
        """Restore the originals (used by the watchdog path and on exit)."""
        assert self.journal is not None
        return self.actuator.restore(self.journal.original)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        assert self.journal is not None
        # a second Ctrl-C must not interrupt the restore itself
        with _signals_ignored():
            try:
                if exc_type is None and not self.restore_on_exit:
                    failures: dict[str, str] = {}
                else:
                    failures = self.restore_now()
                self.restore_failures = failures
                if failures:
                    self.log(
                        f"rigforge: could not restore {sorted(failures)}: {failures}; the "
                        f"journal {self.path} is kept — run 'rigforge restore' once the GPU "
                        "answers again"
                    )
                    self.journal.pid = -1  # mark stale so the next start restores it
                    self.journal.save()
                else:
                    self.path.unlink(missing_ok=True)
            finally:
                self._restore_handlers()
                self._lock.release()


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    saved: dict[signal.Signals, Any] = {}
    try:
        for signum in (signal.SIGINT, *_TERMINATING_SIGNALS):
            with contextlib.suppress(ValueError):
                saved[signum] = signal.signal(signum, signal.SIG_IGN)
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# --------------------------------------------------------------------------------------------
# Applying a profile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    """One GPU's cap change: ``before_w`` → ``requested_w`` (clamped: ``target_w``) → read back."""

    uuid: str
    before_w: float
    requested_w: float
    target_w: float
    read_back_w: float | None
    changed: bool


#: errors a retry cannot fix: a bad value, missing privilege or GPU, a card off the bus, a
#: signal, a broken driver. Any other RigforgeError (a read-back mismatch, NVML "unknown" or
#: "timeout") may be transient and is retried.
_NOT_TRANSIENT: tuple[type[RigforgeError], ...] = (
    OutOfRange,
    NoPermission,
    UnknownGpu,
    GpuLost,
    BackendUnavailable,
    ConfigError,
    SafetyAbort,
)


def is_transient(error: BaseException) -> bool:
    """True for a :class:`RigforgeError` that a retry may clear (see ``_NOT_TRANSIENT``)."""
    return (
        isinstance(error, RigforgeError)
        and not isinstance(error, _NOT_TRANSIENT)
        and not isinstance(error, Terminated)
    )


def set_cap_retrying(
    actuator: Actuator,
    uuid: str,
    cap_w: float,
    *,
    retries: int = 3,
    retry_delay_s: float = 0.5,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """:meth:`Actuator.set_cap` (set and read back), retried up to ``retries`` more times,
    ``retry_delay_s`` apart, when it fails with a transient error (:func:`is_transient`).
    Returns the enforced limit (W). After the last attempt raises an error of the last
    failure's type naming the GPU and the attempts; other errors propagate at once.
    """
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return actuator.set_cap(uuid, cap_w)
        except RigforgeError as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise type(error)(
                    f"GPU {uuid}: setting a {cap_w:g} W limit failed {attempts} times; last: "
                    f"{error}"
                ) from error
            log(
                f"rigforge: GPU {uuid}: {error}; retrying in {retry_delay_s:g} s "
                f"(attempt {attempt + 1} of {attempts})"
            )
            sleep(retry_delay_s)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def apply_caps(
    actuator: Actuator,
    caps_w: Mapping[str, float],
    *,
    dry_run: bool = False,
    budget: BudgetModel | None = None,
    journaled: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    retries: int = 3,
    retry_delay_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ApplyResult]:
    """Apply caps by UUID, clamped to each GPU's constraints and read back; all or nothing.

    Refuses before anything changes when a UUID is missing on the rig (:class:`UnknownGpu`)
    or when ``budget`` is given and the resulting caps (GPUs the profile does not name keep
    their current limit) plus platform draw exceed a PSU or circuit budget
    (:class:`OutOfRange`). Caps are lowered before any is raised, so no intermediate state
    draws more than the final one. With ``journaled`` the changes run inside a
    :class:`SafetySession` that keeps them on success and rolls every GPU back on any failure
    (a read-back mismatch, a lost GPU, a signal) — or, after ``kill -9``, on the next start.
    A set or read-back that fails transiently is retried first (``retries`` more attempts,
    ``retry_delay_s`` apart; :func:`set_cap_retrying`); only then does the whole apply roll
    back. Results come in the order of ``caps_w``.
    """
    rig = actuator.rig
    present = {gpu.uuid for gpu in rig.gpus}
    missing = sorted(set(caps_w) - present)
    if missing:
        raise UnknownGpu(
            f"the profile names GPU(s) {', '.join(missing)} that this rig does not have "
            f"(it has {', '.join(sorted(present))}); re-run 'rigforge sweep' for this rig"
        )
    before = {uuid: rig.gpu(uuid).power_limit_w() for uuid in caps_w}
    targets = {
        uuid: rig.gpu(uuid).power_constraints().clamp(float(requested))
        for uuid, requested in caps_w.items()
    }
    if budget is not None:
        final = {gpu.uuid: gpu.power_limit_w() for gpu in rig.gpus} | targets
        over = {name: r for name, r in budget.load_ratios(final).items() if r > 1.0 + 1e-9}
        if over:
            worst = ", ".join(f"{name} at {ratio:.0%}" for name, ratio in sorted(over.items()))
            raise OutOfRange(
                f"the profile's caps plus platform draw would exceed the power budget ({worst} "
                "of its continuous rating); nothing was changed — re-run 'rigforge sweep' "
                "with this budget or lower the caps"
            )

    def result(uuid: str, read_back: float | None) -> ApplyResult:
        changed = abs(before[uuid] - targets[uuid]) >= 0.5
        return ApplyResult(uuid, before[uuid], caps_w[uuid], targets[uuid], read_back, changed)

    if dry_run:
        return [result(uuid, None) for uuid in caps_w]
    # lower first, then raise: every intermediate state is at or below the final one
    order = sorted(caps_w, key=lambda u: targets[u] - before[u])
    session = (
        SafetySession(actuator, restore_on_exit=False, log=log)
        if journaled
        else contextlib.nullcontext()
    )
    with session:
        for uuid in order:
            set_cap_retrying(
                actuator,
                uuid,
                targets[uuid],
                retries=retries,
                retry_delay_s=retry_delay_s,
                log=log,
                sleep=sleep,
            )
    return [result(uuid, rig.gpu(uuid).power_limit_w()) for uuid in caps_w]
