"""Follow-up steps owed by a file change, as operations that diff :class:`HostSnapshot`.

A step (``update-grub``, ``update-initramfs``, ``restart-<unit>``, ``daemon-reload``) is owed
when a file it depends on changes. :func:`marked` writes its marker
(``/var/lib/rigforge/pending/<step>``) BEFORE the change; :func:`followed_up` runs the step
and clears the marker only after every command succeeded. A deploy killed in between leaves
the marker, so the next run finishes the step though the file no longer changes.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Sequence

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from deploys.facts.host import PENDING_DIR, HostSnapshot


def marker(step: str) -> str:
    """The marker file of ``step`` (``/var/lib/rigforge/pending/<step>``); a plain name only."""
    if not step or "/" in step or step.startswith(".") or step != step.strip():
        raise OperationValueError(f"step {step!r} must be a plain file name")
    return f"{PENDING_DIR}/{step}"


def mark_command(step: str) -> str:
    """The shell line that records ``step`` as owed."""
    return f"mkdir -p {PENDING_DIR} && touch {shlex.quote(marker(step))}"


def clear_command(step: str) -> str:
    """The shell line that clears ``step`` (the last command of its follow-up)."""
    return f"rm -f {shlex.quote(marker(step))}"


@operation()
def marked(step: str, files: dict[str, str | None]) -> Generator[str, None, None]:
    """Record ``step`` as owed when one of ``files`` is about to change.

    + step: the follow-up's name, e.g. ``update-grub``
    + files: path → the SHA-1 it will have (``None``: the path will be removed)

    Placed before the operations that change the files. A no-op when the step is already
    owed or every file already is what it will be. Example::

        pending.marked(step="update-grub",
                       files={"/etc/default/grub.d/rigforge-pcie.cfg": "9f0c…"})
    """
    mark = mark_command(step)
    snap = host.get_fact(HostSnapshot, paths=sorted(files))
    if step in snap.pending:
        host.noop(f"{step} is already pending")
        return
    changing = snap.differing(files)
    if not changing:
        host.noop(f"{step} not owed: {', '.join(sorted(files))} unchanged")
        return
    yield mark


@operation()
def followed_up(
    step: str, commands: Sequence[str], files: dict[str, str | None] | None = None
) -> Generator[str, None, None]:
    """Run ``commands`` and clear ``step``'s marker when the step is owed.

    + step: the follow-up's name (its marker was written by :func:`marked`)
    + commands: the shell lines of the step, e.g. ``["update-grub"]``
    + files: path → SHA-1 (``None``: absent) the step depends on; one that still differs
      (a plan made before the change ran) makes the step owed too

    The marker is removed by the last command, so a failure or a kill leaves it for the next
    run. Example::

        pending.followed_up(step="update-grub", commands=["update-grub"])
    """
    clear = clear_command(step)
    wanted = files or {}
    snap = host.get_fact(HostSnapshot, paths=sorted(wanted))
    changing = snap.differing(wanted)
    if step not in snap.pending and not changing:
        host.noop(f"{step}: nothing pending")
        return
    yield from commands
    yield clear


@operation()
def files_removed(
    paths: Sequence[str], step: str | None = None, commands: Sequence[str] = ()
) -> Generator[str, None, None]:
    """Delete those of ``paths`` that exist, then run ``step``'s ``commands``.

    + paths: files to delete (absolute)
    + step: the follow-up their removal owes (``None``: none possible here)
    + commands: the follow-up's shell lines, run after the removal

    The marker is written first and cleared last, so a kill in between leaves the follow-up
    owed. A no-op when no path exists and the step is not pending. Example::

        pending.files_removed(paths=["/etc/default/grub.d/rigforge-pcie.cfg"],
                              step="update-grub", commands=["update-grub"])
    """
    for path in paths:
        if not path.startswith("/"):
            raise OperationValueError(f"path {path!r} must be absolute")
    snap = host.get_fact(HostSnapshot, paths=sorted(paths))
    present = [p for p in paths if snap.files.get(p) is not None]
    owed = step is not None and step in snap.pending
    if not present and not owed:
        host.noop(f"none of {', '.join(paths)} present")
        return
    if step is not None:
        yield mark_command(step)
    if present:
        yield "rm -f " + " ".join(shlex.quote(p) for p in present)
    if step is not None:
        yield from commands
        yield clear_command(step)
