"""The cap-enforcement record: what ``rigforge apply --record FILE`` re-applied, for the exporter.

``power.enforce: true`` installs a timer that runs ``rigforge apply PROFILE --record FILE``;
each run that had to put a reverted cap back adds one per GPU to ``reapplied``, and every run
stamps ``last_run_unix_s``. The exporter reads the file as
``rigforge_cap_enforcement_reapplied_total`` and ``…_last_run_timestamp_seconds``. The file is
written atomically and world-readable (it holds UUIDs and counts, nothing secret), so the
unprivileged exporter can read what the root timer wrote.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The record is read by the exporter's own user: not a secret, so 0644.
RECORD_MODE = 0o644


@dataclass(frozen=True)
class EnforcementState:
    """What the cap-enforcement timer last recorded (``rigforge exporter`` only reads it)."""

    reapplied: Mapping[str, int] = field(default_factory=dict)
    last_run_unix_s: float | None = None

    @classmethod
    def load(cls, path: Path) -> EnforcementState:
        """Read the timer's JSON (``{"reapplied": {uuid: n}, "last_run_unix_s": t}``).

        Raises ``OSError`` / ``ValueError`` for an unreadable or malformed file.
        """
        document = json.loads(path.read_text())
        return cls(
            reapplied={str(k): int(v) for k, v in (document.get("reapplied") or {}).items()},
            last_run_unix_s=(
                None
                if document.get("last_run_unix_s") is None
                else float(document["last_run_unix_s"])
            ),
        )

    def recorded(self, reapplied_uuids: Iterable[str], now_unix_s: float) -> EnforcementState:
        """This state after a run that re-applied the caps of ``reapplied_uuids``."""
        counts = dict(self.reapplied)
        for uuid in reapplied_uuids:
            counts[uuid] = counts.get(uuid, 0) + 1
        return EnforcementState(reapplied=counts, last_run_unix_s=now_unix_s)

    def save(self, path: Path) -> None:
        """Write atomically (a reader sees the old or the new record), mode 0644."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(
                    {"reapplied": dict(self.reapplied), "last_run_unix_s": self.last_run_unix_s},
                    handle,
                    sort_keys=True,
                )
            os.chmod(tmp, RECORD_MODE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def record_run(path: Path, reapplied_uuids: Iterable[str], now_unix_s: float) -> EnforcementState:
    """Add one enforcement run to the record at ``path`` (created when absent)."""
    state = EnforcementState.load(path) if path.is_file() else EnforcementState()
    new = state.recorded(reapplied_uuids, now_unix_s)
    new.save(path)
    return new


__all__ = ["EnforcementState", "record_run"]
