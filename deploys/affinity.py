"""GPU IRQs pinned to their local CPUs at every boot; irqbalance kept off them.

A oneshot unit (``rigforge-irq-affinity.service``) finds each NVIDIA GPU's IRQs at boot (IRQ
numbers change across reboots) and writes the GPU's ``local_cpulist`` to
``/proc/irq/<n>/smp_affinity_list``. irqbalance gets a ``--policyscript`` that answers
``ban=true`` for NVIDIA GPUs, through ``/etc/default/irqbalance-rigforge`` and a drop-in, so
the packaged ``/etc/default/irqbalance`` (a conffile) stays untouched.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from deploys.operations.irq import irq_affinity
from deploys.util import cfg, has_command, put_template, service_after_change

DEFAULTS = {
    "rigforge_irq_script": "/usr/local/libexec/rigforge-irq-affinity",
    "rigforge_irqbalance_policy": "/usr/local/libexec/rigforge-irqbalance-policy",
}


@deploy("Affinity: GPU IRQs on local CPUs, irqbalance off them", data_defaults=DEFAULTS)
def affinity() -> None:
    """Install the IRQ-pinning unit and the irqbalance ban; pin now when allowed."""
    config = cfg()
    if config.affinity.pin_irqs:
        script = put_template(
            "usr/local/libexec/rigforge-irq-affinity.sh.j2",
            host.data.rigforge_irq_script,
            name="IRQ pinning script",
            mode="755",
        )
        unit = put_template(
            "etc/systemd/system/rigforge-irq-affinity.service.j2",
            "/etc/systemd/system/rigforge-irq-affinity.service",
            name="rigforge-irq-affinity.service",
            script=host.data.rigforge_irq_script,
            kernel_root=config.kernel.root,
        )
        service_after_change(
            "rigforge-irq-affinity.service", changed=[script, unit], name="IRQ pinning unit"
        )
        if config.kernel.apply_runtime:
            _pin_now(config.kernel.root)
    else:
        host.noop("affinity: pin_irqs is false")
    if config.affinity.irqbalance_ban:
        policy = put_template(
            "usr/local/libexec/rigforge-irqbalance-policy.sh.j2",
            host.data.rigforge_irqbalance_policy,
            name="irqbalance policy script (ban NVIDIA GPU IRQs)",
            mode="755",
        )
        env = put_template(
            "etc/default/irqbalance-rigforge.j2",
            "/etc/default/irqbalance-rigforge",
            name="irqbalance arguments (--policyscript)",
            policy_script=host.data.rigforge_irqbalance_policy,
        )
        dropin = put_template(
            "etc/systemd/system/irqbalance.service.d/rigforge.conf.j2",
            "/etc/systemd/system/irqbalance.service.d/rigforge.conf",
            name="irqbalance.service drop-in",
        )
        if has_command("irqbalance"):
            service_after_change(
                "irqbalance.service", changed=[policy, env, dropin], name="irqbalance"
            )
        else:
            host.noop("affinity: irqbalance not installed; its config is ready for it")
    else:
        host.noop("affinity: irqbalance_ban is false")


def _pin_now(root: str) -> None:
    """Pin the IRQs in the running kernel now (each GPU to its sysfs ``local_cpulist``).

    The boot unit does the same at every boot; this spares a reboot after the first deploy.
    """
    irq_affinity(name=f"Pin GPU IRQs to their local CPUs now (under {root})", root=root)
