"""GPU IRQs pinned to their local CPUs at every boot; irqbalance kept off them.

A oneshot unit (``rigforge-irq-affinity.service``) finds each NVIDIA GPU's IRQs at boot (IRQ
numbers change across reboots) and writes the CPUs of the unit serving the GPU (the plan's
``irq_cpus``), or for a GPU the plan does not list its ``local_cpulist``, to
``/proc/irq/<n>/smp_affinity_list``. irqbalance gets a ``--policyscript`` that answers
``ban=true`` for NVIDIA GPUs, through ``/etc/default/irqbalance-rigforge`` and a drop-in, so
the packaged ``/etc/default/irqbalance`` (a conffile) stays untouched.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from deploys.operations.irq import irq_affinity
from deploys.operations.systemd import restart_step
from deploys.util import (
    cfg,
    put_files,
    remove_files,
    service_after_change,
    snapshot,
    unit_removed,
)
from inventory.schema import HostConfig
from tuning.render.files import (
    HOUSEKEEPING_DROPIN,
    IRQ_SCRIPT,
    IRQBALANCE_POLICY_SCRIPT,
    housekeeping_dropin,
    irq_pinning_files,
    irqbalance_files,
    planned_irq_cpus,
)

IRQ_UNIT = "rigforge-irq-affinity.service"
IRQBALANCE = "irqbalance.service"

DEFAULTS = {
    "rigforge_irq_script": IRQ_SCRIPT,
    "rigforge_irqbalance_policy": IRQBALANCE_POLICY_SCRIPT,
}


@deploy("Affinity: GPU IRQs on local CPUs, irqbalance off them", data_defaults=DEFAULTS)
def affinity() -> None:
    """Install the IRQ-pinning unit and the irqbalance ban, or remove them when turned off."""
    config = cfg()
    pinning = irq_pinning_files(config, script=host.data.rigforge_irq_script)
    specs = irqbalance_files(policy_script=host.data.rigforge_irqbalance_policy)
    # One round trip for every file, unit and tool this concern decides on.
    snap = snapshot(
        paths=[spec.dest for spec in (*pinning, *specs)],
        units=[IRQ_UNIT, IRQBALANCE],
        commands=["irqbalance"],
    )
    if config.affinity.pin_irqs:
        step = restart_step(IRQ_UNIT) if snap.systemd_booted else None
        wanted = put_files(pinning, snap, step)
        service_after_change(IRQ_UNIT, snap=snap, wanted=wanted, name="IRQ pinning unit")
        if config.kernel.apply_runtime:
            _pin_now(config.kernel.root, planned_irq_cpus(config))
    else:
        # Pins already written stay until reboot; the unit no longer re-applies them at boot.
        unit_removed(
            IRQ_UNIT,
            extra_paths=(host.data.rigforge_irq_script,),
            name="IRQ pinning unit (pin_irqs: false)",
        )
    _housekeeping(config)
    irqbalance = "irqbalance" in snap.commands
    restart = irqbalance and snap.systemd_booted
    step = restart_step(IRQBALANCE) if restart else None
    if config.affinity.irqbalance_ban:
        wanted = put_files(specs, snap, step)
        if irqbalance:
            service_after_change(IRQBALANCE, snap=snap, wanted=wanted, name="irqbalance")
        else:
            host.noop("affinity: irqbalance not installed; its config is ready for it")
    else:
        # irqbalance forgets the policy script only when restarted without the drop-in.
        remove_files(
            [spec.dest for spec in specs],
            step=step,
            name="irqbalance ban (irqbalance_ban: false)",
            commands=["systemctl daemon-reload", f"systemctl try-restart {IRQBALANCE}"],
        )
        if not snap.systemd_booted:
            host.noop("affinity: systemd not running; irqbalance reads its files when started")


def _housekeeping(config: HostConfig) -> None:
    """The opt-in ``system.conf.d`` drop-in that keeps system services on the plan's
    housekeeping CPUs (``affinity.housekeeping_services``); removed when turned off. Read at
    boot: the deploy does not ``daemon-reexec`` PID 1 for a setting that only services started
    afterwards would see."""
    spec = housekeeping_dropin(config) if config.affinity.housekeeping_services else None
    if spec is not None:
        put_files([spec], snapshot(paths=[spec.dest]))
        return
    if config.affinity.housekeeping_services:
        host.noop("affinity: the plan has no housekeeping CPUs; system services left alone")
    remove_files(
        [HOUSEKEEPING_DROPIN],
        step=None,
        name="housekeeping CPUs drop-in (affinity.housekeeping_services off or no plan)",
    )


def _pin_now(root: str, planned: dict[str, str]) -> None:
    """Pin the IRQs in the running kernel now: each GPU to its unit's CPUs from the plan
    (``planned``), a GPU the plan does not list to its sysfs ``local_cpulist``.

    The boot unit does the same at every boot; this spares a reboot after the first deploy.
    """
    irq_affinity(
        name=f"Pin GPU IRQs to their units' or local CPUs now (under {root})",
        root=root,
        planned=planned,
    )
