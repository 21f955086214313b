"""Where ``rigforge sweep --host`` / ``plan --host`` / ``links --host`` write a host's files.

``INVENTORY_DIR/host_data/HOST/{profile,plan}.yaml``: an inventory host entry that sets no
``power.profile`` (or ``serving.plan``) uses these files, so the next deploy picks them up.
``links.yaml`` beside them is what ``rigforge links`` measured (the verify suite compares a new
measurement with it).
"""

from __future__ import annotations

import re
from pathlib import Path

from tuning.core.yamlsafe import YamlRefused, load_yaml_file
from tuning.errors import ConfigError, did_you_mean

#: What an inventory host name may be (it names a folder under host_data/).
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def inventory_hosts(inventory_dir: Path) -> dict[str, Path]:
    """``{host name: inventory file}`` for every ``*.yaml`` inventory directly in the folder.

    Files that are not inventories (no top-level ``hosts`` map) are skipped; so are files that
    do not parse (the validator reports those when they are used).
    """
    hosts: dict[str, Path] = {}
    for path in sorted(inventory_dir.glob("*.yaml")):
        try:
            data = load_yaml_file(path, "inventory").data
        except YamlRefused:
            continue
        if isinstance(data, dict) and isinstance(data.get("hosts"), dict):
            hosts.update(dict.fromkeys(map(str, data["hosts"]), path))
    return hosts


def host_data_path(inventory_dir: Path, host_name: str, filename: str) -> Path:
    """``INVENTORY_DIR/host_data/HOST/FILENAME`` for a host the inventory declares.

    Raises :class:`ConfigError` for a name that is not a valid host name (path separators…)
    or that no inventory file in ``inventory_dir`` declares.
    """
    if not HOST_NAME_RE.match(host_name):
        raise ConfigError(
            f"--host {host_name!r} is not a valid inventory host name "
            "(letters, digits, '_', '.', '-'; it names a folder under host_data/)"
        )
    hosts = inventory_hosts(inventory_dir)
    if host_name not in hosts:
        known = ", ".join(sorted(hosts)) or "none"
        raise ConfigError(
            f"--host {host_name!r}: no inventory in {inventory_dir}/ declares it "
            f"(hosts there: {known}){did_you_mean(host_name, hosts)}; "
            "add it to an inventory file or pass --inventory-dir"
        )
    return inventory_dir / "host_data" / host_name / filename
