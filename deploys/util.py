"""Helpers shared by the deploys: the host's validated config, putting rendered files, guards.

Templates are rendered on the control machine by the renderer (:mod:`tuning.render`: one
jinja environment, one unit-text writer, the :class:`FileSpec` of every file) and put on the
host with ``files.put`` — pyinfra compares the content's hash with the remote file's, so an
unchanged file is a no-op.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

from deploys.facts.host import HostSnapshot, Snapshot, UnitState
from deploys.operations import dpkg, pending, systemd
from deploys.operations.systemd import DAEMON_RELOAD, STOPPED, restart_step
from inventory.schema import HostConfig, host_config
from tuning.render import TEMPLATES, FileSpec, render, unit_word

REPO_ROOT = Path(__file__).resolve().parents[1]
__all__ = ["TEMPLATES", "FileSpec", "render", "systemd_quote"]

#: Kept by this name for callers: ``ExecStart=`` word quoting is the renderer's one writer.
systemd_quote = unit_word


@dataclass(frozen=True)
class TextFile:
    """A file a deploy writes verbatim (a profile, a secret): target path, text, label, mode.

    Duck-types :class:`FileSpec` (``dest``, ``name``, ``mode``, ``render()``) for
    :func:`put_files`.
    """

    dest: str
    text: str
    name: str = ""
    mode: str = "644"

    def render(self) -> str:
        """The file's content."""
        return self.text


def put_spec(spec: FileSpec) -> OperationMeta:
    """Put a :class:`FileSpec` on the host (root-owned; a no-op when the content matches)."""
    return put_text(spec.dest, spec.render(), name=spec.name or spec.dest, mode=spec.mode)


def cfg() -> HostConfig:
    """The current host's validated inventory config (``host.data.rigforge``)."""
    return host_config(host)


def put_text(
    dest: str,
    content: str,
    *,
    name: str,
    mode: str = "644",
    user: str = "root",
    group: str = "root",
) -> OperationMeta:
    """Ensure ``dest`` holds exactly ``content`` (a no-op when the hash already matches)."""
    return files.put(
        name=name,
        src=io.StringIO(content),
        dest=dest,
        mode=mode,
        user=user,
        group=group,
        create_remote_dir=True,
    )


def snapshot(
    paths: Sequence[str] = (), units: Sequence[str] = (), commands: Sequence[str] = ()
) -> Snapshot:
    """The host's :class:`~deploys.facts.host.Snapshot` of these paths, units and commands.

    One round trip. Called by a deploy body (plan time: the state before this run changes
    anything), once per concern, to skip the operations it already proves unneeded.
    """
    return host.get_fact(
        HostSnapshot, paths=sorted(set(paths)), units=sorted(set(units)), commands=sorted(commands)
    )


#: Plan-time answers that cannot change while the deploy file is read (``(host, key)``).
_PLAN: dict[tuple[str, str], Any] = {}


def _planned(key: str, read: Callable[[], Any]) -> Any:
    """``read()`` once per host while the deploy is planned (every later call: the same value).

    Deploy bodies run before any operation executes, so their facts are the host's state
    before this run; asking again would return the same answer over another round trip.
    """
    if (host.name, key) not in _PLAN:
        _PLAN[(host.name, key)] = read()
    return _PLAN[(host.name, key)]


def systemd_booted() -> bool:
    """Whether systemd runs as init on the host (sd_booted(3): ``/run/systemd/system`` exists).

    False on the CI target (a chroot-like namespace whose PID 1 is sshd): units are written and
    enabled there, but never reloaded or started.
    """
    return bool(_planned("basics", snapshot).systemd_booted)


def missing_packages(packages: list[str]) -> list[str]:
    """The packages of ``packages`` that dpkg does not list as installed on the host."""
    installed = _planned("dpkg", lambda: host.get_fact(DebPackages) or {})
    return [p for p in packages if p.split("=", 1)[0] not in installed]


def ensure_packages(packages: list[str], *, name: str, no_recommends: bool = True) -> bool:
    """Install the missing ones of ``packages``; refresh the apt index only when needed.

    ``apt.packages(update=True)`` would refresh (a change) on every run; refreshing only when
    a package is missing keeps a second deploy change-free. A dpkg run left half done by a
    killed deploy is finished first (once per run). Returns whether anything was missing at
    plan time.
    """
    if _planned("basics", snapshot).dpkg_interrupted and (host.name, "dpkg-repaired") not in _PLAN:
        _PLAN[(host.name, "dpkg-repaired")] = True
        # A deploy killed mid-install leaves dpkg half done; finish it before anything else.
        dpkg.configured(name="Finish an interrupted dpkg run (dpkg --configure -a)")
    missing = missing_packages(packages)
    if not missing:
        host.noop(f"{name}: {', '.join(packages)} installed")
        return False
    apt.packages(
        # The packages in the name: a --dry plan (names only, no arguments) shows what installs.
        name=f"{name} [{' '.join(packages)}]",
        packages=packages,
        update=True,
        no_recommends=no_recommends,
        # Wait for a lock held by an apt that an interrupted deploy left running.
        extra_install_args="-o DPkg::Lock::Timeout=300 "
        "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold",
    )
    return True


def request_reboot(reason: str) -> None:
    """Ask for (never force) a reboot: write ``/etc/rigforge/reboot-required`` and say so."""
    logger.warning(f"{host.name}: reboot required: {reason}")
    put_text(
        "/etc/rigforge/reboot-required",
        f"{reason}\n",
        name="Request a reboot (/etc/rigforge/reboot-required)",
    )


