"""The serving stack: one systemd unit per placed model, and the secrets they read.

Units come from the placement plan through ``tuning.serving.render_serving_units`` (the
placement engineer's templates ``templates/etc/systemd/system/rigforge-serve-*``). Each unit is
put with ``files.put``; systemd is reloaded and a service restarted only when its files changed.
Secrets are copied from the files the inventory names, 0600, owned by the service user.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from deploys.util import cfg, put_text, service_after_change
from inventory.schema import HostConfig

DEFAULTS = {"rigforge_secrets_dir": "/etc/rigforge/secrets"}


def secret_files(config: HostConfig, secrets_dir: str) -> dict[str, str]:
    """``{target path: local file}`` for every secret the inventory references."""
    out = {}
    if config.secrets.hf_token_file:
        out[f"{secrets_dir}/hf-token"] = config.secrets.hf_token_file
    if config.serving.api_key_file:
        out[f"{secrets_dir}/api-key"] = config.serving.api_key_file
    return out


@deploy("Serving: secrets and one unit per placed model", data_defaults=DEFAULTS)
def serving() -> None:
    """Put the secrets (0600, service user) and the plan's serving units."""
    config = cfg()
    user = config.base.service_user
    secrets = secret_files(config, host.data.rigforge_secrets_dir)
    if secrets:
        files.directory(
            name="Secrets folder (root:service user 0750)",
            path=host.data.rigforge_secrets_dir,
            user="root",
            group=user,
            mode="750",
        )
    for dest, local in secrets.items():
        put_text(
            dest,
            Path(local).read_text(encoding="utf-8"),
            name=f"Secret {dest} (0600, {user})",
            mode="600",
            user=user,
            group=user,
        )
    units = _render_units(config)
    if units is None:
        return
    for path, content in sorted(units.items()):
        unit_name = path.rsplit("/", 1)[-1]
        op = put_text(path, content, name=f"Serving unit {unit_name}")
        if path.endswith(".service"):
            service_after_change(unit_name, changed=[op], name=unit_name)


def _render_units(config: HostConfig) -> dict[str, str] | None:
    """The plan's ``{target path: content}``, or ``None`` (with a no-op note) when none."""
    if not config.serving.plan and not config.serving.models:
        host.noop("serving: no plan and no models in the inventory")
        return None
    try:
        from tuning.serving import render_serving_units  # type: ignore[import-not-found]
    except ImportError:
        host.noop("serving: tuning.serving is not in this checkout yet; units not rendered")
        return None
    return dict(render_serving_units(config.serving, host_config=config))
