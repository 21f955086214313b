"""Helpers shared by the deploys: the host's validated config, putting rendered files, guards.

Templates are rendered on the control machine by the renderer (:mod:`tuning.render`: one
jinja environment, one unit-text writer, the :class:`FileSpec` of every file) and put on the
host with ``files.put`` — pyinfra compares the content's hash with the remote file's, so an
unchanged file is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import shlex
from collections.abc import Generator
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, server, systemd

from deploys.facts.rigforge_systemd import DpkgInterrupted, UnitFileState
from inventory.schema import HostConfig, host_config
from tuning.render import TEMPLATES, FileSpec, render, unit_word

REPO_ROOT = Path(__file__).resolve().parents[1]
__all__ = ["TEMPLATES", "FileSpec", "render", "systemd_quote"]

#: Kept by this name for callers: ``ExecStart=`` word quoting is the renderer's one writer.
systemd_quote = unit_word


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


def put_template(
    template: str, dest: str, *, name: str, mode: str = "644", **context: Any
) -> OperationMeta:
    """Render ``template`` locally and put it at ``dest`` (root-owned)."""
    return put_text(dest, render(template, **context), name=name, mode=mode)


def systemd_booted() -> bool:
    """Whether systemd runs as init on the host (sd_booted(3): ``/run/systemd/system`` exists).

    False on the CI target (a chroot-like namespace whose PID 1 is sshd): units are written and
    enabled there, but never reloaded or started.
    """
    return bool(host.get_fact(Directory, path="/run/systemd/system"))


def has_command(command: str) -> bool:
    """Whether ``command`` is on the host's PATH."""
    return host.get_fact(Which, command=command) is not None


def missing_packages(packages: list[str]) -> list[str]:
    """The packages of ``packages`` that dpkg does not list as installed on the host."""
    installed = host.get_fact(DebPackages) or {}
    return [p for p in packages if p.split("=", 1)[0] not in installed]


#: ``dpkg --configure -a``, waiting up to 300 s for the dpkg lock. When a deploy is killed, the
#: apt it started on the host runs on and holds the lock; dpkg (unlike apt's
#: ``DPkg::Lock::Timeout``) fails at once, so it is retried — on a lock error only.
DPKG_CONFIGURE_WAITING = (
    "for i in $(seq 150); do "
    "out=$(dpkg --configure -a 2>&1) && exit 0; "
    'case "$out" in *lock*) sleep 2 ;; *) echo "$out" >&2; exit 1 ;; esac; '
    "done; echo 'dpkg lock still held after 300 s' >&2; exit 1"
)

#: Hosts whose interrupted dpkg run this deploy already finishes (once per run is enough).
_DPKG_REPAIRED: set[str] = set()


def ensure_packages(packages: list[str], *, name: str, no_recommends: bool = True) -> bool:
    """Install the missing ones of ``packages``; refresh the apt index only when needed.

    ``apt.packages(update=True)`` would refresh (a change) on every run; refreshing only when
    a package is missing keeps a second deploy change-free. Returns whether anything was
    missing at plan time.
    """
    if host.get_fact(DpkgInterrupted) and host.name not in _DPKG_REPAIRED:
        _DPKG_REPAIRED.add(host.name)
        # A deploy killed mid-install leaves dpkg half done; finish it before anything else.
        server.shell(
            name="Finish an interrupted dpkg run (dpkg --configure -a)",
            commands=[DPKG_CONFIGURE_WAITING],
        )
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


@operation()
def unit_enabled(unit: str) -> Generator[str, None, None]:
    """Enable a systemd unit by its unit files (works without a running systemd).

    + unit: the unit name, e.g. ``nvidia-persistenced.service``

    Yields ``systemctl enable UNIT`` only when ``systemctl is-enabled`` says it is not
    enabled (or static); otherwise a no-op.
    """
    state = host.get_fact(UnitFileState, unit=unit)
    if state in ("enabled", "static", "alias", "indirect"):
        host.noop(f"{unit} is {state}")
    else:
        yield f"systemctl enable {unit}"


#: Where a follow-up step (``update-grub``, a daemon-reload and restart, ``update-initramfs``)
#: is recorded as owed before the file that needs it changes, and cleared after it succeeds.
PENDING_DIR = "/var/lib/rigforge/pending"

#: ``(host name, step)`` marked pending earlier in this run (the fact still says "absent").
_MARKED: set[tuple[str, str]] = set()


def pending_marker(step: str) -> str:
    """The marker file of ``step`` (``/var/lib/rigforge/pending/<step>``)."""
    if not step or "/" in step or step.startswith("."):
        raise ValueError(f"step {step!r} must be a plain file name")
    return f"{PENDING_DIR}/{step}"


def is_pending(step: str) -> bool:
    """Whether ``step`` is owed on the host: marked earlier in this run, or its marker exists.

    A marker left by a run killed between a file change and its follow-up makes the next run
    finish the follow-up, though the file no longer changes.
    """
    if (host.name, step) in _MARKED:
        return True
    return bool(host.get_fact(File, path=pending_marker(step)))