def sha1_text(content: str) -> str:
    """SHA-1 of ``content`` as UTF-8, the digest ``files.put`` and ``sha1sum`` compare."""
    return hashlib.sha1(content.encode("utf-8")).hexdigest()


def put_files(
    specs: Sequence[FileSpec | TextFile],
    snap: Snapshot,
    step: str | None = None,
    *,
    user: str = "root",
    group: str = "root",
) -> dict[str, str]:
    """Put those of ``specs`` that differ from the host's; mark ``step`` owed first if new content.

    A mode or owner difference alone is put (chmod/chown) but owes no follow-up: the step
    (``update-grub``, a restart) reads the content.

    ``snap``: the concern's plan-time :func:`snapshot` holding every ``spec.dest``; a file it
    shows already right (content, mode, owner) gets a no-op line instead of a ``files.put``
    (three round trips saved per file). ``step=None``: no follow-up is possible here (no
    systemd running, no ``update-grub``). Returns ``{dest: SHA-1}`` of every spec, what the
    follow-up operations diff against.
    """
    contents = {spec.dest: spec.render() for spec in specs}
    wanted = {dest: sha1_text(content) for dest, content in contents.items()}
    changing = []
    for spec in specs:
        remote = snap.files.get(spec.dest)
        if remote is not None and remote.matches(wanted[spec.dest], spec.mode, user, group):
            host.noop(f"{spec.name or spec.dest}: {spec.dest} unchanged")
        else:
            changing.append(spec)
    if step is not None:
        mark_owed(step, snap, {s.dest: wanted[s.dest] for s in changing})
    for spec in changing:
        put_text(
            spec.dest,
            contents[spec.dest],
            name=spec.name or spec.dest,
            mode=spec.mode,
            user=user,
            group=group,
        )
    return wanted


def mark_owed(step: str, snap: Snapshot, wanted: Mapping[str, str | None]) -> None:
    """Add ``pending.marked`` for ``step`` when a file of ``wanted`` differs and it is not owed.

    Placed before the operations that change those files.
    """
    changing = snap.differing(wanted)
    if changing and step not in snap.pending:
        pending.marked(
            name=f"Mark {step} pending ({', '.join(changing)} change)",
            step=step,
            files={path: wanted[path] for path in changing},
        )


def follow_up(
    step: str,
    commands: list[str],
    *,
    name: str,
    snap: Snapshot,
    wanted: Mapping[str, str | None],
) -> None:
    """Run ``step`` (``pending.followed_up``) when it is owed: pending, or ``wanted`` differs."""
    if step not in snap.pending and not snap.differing(wanted):
        host.noop(f"{name}: nothing pending")
        return
    pending.followed_up(name=name, step=step, commands=commands, files=dict(wanted))


def service_after_change(
    unit: str,
    *,
    snap: Snapshot,
    wanted: dict[str, str],
    name: str,
    step: str | None = None,
    restart_alone: bool = False,
) -> None:
    """Keep ``unit`` enabled (and running, where systemd runs); restart it after a change.

    ``snap`` must hold ``unit`` and every path of ``wanted`` (the unit's files as
    :func:`put_files` returned them). Adds ``systemd.service_after_change`` unless ``snap``
    already proves it has nothing to do. ``restart_alone``: see
    ``systemd.service_after_change`` (the units that ``Requires=`` it keep running).
    """
    state = snap.units.get(unit, UnitState(None, "unknown"))
    owed = (step or restart_step(unit)) in snap.pending or snap.differing(wanted)
    if state.enabled and not snap.systemd_booted:
        host.noop(f"{name}: {unit} is {state.file_state} (systemd not running: no reload)")
        return
    if state.enabled and snap.systemd_booted and state.active == "active" and not owed:
        host.noop(f"{name}: {unit} is enabled and active; none of its files changed")
        return
    where = "reload only if a file changed" if snap.systemd_booted else "systemd not running"
    systemd.service_after_change(
        name=f"{name} ({where})",
        unit=unit,
        files=wanted,
        step=step,
        restart_alone=restart_alone,
    )


def unit_removed(unit: str, *, extra_paths: tuple[str, ...] = (), name: str) -> None:
    """Stop and disable ``unit``, delete its unit file and ``extra_paths``; reload systemd.

    Idempotent: a second run finds nothing (one round trip) and adds no operation.
    """
    paths = [f"/etc/systemd/system/{unit}", *extra_paths]
    snap = snapshot(paths=paths, units=[unit])
    state = snap.units.get(unit, UnitState(None, "unknown"))
    if (
        state.file_state is None
        and not any(snap.files.get(p) for p in paths)
        and not (
            snap.systemd_booted and (DAEMON_RELOAD in snap.pending or state.active not in STOPPED)
        )
    ):
        host.noop(f"{name}: {unit} not installed")
        return
    systemd.unit_removed(name=name, unit=unit, paths=paths)


def remove_files(
    paths: list[str], *, step: str | None, name: str, commands: Sequence[str] = ()
) -> bool:
    """Delete those of ``paths`` that exist, then run ``step``'s ``commands`` (kill-safe).

    Returns whether anything was there to remove or owed (at plan time).
    """
    snap = snapshot(paths=paths)
    if not any(snap.files.get(p) for p in paths) and (step is None or step not in snap.pending):
        host.noop(f"{name}: none of {', '.join(paths)} present")
        return False
    pending.files_removed(name=name, paths=paths, step=step, commands=list(commands))
    return True
