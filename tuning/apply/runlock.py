"""One rigforge run per rig: the run lock beside the rig's journal."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tuning.apply.state import rig_slug, state_dir
from tuning.errors import RigforgeError


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
