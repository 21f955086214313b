"""Facts about systemd that work without a running systemd (offline, like ``systemctl enable``).

pyinfra's ``SystemdEnabled``/``SystemdStatus`` use ``systemctl show``, which needs systemd as
PID 1; a host being provisioned from a chroot or container (and the CI target) has none.
"""

from __future__ import annotations

from pyinfra.api import FactBase


class UnitFileState(FactBase[str | None]):
    """``systemctl is-enabled UNIT`` (reads unit files; no running systemd needed).

    Returns the state word (``"enabled"``, ``"disabled"``, ``"static"``, ``"masked"``, …) or
    ``None`` when the unit file does not exist. Example: ``"enabled"``.
    """

    def requires_command(self, *args, **kwargs) -> str:
        return "systemctl"

    def command(self, unit: str) -> str:
        # is-enabled exits non-zero for "disabled"; the word on stdout is what matters.
        return f"systemctl is-enabled {unit} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        words = [line.strip() for line in output if line.strip()]
        return words[0] if words else None


class DpkgInterrupted(FactBase[bool]):
    """Whether dpkg was interrupted mid-install (``/var/lib/dpkg/updates/`` holds entries).

    apt refuses to install anything until ``dpkg --configure -a`` has run. Example: ``False``.
    """

    def command(self) -> str:
        return "ls -A /var/lib/dpkg/updates 2>/dev/null | head -1"

    def process(self, output: list[str]) -> bool:
        return any(line.strip() for line in output)