def mark_pending(step: str, *, reason: str) -> None:
    """Write the marker of ``step`` (an operation placed BEFORE the change that owes it)."""
    if is_pending(step):
        _MARKED.add((host.name, step))
        return
    _MARKED.add((host.name, step))
    marker = shlex.quote(pending_marker(step))
    server.shell(
        name=f"Mark {step} pending ({reason})",
        commands=[f"mkdir -p {PENDING_DIR} && touch {marker}"],
    )


def content_differs(dest: str, content: str) -> bool:
    """Whether the host's ``dest`` is missing or differs from ``content`` (SHA-1, like put)."""
    remote = host.get_fact(Sha1File, path=dest)
    return remote != hashlib.sha1(content.encode("utf-8")).hexdigest()


def put_pending(spec: FileSpec, step: str | None, **put_args: Any) -> OperationMeta:
    """Put ``spec``; when its content will change, mark ``step`` pending first.

    ``step=None``: no follow-up is possible here (no systemd running, no ``update-grub``),
    so nothing is marked. ``put_args`` go to :func:`put_text` (``user``, ``group``).
    """
    return put_text_pending(
        spec.dest, spec.render(), step, name=spec.name or spec.dest, mode=spec.mode, **put_args
    )


def put_text_pending(
    dest: str, content: str, step: str | None, *, name: str, **put_args: Any
) -> OperationMeta:
    """:func:`put_text`, marking ``step`` pending first when the content will change."""
    if step is not None and content_differs(dest, content):
        mark_pending(step, reason=f"{dest} changes")
    return put_text(dest, content, name=name, **put_args)


def remove_files(paths: list[str], *, step: str | None, name: str) -> bool:
    """Delete those of ``paths`` that exist; mark ``step`` pending first when any does.

    Returns whether anything was there to remove (at plan time).
    """
    present = [p for p in paths if host.get_fact(File, path=p)]
    if not present:
        host.noop(f"{name}: none of {', '.join(paths)} present")
        return False
    if step is not None:
        mark_pending(step, reason=f"{name}: files removed")
    for path in present:
        files.file(name=f"{name}: remove {path}", path=path, present=False)
    return True


def run_pending(
    step: str, commands: list[str], *, name: str, changed: list[OperationMeta] | None = None
) -> None:
    """Run ``commands`` then clear ``step``'s marker, when it is pending (or ``changed`` did).

    The marker is removed only after every command succeeded (pyinfra stops an operation at
    its first failing command), so a kill or a failure leaves it for the next run.
    """
    pending = is_pending(step)
    extra = list(changed or [])
    if not pending and not extra:
        host.noop(f"{name}: nothing pending")
        return
    server.shell(
        name=name,
        commands=[*commands, f"rm -f {shlex.quote(pending_marker(step))}"],
        _if=(lambda: pending or any(op.did_change() for op in extra)),
    )


def restart_step(unit: str) -> str | None:
    """The pending step "daemon-reload and restart ``unit``"; ``None`` without systemd running."""
    return f"restart-{unit}" if systemd_booted() else None


def service_after_change(
    unit: str, *, changed: list[OperationMeta], name: str, step: str | None = None
) -> None:
    """Keep ``unit`` enabled and running; reload/restart ONLY when something changed.

    On a booted systemd host: ``systemd.service`` (enabled, running), then ``daemon-reload``
    and a restart when one of ``changed`` changed in this run or ``step`` (see
    :func:`restart_step`, written by :func:`put_pending` before the files changed) is pending
    from a run killed before its restart (a needless daemon-reload detaches GPUs from running
    containers, so never otherwise). Without systemd running (chroot, CI target): enable by
    unit files only.
    """
    if systemd_booted():
        systemd.service(
            name=f"{name} (reload only if a unit file changed)",
            service=unit,
            running=True,
            enabled=True,
            daemon_reload=False,
        )
        run_pending(
            step or f"restart-{unit}",
            ["systemctl daemon-reload", f"systemctl restart {shlex.quote(unit)}"],
            name=f"{name}: daemon-reload and restart (its files changed)",
            changed=changed,
        )
    else:
        unit_enabled(name=f"{name}: enable (systemd not running: no reload, no start)", unit=unit)


def unit_removed(unit: str, *, extra_paths: tuple[str, ...] = (), name: str) -> None:
    """Stop and disable ``unit``, delete its unit file and ``extra_paths``; reload systemd.

    Idempotent: a second run finds nothing and is a no-op. Disabling comes before deleting
    (``systemctl disable`` reads the ``[Install]`` section from the file); a kill in between
    leaves a disabled unit whose file the next run deletes.
    """
    unit_path = f"/etc/systemd/system/{unit}"
    state = host.get_fact(UnitFileState, unit=unit)
    booted = systemd_booted()
    step = "daemon-reload" if booted else None
    if state in ("enabled", "enabled-runtime", "linked", "alias", "indirect"):
        if step is not None:
            mark_pending(step, reason=f"{unit} removed")
        if booted:
            systemd.service(
                name=f"{name}: stop and disable", service=unit, running=False, enabled=False
            )
        else:
            server.shell(
                name=f"{name}: disable (systemd not running)",
                commands=[f"systemctl disable {shlex.quote(unit)}"],
            )
    remove_files([unit_path, *extra_paths], step=step, name=name)
    if step is not None:
        run_pending(step, ["systemctl daemon-reload"], name=f"{name}: daemon-reload")
