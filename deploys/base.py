"""The base of every rigforge host: tool packages, the service user, ``/etc/rigforge/``."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
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


@deploy("rigforge base: packages, service user, /etc/rigforge", data_defaults=DEFAULTS)
def base() -> None:
    """Install the base packages, create the service user and ``/etc/rigforge/`` (0750).

    The service user is a system account with no login shell and no home it could write to
    (``/nonexistent``); ``/etc/rigforge`` is ``root:<service user>`` 0750 so the serving units
    can read their secrets but nobody else can.
    """
    config = cfg()
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
