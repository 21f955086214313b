"""ASPM operations: the kernel's runtime policy and the per-device ``link/*aspm`` switches.

Writes go to ``{root}/sys/...`` (``root`` from the inventory's ``kernel.root``), so a test
target is a scratch tree. The boot-time half (``pcie_aspm.policy=performance`` on the kernel
command line) is the ``pcie`` deploy's job.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from deploys.facts.pcie import AspmPolicy, PciLinks
from deploys.facts.shell import root_prefix


@operation()
def aspm_policy(policy: str = "performance", root: str = "/"):
    """
    Set the kernel's runtime ASPM policy (``/sys/module/pcie_aspm/parameters/policy``).

    + policy: one of the policies the kernel lists (``default``, ``performance``,
      ``powersave``, ``powersupersave``); refused at plan time otherwise
    + root: the tree ``/sys`` lives under (``/`` on a real box)

    A kernel without the policy file (no ``CONFIG_PCIEASPM``) has no ASPM to manage: no-op.

    **Example:**

    .. code:: python

        pcie.aspm_policy(name="ASPM off (performance)", policy="performance")
    """
    fact = host.get_fact(AspmPolicy, root=root)
    if fact is None:
        host.noop("no pcie_aspm policy file: this kernel does not manage ASPM")
        return
    if policy not in fact.available:
        raise OperationValueError(
            f"ASPM policy {policy!r} is not one of this kernel's: {', '.join(fact.available)}"
        )
    if fact.active == policy:
        host.noop(f"ASPM policy is {policy}")
        return
    path = "/sys/module/pcie_aspm/parameters/policy"
    yield f"echo {shlex.quote(policy)} > {root_prefix(root)}{path}"


@operation()
def link_aspm_off(root: str = "/"):
    """
    Disable every ASPM state on every NVIDIA GPU's link (its ``link/*aspm`` files set to 0).

    + root: the tree ``/sys`` lives under

    The kernel policy alone leaves states that firmware enabled; these per-device files
    (Linux ≥ 5.5) turn them off. No-op when no GPU has such a file enabled.

    **Example:**

    .. code:: python

        pcie.link_aspm_off(name="ASPM off on each GPU link")
    """
    links = host.get_fact(PciLinks, root=root)
    prefix = root_prefix(root)
    changed = False
    for bus_id, link in sorted(links.items()):
        for name, value in sorted(link.aspm.items()):
            if value:
                changed = True
                # Names come from the host's sysfs listing: quoted, never trusted as words.
                path = shlex.quote(f"/sys/bus/pci/devices/{bus_id}/link/{name}")
                yield f"echo 0 > {prefix}{path}"
    if not changed:
        host.noop(f"ASPM is off on all {len(links)} NVIDIA GPU link(s)")
