"""The serving stack: one systemd unit per placed model, and the secrets they read.

Units come from the placement plan through ``tuning.serving.render_serving_units`` (the
placement engineer's templates ``templates/etc/systemd/system/rigforge-serve-*``). Each unit is
put with ``files.put``; systemd is reloaded and a service restarted only when its files changed
(its unit file, or the API key file it reads when serving is open). Units of models no longer
in the plan are stopped, disabled and removed. The Hugging Face token is copied from the file
the inventory names, 0600, owned by the service user. ``serving.api_key_file`` holds the RAW
key (one line); the deploy writes ``/etc/rigforge/secrets/api-key.env`` (root:root 0600) with
``VLLM_API_KEY=<key>`` and ``LLAMA_API_KEY=<key>``, the units' ``EnvironmentFile=``.
"""

from __future__ import annotations

import re
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File, FindFiles
from pyinfra.operations import files, server, systemd

from deploys.util import cfg, put_text, service_after_change, systemd_booted, unit_enabled
from inventory.schema import HostConfig
from tuning.serving import (
    API_KEY_ENV_FILE,
    ENGINE_BINS,
    UNIT_DIR,
    api_key_env_text,
    read_api_key,
    render_serving_units,
)

#: The serving units rigforge owns on a host (``rigforge-serve-<model>[-<replica>].service``).
UNIT_GLOB = "rigforge-serve-*.service"

DEFAULTS = {"rigforge_secrets_dir": "/etc/rigforge/secrets"}


def secret_files(config: HostConfig, secrets_dir: str) -> dict[str, str]:
    """``{target path: local file}`` for every secret copied verbatim (0600, service user).

    The API key is not among them: its file holds the raw key, from which the deploy writes
    :data:`~tuning.serving.API_KEY_ENV_FILE` itself (see :func:`api_key_env_file`).
    """
    out = {}
    if config.secrets.hf_token_file:
        out[f"{secrets_dir}/hf-token"] = config.secrets.hf_token_file
    return out


def api_key_env_file(config: HostConfig) -> tuple[str, str] | None:
    """``(target path, content)`` of the opened units' ``EnvironmentFile=``, or ``None``.

    Written root:root 0600: systemd reads it as root before starting the engine as the
    service user, so the service user never needs to read the file. Raises ``ConfigError``
    when the key file is empty, has several lines or unusable characters.
    """
    if not config.serving.api_key_file:
        return None
    key = read_api_key(config.serving.api_key_file)
    return API_KEY_ENV_FILE, api_key_env_text(key)


@deploy("Serving: secrets and one unit per placed model", data_defaults=DEFAULTS)
def serving() -> None:
    """Put the secrets (0600, service user) and the plan's serving units."""
    config = cfg()
    user = config.base.service_user
    secrets = secret_files(config, host.data.rigforge_secrets_dir)
    key_env = api_key_env_file(config)
    if secrets or key_env:
        files.directory(
            name="Secrets folder (root:service user 0750)",
            path=host.data.rigforge_secrets_dir,
            user="root",
            group=user,
            mode="750",
        )
    secret_ops: dict[str, OperationMeta] = {}
    for dest, local in secrets.items():
        secret_ops[dest] = put_text(
            dest,
            Path(local).read_text(encoding="utf-8"),
            name=f"Secret {dest} (0600, {user})",
            mode="600",
            user=user,
            group=user,
        )
    key_ops = []
    if key_env is not None:
        dest, content = key_env
        key_ops.append(put_text(dest, content, name=f"API key {dest} (root 0600)", mode="600"))
    installed = _install_engines(config)
    units = _render_units(config, secrets)
    # An opened unit reads the API key through EnvironmentFile=: a new key needs a restart,
    # and so does a new engine executable.
    for path, content in sorted(units.items()):
        unit_name = path.rsplit("/", 1)[-1]
        op = put_text(path, content, name=f"Serving unit {unit_name}")
        if not path.endswith(".service"):
            continue
        engine = engine_binary(content)
        engine_op = installed.get(engine or "")
        if engine is None or engine_op is not None or host.get_fact(File, path=engine):
            changed = [op, *key_ops, *([engine_op] if engine_op is not None else [])]
            service_after_change(unit_name, changed=changed, name=unit_name)
        else:
            # Starting it would fail the whole host (status 203/EXEC); the engine is the
            # user's to install. Enabled, so it starts once the engine is there (or at boot).
            logger.warning(f"{host.name}: {unit_name}: {engine} is not installed: not started")
            unit_enabled(name=f"{unit_name}: enable ({engine} not installed)", unit=unit_name)
    _remove_stale_units(set(units))


_EXEC_START = re.compile(r"^ExecStart=(/\S+)", re.M)


def engine_binary(unit_text: str) -> str | None:
    """The absolute executable of a unit's ``ExecStart=`` (the engine), or ``None``."""
    match = _EXEC_START.search(unit_text)
    return match.group(1) if match else None


def _install_engines(config: HostConfig) -> dict[str, OperationMeta]:
    """Put the engine executables the inventory brings (``serving.llama_server``), 0755.

    Returns ``{host path: the put operation}``: units running that path restart when it
    changes. ``files.put`` compares checksums, so an unchanged executable is a no-op.
    """
    out: dict[str, OperationMeta] = {}
    if config.serving.llama_server:
        dest = ENGINE_BINS["llama.cpp"]
        out[dest] = files.put(
            name=f"llama-server ({Path(config.serving.llama_server).name}) as {dest}",
            src=config.serving.llama_server,
            dest=dest,
            mode="755",
        )
    return out


def _render_units(config: HostConfig, secrets: dict[str, str]) -> dict[str, str]:
    """The plan's ``{target path: content}``; empty (with a no-op note) when nothing is served.

    The units load the Hugging Face token (``LoadCredential=``) from where this deploy put it.
    """
    if not config.serving.plan and not config.serving.models:
        host.noop("serving: no plan and no models in the inventory")
        return {}
    hf_token = next((dest for dest in secrets if dest.endswith("/hf-token")), None)
    return dict(render_serving_units(config.serving, host_config=config, hf_token_file=hf_token))


def _remove_stale_units(wanted: set[str]) -> None:
    """Stop, disable and delete serving units on the host that the plan no longer places.

    A model dropped from the plan would otherwise keep its unit, enabled, holding its GPUs at
    the next boot. Only files matching ``rigforge-serve-*.service`` are considered.
    """
    present = host.get_fact(FindFiles, path=UNIT_DIR, fname=UNIT_GLOB, args=["-maxdepth", "1"])
    stale = sorted(set(present or ()) - wanted)
    if not stale:
        host.noop("serving: no stale rigforge-serve units")
        return
    booted = systemd_booted()
    for path in stale:
        unit = path.rsplit("/", 1)[-1]
        if booted:
            systemd.service(
                name=f"Stop and disable {unit} (no longer in the plan)",
                service=unit,
                running=False,
                enabled=False,
            )
        else:
            # The file exists (the fact found it), so this runs once, never on a second deploy.
            server.shell(
                name=f"Disable {unit} (no longer in the plan; systemd not running)",
                commands=[f"systemctl disable {unit}"],
            )
        files.file(name=f"Remove {unit} (no longer in the plan)", path=path, present=False)
    if booted:
        systemd.daemon_reload(name="daemon-reload (stale serving units removed)")
