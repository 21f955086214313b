"""Where rigforge keeps its state (journals, locks, simulated rigs' caps) and how it writes it.

:func:`state_dir` is ``$RIGFORGE_STATE_DIR`` when set, ``/var/lib/rigforge/state`` for root,
``~/.local/state/rigforge`` for others. Files there are JSON written to a temporary file,
fsync'd and renamed over the old one (:func:`atomic_write_json`): a reader sees the old or the
new file, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

#: Where root keeps journals: the boot unit's ``rigforge apply``, an on-box ``sudo rigforge
#: restore`` and a remote sweep (``deploys/tune.py``) must all find the same journal.
SYSTEM_STATE_DIR = Path("/var/lib/rigforge/state")
#: root's state dir is world-traversable; what is private in it is 0600 by itself.
SYSTEM_STATE_DIR_MODE = 0o755


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
        path.mkdir(parents=True, exist_ok=True)
        # Traversable by the unprivileged exporter whatever the caller's umask (the boot
        # unit's is 0077): each file carries its own mode (journals 0600, the simulated
        # rig's caps and the enforcement record 0644).
        if path.stat().st_mode & 0o777 != SYSTEM_STATE_DIR_MODE:
            path.chmod(SYSTEM_STATE_DIR_MODE)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "rigforge"
    path.mkdir(parents=True, exist_ok=True)
    return path


def rig_slug(spec: str) -> str:
    """A file-name-safe, collision-free name for a rig spec."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)[-40:]
    return f"{readable}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def atomic_write_json(
    path: Path, document: Any, *, durable: bool = True, mode: int | None = None
) -> None:
    """Write JSON to ``path`` so that a crash leaves the old file or the new one, never half.

    ``durable``: fsync the file and its directory (survives power loss, costs ~10 ms);
    ``mode``: the file's permission bits (default: ``mkstemp``'s 0600, owner only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
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
