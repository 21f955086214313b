"""The base of every rigforge host: tool packages, the service user, ``/etc/rigforge/``."""

from __future__ import annotations

import shlex
from collections.abc import Generator, Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import files, server

from deploys.util import cfg, ensure_packages

#: Tools the facts, the tuner and a person debugging the box need. ``systemd`` is on every
#: real box already (a no-op there); a minimal target may lack it.
DEFAULTS = {
    "rigforge_base_packages": [
        "numactl",
        "pciutils",
        "lm-sensors",
        "hwloc-nox",
        "ca-certificates",
        "systemd",
    ],
    "rigforge_config_dir": "/etc/rigforge",
}


def distro_problem(distro_id: str, codename: str, fact: Mapping[str, Any]) -> str | None:
    """Why the host's ``/etc/os-release`` is not the distribution the inventory expects.

    ``fact`` is pyinfra's :class:`LinuxDistribution` value (``release_meta`` holds the
    os-release keys). ``None`` when ``ID`` and ``VERSION_CODENAME`` match.
    """
    meta = fact.get("release_meta") or {}
    found_id = str(meta.get("ID", "")).strip('"').lower() or None
    found_codename = str(meta.get("VERSION_CODENAME", "")).strip('"').lower() or None
    if (found_id, found_codename) == (distro_id, codename):
        return None
    found = f"{found_id or 'unknown'} {found_codename or 'unknown'}"
    return (
        f"the inventory expects {distro_id} {codename} (distro.id, distro.codename) but the "
        f"host runs {found}: its driver source and packages would be wrong; fix the inventory "
        "or point it at the right host"
    )


@operation()
def distro_matches(distro_id: str, codename: str) -> Generator[str, None, None]:
    """Fail the host (before anything is installed) when it runs another distribution.

    + distro_id: the expected os-release ``ID`` (``debian``, ``ubuntu``)
    + codename: the expected ``VERSION_CODENAME`` (``bookworm``, ``noble``)

    Example: ``distro_matches(distro_id="debian", codename="bookworm")``.
    """
    # pyinfra types get_fact's fact as FactBase[Mapping]; LinuxDistribution's value is a TypedDict
    fact = host.get_fact(LinuxDistribution)  # type: ignore[arg-type]
    problem = distro_problem(distro_id, codename, fact)
    if problem is None:
        host.noop(f"host runs {distro_id} {codename}, as the inventory expects")
        return
    yield f"echo {shlex.quote(f'rigforge: {host.name}: {problem}')} >&2; exit 1"


@deploy("rigforge base: packages, service user, /etc/rigforge", data_defaults=DEFAULTS)
def base() -> None:
    """Install the base packages, create the service user and ``/etc/rigforge/`` (0750).

    The service user is a system account with no login shell and no home it could write to
    (``/nonexistent``); ``/etc/rigforge`` is ``root:<service user>`` 0750 so the serving units
    can read their secrets but nobody else can.
    """
    config = cfg()
    distro_matches(
        name=f"Host runs {config.distro.id} {config.distro.codename} (inventory: distro)",
        distro_id=config.distro.id,
        codename=config.distro.codename,
    )
    ensure_packages(
        list(host.data.rigforge_base_packages) + list(config.base.extra_packages),
        name="Install base packages",
    )
    user = config.base.service_user
    server.group(name=f"Service group {user}", group=user, system=True)
    server.user(
        name=f"Service user {user} (system, no login shell, no home)",
        user=user,
        group=user,
        system=True,
        shell="/usr/sbin/nologin",
        home="/nonexistent",
        create_home=False,
        ensure_home=False,
    )
    files.directory(
        name=f"{host.data.rigforge_config_dir} (root:{user} 0750)",
        path=host.data.rigforge_config_dir,
        user="root",
        group=user,
        mode="750",
    )
