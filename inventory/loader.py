"""Turn an inventory YAML file into pyinfra hosts — after validating all of it.

An inventory module (``inventory/<name>.py``) is two lines::

    from inventory.loader import hosts_or_exit
    hosts = hosts_or_exit(__file__, "examples/ci.yaml")

``pyinfra inventory/<name>.py deploys/workstation.py`` executes it while building its inventory,
before it connects anywhere: an invalid inventory prints every error (file, line, YAML path,
fix) and exits 1, so no host is contacted.

Each pyinfra host is ``(name, data)``; ``data`` holds the SSH keys pyinfra reads and one key,
``rigforge``, with the validated host config as plain data (``HostConfig.model_dump``; deploys
read it back with :func:`inventory.schema.host_config`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from inventory.schema import DATA_KEY, HostConfig
from inventory.validate import load_inventory
from tuning.errors import ConfigError

#: Host-data key holding the inventory file's folder (absolute), where ``host_data/`` lives.
INVENTORY_DIR_KEY = "rigforge_inventory_dir"


def host_data(cfg: HostConfig) -> dict[str, Any]:
    """pyinfra host data for one validated host: SSH connector keys plus ``rigforge``."""
    ssh = cfg.ssh
    data: dict[str, Any] = {
        "ssh_hostname": ssh.host,
        "ssh_port": ssh.port,
        "ssh_user": ssh.user,
        "ssh_strict_host_key_checking": ssh.strict_host_key_checking,
        DATA_KEY: cfg.model_dump(mode="json"),
    }
    if ssh.key is not None:
        data["ssh_key"] = ssh.key
    if ssh.known_hosts is not None:
        data["ssh_known_hosts_file"] = ssh.known_hosts
    if ssh.sudo:
        data["_sudo"] = True
    return data


def pyinfra_hosts(path: str | Path, *, check_ssh_files: bool = True) -> list[tuple[str, dict]]:
    """``[(name, data)]`` for every host of a valid inventory; raises :class:`ConfigError`."""
    loaded = load_inventory(path, check_ssh_files=check_ssh_files)
    # Where host data is written back (deploys/tune.py fetches a profile into host_data/NAME/).
    inventory_dir = str(Path(path).resolve().parent)
    return [
        (name, {**host_data(cfg), INVENTORY_DIR_KEY: inventory_dir})
        for name, cfg in loaded.hosts.items()
    ]


def hosts_or_exit(module_file: str, yaml_path: str) -> list[tuple[str, dict]]:
    """The hosts of ``yaml_path`` (relative to ``module_file``'s folder), or print and exit 1.

    ``SystemExit`` is not an ``Exception``, so pyinfra's inventory loader lets it through and
    stops before it builds a connection.
    """
    path = Path(module_file).resolve().parent / yaml_path
    try:
        return pyinfra_hosts(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
