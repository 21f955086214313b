"""Helpers shared by the facts: the root path (for /sys, /proc) as a quoted shell prefix."""

from __future__ import annotations

import shlex


def root_prefix(root: str) -> str:
    """``/`` → ``""``; ``/srv/scratch/`` → ``/srv/scratch``, shell-quoted.

    Facts and operations read and write ``{prefix}/sys/...``, so tests and the CI target point
    them at a scratch tree. Raises ``ValueError`` for a relative root (it would depend on the
    remote shell's working directory).
    """
    if not root.startswith("/"):
        raise ValueError(f"root {root!r} must be an absolute path")
    stripped = root.rstrip("/")
    return shlex.quote(stripped) if stripped else ""
