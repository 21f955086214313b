"""systemd units as operations that diff :class:`HostSnapshot`: follow file changes, removal.

Only reload systemd when a unit file changed: a needless ``daemon-reload`` detaches GPUs from
running containers. Without a running systemd (a chroot, the CI target) units are enabled by
their files only (``systemctl enable`` works offline) and never reloaded or started.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Sequence

from pyinfra import host
from pyinfra.api import operation

from deploys.facts.host import HostSnapshot, UnitState
from deploys.operations.pending import clear_command, mark_command

#: ``systemctl is-enabled`` words for a unit linked into a target (disabling unlinks it).
LINKED = ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias", "indirect")
#: ``systemctl is-active`` words for a unit that is not running (nothing to stop).
STOPPED = ("inactive", "failed", "unknown", "dead")

#: The step owed when a unit file is removed.
DAEMON_RELOAD = "daemon-reload"


#: ``systemctl restart`` that leaves the units which ``Requires=`` this one running.
#: systemd.unit(5), ``Requires=``: "this unit will be stopped (or restarted) if one of the
#: other units is explicitly stopped (or restarted)" (``Requisite=`` propagates the same way,
#: as ``RequisiteOf=``), so re-applying the GPU caps would restart every engine. systemctl(1),
#: ``--job-mode=``: "ignore-requirements is similar to ignore-dependencies, but only causes
#: the requirement dependencies to be ignored, the ordering dependencies will still be
#: honored" -- the restart job alone, still after what it is ordered after.
RESTART_ALONE = "systemctl restart --job-mode=ignore-requirements"


def restart_step(unit: str) -> str:
    """The pending step "daemon-reload and restart ``unit``" (``restart-<unit>``)."""
    return f"restart-{unit}"


@operation()
def service_after_change(
    unit: str,
    files: dict[str, str] | None = None,
    step: str | None = None,
    restart_alone: bool = False,
) -> Generator[str, None, None]:
    """Keep ``unit`` enabled and running; daemon-reload and restart it only after a change.

    + unit: the unit name, e.g. ``rigforge-gpu-settings.service``
    + files: the unit's files (unit file, drop-ins, the script or key it reads): path →
      SHA-1 they are put with; one that still differs means the unit is owed a restart
    + step: the pending step that records the restart as owed (default ``restart-<unit>``,
      written by ``pending.marked`` before the files changed)
    + restart_alone: restart ``unit`` without restarting the units that ``Requires=`` it
      (:data:`RESTART_ALONE`); their start still requires it, at boot and later

    On a booted host: ``daemon-reload`` + ``restart`` when the step is pending or a file
    differs, else ``enable``/``start`` only where the unit is not enabled/active. Without a
    running systemd: ``systemctl enable`` when not enabled, nothing else. Example::

        systemd.service_after_change(unit="irqbalance.service",
                                     files={"/etc/default/irqbalance-rigforge": "1c2d…"})
    """
    quoted = shlex.quote(unit)
    step = step or restart_step(unit)
    clear = clear_command(step)
    wanted: dict[str, str | None] = dict(files or {})
    snap = host.get_fact(HostSnapshot, paths=sorted(wanted), units=[unit])
    state = snap.units.get(unit, UnitState(None, "unknown"))
    if not snap.systemd_booted:
        if state.enabled:
            host.noop(f"{unit} is {state.file_state} (systemd not running: no reload, no start)")
        else:
            yield f"systemctl enable {quoted}"
        return
    changing = snap.differing(wanted)
    if step in snap.pending or changing:
        yield "systemctl daemon-reload"
        if not state.enabled:
            yield f"systemctl enable {quoted}"
        restart = RESTART_ALONE if restart_alone else "systemctl restart"
        yield f"{restart} {quoted}"
        yield clear
        return
    if state.enabled and state.active == "active":
        host.noop(f"{unit} is {state.file_state} and active; none of its files changed")
        return
    if not state.enabled:
        yield f"systemctl enable {quoted}"
    if state.active != "active":
        yield f"systemctl start {quoted}"


@operation()
def unit_removed(unit: str, paths: Sequence[str]) -> Generator[str, None, None]:
    """Stop and disable ``unit``, delete its files, reload systemd; a no-op once it is gone.

    + unit: the unit name
    + paths: its unit file (``/etc/systemd/system/<unit>``) and any file only it used

    Disabling comes before deleting (``systemctl disable`` reads the ``[Install]`` section
    from the file). On a booted host the ``daemon-reload`` step is marked first and cleared
    last, so a kill in between leaves the reload owed. Example::

        systemd.unit_removed(unit="rigforge-irq-affinity.service",
                             paths=["/etc/systemd/system/rigforge-irq-affinity.service"])
    """
    quoted = shlex.quote(unit)
    snap = host.get_fact(HostSnapshot, paths=sorted(paths), units=[unit])
    state = snap.units.get(unit, UnitState(None, "unknown"))
    present = [p for p in paths if snap.files.get(p) is not None]
    linked = state.file_state in LINKED
    running = snap.systemd_booted and state.active not in STOPPED
    owed = snap.systemd_booted and DAEMON_RELOAD in snap.pending
    if not (linked or present or running or owed):
        host.noop(f"{unit} is not installed")
        return
    if snap.systemd_booted:
        yield mark_command(DAEMON_RELOAD)
        if linked:
            yield f"systemctl disable --now {quoted}"
        elif running:
            yield f"systemctl stop {quoted}"
    elif linked:
        yield f"systemctl disable {quoted}"
    if present:
        yield "rm -f " + " ".join(shlex.quote(p) for p in present)
    if snap.systemd_booted:
        yield "systemctl daemon-reload"
        yield clear_command(DAEMON_RELOAD)
