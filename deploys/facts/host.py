"""One round trip for what a deploy concern needs to decide: its files, units, markers, tools.

:class:`HostSnapshot` reads, in one shell command, the state of several files (mode, owner,
SHA-1), the unit-file and active state of several units, the pending follow-up markers, which
of several commands are on ``PATH``, whether systemd runs as init and whether dpkg was left
half-done. A deploy reads it once per concern at plan time, so a file that already matches
needs no ``files.put`` (whose own facts cost three round trips a file), and the operations
read it again, fresh, when they run.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyinfra.api import FactBase

#: Where a follow-up step (``update-grub``, a daemon-reload and restart, ``update-initramfs``)
#: is recorded as owed before the file that needs it changes, and cleared after it succeeds.
PENDING_DIR = "/var/lib/rigforge/pending"


@dataclass(frozen=True)
class RemoteFile:
    """A regular file on the host: octal mode (``"644"``), owner, group, SHA-1 of its bytes."""

    mode: str
    user: str
    group: str
    sha1: str

    def matches(self, sha1: str, mode: str, user: str, group: str) -> bool:
        """Whether this file already is what ``files.put`` would make it (no change)."""
        return (self.sha1, int(self.mode, 8), self.user, self.group) == (
            sha1,
            int(mode, 8),
            user,
            group,
        )


@dataclass(frozen=True)
class UnitState:
    """A unit as ``systemctl`` reports it offline and live.

    ``file_state``: ``systemctl is-enabled`` (``"enabled"``, ``"disabled"``, ``"static"``, …;
    ``None`` when the unit file does not exist or there is no ``systemctl``); ``active``:
    ``systemctl is-active`` (``"active"``, ``"inactive"``, ``"failed"``, …; ``"unknown"``
    without a running systemd).
    """

    file_state: str | None
    active: str

    @property
    def enabled(self) -> bool:
        """Enabled at boot, or needing no enabling (static, alias, indirect, generated)."""
        return self.file_state in ("enabled", "enabled-runtime", "static", "alias", "indirect")


@dataclass(frozen=True)
class Snapshot:
    """What :class:`HostSnapshot` read. Paths, units and commands it was not asked about are
    absent from the mappings; a path that is not a regular file maps to ``None``."""

    systemd_booted: bool = False
    dpkg_interrupted: bool = False
    files: dict[str, RemoteFile | None] = field(default_factory=dict)
    units: dict[str, UnitState] = field(default_factory=dict)
    pending: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()

    def file_differs(self, path: str, sha1: str | None) -> bool:
        """Whether ``path`` is not (yet) ``sha1``; ``sha1=None``: whether the path exists."""
        remote = self.files.get(path)
        if sha1 is None:
            return remote is not None
        return remote is None or remote.sha1 != sha1

    def differing(self, wanted: Mapping[str, str | None]) -> list[str]:
        """The paths of ``wanted`` (path → SHA-1, or ``None`` for "absent") that differ."""
        return [path for path, sha1 in sorted(wanted.items()) if self.file_differs(path, sha1)]


def _words(values: list[str] | tuple[str, ...]) -> str:
    return " ".join(shlex.quote(v) for v in values)


class HostSnapshot(FactBase[Snapshot]):
    """Files, units, pending markers and commands of the host, in one round trip.

    + paths: files to stat and hash (``stat -c``, ``sha1sum``)
    + units: units to ask ``systemctl is-enabled``/``is-active`` about
    + commands: commands to look up on ``PATH``

    Output lines, one fact each (the path or name last, so spaces in it survive)::

        booted
        file 644 root root 3f786850e387550fdab836ed7e6dc881de23001b /etc/modprobe.d/x.conf
        nofile /etc/default/grub.d/rigforge-pcie.cfg
        unit enabled inactive rigforge-gpu-settings.service
        pending update-grub
        command update-grub

    Example value::

        Snapshot(systemd_booted=True, dpkg_interrupted=False,
                 files={"/etc/modprobe.d/x.conf": RemoteFile("644", "root", "root", "3f78…")},
                 units={"irqbalance.service": UnitState("enabled", "active")},
                 pending=("update-grub",), commands=("update-grub",))
    """

    @staticmethod
    def default() -> Snapshot:
        # No output at all: no systemd, no markers, nothing asked about.
        return Snapshot()

    def command(
        self,
        paths: list[str] | tuple[str, ...] = (),
        units: list[str] | tuple[str, ...] = (),
        commands: list[str] | tuple[str, ...] = (),
    ) -> str:
        parts = [
            "[ -d /run/systemd/system ] && echo booted",
            '[ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ] && echo dpkg-interrupted',
            f'for f in {PENDING_DIR}/*; do [ -e "$f" ] && echo "pending ${{f##*/}}"; done',
        ]
        if paths:
            parts.append(
                f"for p in {_words(paths)}; do "
                'if [ -f "$p" ]; then '
                'echo "file $(stat -c "%a %U %G" "$p") $(sha1sum < "$p" | cut -d" " -f1) $p"; '
                'else echo "nofile $p"; fi; done'
            )
        if units:
            parts.append(
                f"for u in {_words(units)}; do "
                's=$(systemctl is-enabled "$u" 2>/dev/null | head -n1); '
                'a=$(systemctl is-active "$u" 2>/dev/null | head -n1); '
                'echo "unit ${s:--} ${a:-unknown} $u"; done'
            )
        if commands:
            parts.append(
                f"for c in {_words(commands)}; do "
                'command -v "$c" >/dev/null 2>&1 && echo "command $c"; done'
            )
        return "; ".join(parts) + "; true"

    def process(self, output: list[str]) -> Snapshot:
        booted = dpkg = False
        files: dict[str, RemoteFile | None] = {}
        units: dict[str, UnitState] = {}
        pending: list[str] = []
        commands: list[str] = []
        for line in output:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "booted":
                booted = True
            elif kind == "dpkg-interrupted":
                dpkg = True
            elif kind == "pending" and rest:
                pending.append(rest)
            elif kind == "command" and rest:
                commands.append(rest)
            elif kind == "nofile" and rest:
                files[rest] = None
            elif kind == "file":
                cells = rest.split(" ", 4)
                if len(cells) == 5:
                    mode, user, group, sha1, path = cells
                    files[path] = RemoteFile(mode=mode, user=user, group=group, sha1=sha1)
            elif kind == "unit":
                cells = rest.split(" ", 2)
                if len(cells) == 3:
                    state, active, unit = cells
                    units[unit] = UnitState(None if state == "-" else state, active)
        return Snapshot(
            systemd_booted=booted,
            dpkg_interrupted=dpkg,
            files=files,
            units=units,
            pending=tuple(sorted(pending)),
            commands=tuple(sorted(commands)),
        )
