"""The safety session: journal the originals before the first change, restore them at the end.

The session takes the rig's lock (:class:`~tuning.apply.runlock.RigLock`), writes the journal
(:mod:`tuning.apply.journal`) and restores the originals when the run ends — success,
exception, Ctrl-C (SIGINT), SIGTERM, SIGHUP (terminal or SSH session closed) or SIGQUIT
(handlers raise, so ``finally`` runs; :mod:`tuning.apply.signals`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tuning.apply.actuator import Actuator
from tuning.apply.journal import (
    Journal,
    backup_path,
    journal_path,
    probe_problem,
    process_start,
    remove_journal,
    settable_originals,
)
from tuning.apply.runlock import RigLock
from tuning.apply.signals import install_raising_handlers, restore_handlers, signals_ignored
from tuning.errors import RigforgeError


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
        if self.path.is_file() or backup_path(self.path).is_file():
            # Unreadable → JournalUnreadable: the run stops, the journal is never overwritten.
            previous = Journal.load(self.path)
            if previous.owner_alive():
                raise RigforgeError(
                    f"another rigforge run (pid {previous.pid}) is tuning {self.actuator.spec}; "
                    f"wait for it or stop it (its journal: {self.path})"
                )
            failures = self.actuator.restore(settable_originals(previous, self.actuator, self.log))
            if failures:
                raise RigforgeError(
                    f"an interrupted run left {self.path}; restoring it failed: {failures}. "
                    "Fix the GPU(s), then run 'rigforge restore'"
                )
            self.log(f"rigforge: restored original settings from an interrupted run ({self.path})")
            original = previous.original
            if self.sweep_key is not None and previous.sweep_key == self.sweep_key:
                bad = [
                    f"probes.{uuid}[{i}] {problem}"
                    for uuid, records in previous.probes.items()
                    for i, record in enumerate(records)
                    if (problem := probe_problem(record))
                ]
                if bad:
                    self.log(
                        f"rigforge: {self.path.name} holds probe records that cannot be trusted "
                        f"({bad[0]}); not resuming: the sweep starts from its first probe"
                    )
                else:
                    self.resumed_probes = previous.probes
        self.journal = Journal(
            path=self.path,
            rig_spec=self.actuator.spec,
            original=original or self.actuator.settings(),
            pid_started=process_start(os.getpid()),
            sweep_key=self.sweep_key,
            probes={u: list(p) for u, p in self.resumed_probes.items()},
        )
        self.journal.save()
        self._install_handlers()
        return self

    def _install_handlers(self) -> None:
        self._old_handlers.update(install_raising_handlers())

    def _restore_handlers(self) -> None:
        restore_handlers(self._old_handlers)
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
        with signals_ignored():
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
                    remove_journal(self.path)
            finally:
                self._restore_handlers()
                self._lock.release()
