"""PCIe ASPM off the way that works: ``pcie_aspm.policy=performance``, runtime and per device.

* Boot: ``/etc/default/grub.d/rigforge-pcie.cfg`` appends ``pcie_aspm.policy=performance`` to
  the kernel command line; ``update-grub`` runs only when that file changed and grub is there.
  (``pcie_aspm=off`` only stops the kernel from touching ASPM and leaves whatever the firmware
  enabled — the kernel's ``Documentation/admin-guide/kernel-parameters.txt``.)
* Runtime (``kernel.apply_runtime``): ``/sys/module/pcie_aspm/parameters/policy`` and each
  device's ``link/*aspm`` files, under ``kernel.root``, through the ``aspm_policy`` operation.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from deploys.operations.pcie import aspm_policy, link_aspm_off
from deploys.util import FileSpec, cfg, has_command, put_spec

DEFAULTS = {"rigforge_grub_fragment": "/etc/default/grub.d/rigforge-pcie.cfg"}

CMDLINE = {"performance": "pcie_aspm.policy=performance"}


def grub_fragment(dest: str = DEFAULTS["rigforge_grub_fragment"]) -> FileSpec:
    """The grub.d fragment that puts ``pcie_aspm.policy=performance`` on the kernel cmdline."""
    return FileSpec(
        dest=dest,
        template="etc/default/grub.d/rigforge-pcie.cfg.j2",
        context={"cmdline": CMDLINE["performance"]},
        name="Kernel cmdline: pcie_aspm.policy=performance (grub.d)",
    )


@deploy("PCIe: ASPM policy", data_defaults=DEFAULTS)
def pcie() -> None:
    """Write the grub fragment (and update grub when it changed); apply the runtime policy."""
    config = cfg()
    aspm = config.pcie.aspm
    if aspm == "unmanaged":
        host.noop("pcie: ASPM unmanaged (inventory)")
        return
    if aspm == "performance":
        fragment = put_spec(grub_fragment(host.data.rigforge_grub_fragment))
        if has_command("update-grub"):
            server.shell(
                name="update-grub (ASPM fragment changed)",
                commands=["update-grub"],
                _if=fragment.did_change,
            )
        else:
            host.noop("pcie: grub not installed here; fragment written, update-grub skipped")
    else:
        files.file(
            name="Remove the rigforge ASPM grub fragment (policy: default)",
            path=host.data.rigforge_grub_fragment,
            present=False,
        )
    if not config.kernel.apply_runtime:
        host.noop("pcie: kernel.apply_runtime is false; running kernel left alone")
        return
    _apply_runtime(aspm, config.kernel.root)


def _apply_runtime(policy: str, root: str) -> None:
    """Runtime ASPM: the kernel's policy, then (for ``performance``) each GPU link's states.

    The policy alone leaves states firmware enabled on each link, so ``performance`` also sets
    every NVIDIA GPU's ``link/*aspm`` file to 0. ``default`` hands the links back to the
    kernel's policy and leaves the per-device files alone.
    """
    aspm_policy(name=f"Runtime ASPM policy {policy} (under {root})", policy=policy, root=root)
    if policy == "performance":
        link_aspm_off(name=f"ASPM off on each NVIDIA GPU link (under {root})", root=root)
