"""PCIe ASPM off the way that works: ``pcie_aspm.policy=performance``, runtime and per device.

* Boot: ``/etc/default/grub.d/rigforge-pcie.cfg`` appends ``pcie_aspm.policy=performance`` to
  the kernel command line; ``update-grub`` runs only when that file changed (or was removed,
  for ``aspm: default``) and grub is there. The change first writes the pending marker
  ``/var/lib/rigforge/pending/update-grub``, cleared after ``update-grub`` succeeds, so a deploy
  killed between the two finishes ``update-grub`` on the next run.
  (``pcie_aspm=off`` only stops the kernel from touching ASPM and leaves whatever the firmware
  enabled — the kernel's ``Documentation/admin-guide/kernel-parameters.txt``.)
* Runtime (``kernel.apply_runtime``): ``/sys/module/pcie_aspm/parameters/policy`` and each
  device's ``link/*aspm`` files, under ``kernel.root``, through the ``aspm_policy`` operation.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from deploys.operations.pcie import aspm_policy, link_aspm_off
from deploys.util import cfg, follow_up, put_files, remove_files, snapshot
from tuning.render.files import ASPM_CMDLINE, GRUB_FRAGMENT, grub_fragment

DEFAULTS = {"rigforge_grub_fragment": GRUB_FRAGMENT}

CMDLINE = ASPM_CMDLINE

#: The pending step that regenerates ``/boot/grub/grub.cfg``.
UPDATE_GRUB = "update-grub"


@deploy("PCIe: ASPM policy", data_defaults=DEFAULTS)
def pcie() -> None:
    """Write or remove the grub fragment (update grub when owed); apply the runtime policy."""
    config = cfg()
    aspm = config.pcie.aspm
    if aspm == "unmanaged":
        host.noop("pcie: ASPM unmanaged (inventory)")
        return
    fragment = grub_fragment(host.data.rigforge_grub_fragment)
    snap = snapshot(paths=[fragment.dest], commands=["update-grub"])
    grub = "update-grub" in snap.commands
    step = UPDATE_GRUB if grub else None
    if aspm == "performance":
        wanted = put_files([fragment], snap, step)
        if grub:
            follow_up(
                UPDATE_GRUB,
                ["update-grub"],
                name="update-grub (ASPM fragment changed)",
                snap=snap,
                wanted=wanted,
            )
    else:
        remove_files(
            [fragment.dest],
            step=step,
            name="Remove the rigforge ASPM grub fragment (policy: default), update-grub",
            commands=["update-grub"],
        )
    if not grub:
        host.noop("pcie: grub not installed here; fragment managed, update-grub skipped")
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
