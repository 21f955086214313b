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

import hashlib
import re
import shlex
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files, server

from deploys.facts.host import Snapshot
from deploys.operations.secrets import Secret, put_secret
from deploys.operations.systemd import restart_step
from deploys.util import (
    TextFile,
    cfg,
    mark_owed,
    put_files,
    service_after_change,
    sha1_text,
    snapshot,
    unit_removed,
)
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


def _put_secrets(
    specs: list[TextFile], snap: Snapshot, *, user: str = "root", group: str = "root"
) -> None:
    """Put each secret that differs from the host's through :func:`put_secret`.

    A secret the plan-time snapshot already shows right (content, mode, owner) gets a no-op
    line; one that differs goes through ``put_secret``, never ``files.put``: no ``--diff``
    of its content, no world-readable staging under sudo.
    """
    for spec in specs:
        remote = snap.files.get(spec.dest)
        if remote is not None and remote.matches(sha1_text(spec.text), spec.mode, user, group):
            host.noop(f"{spec.name}: {spec.dest} unchanged")
            continue
        put_secret(
            name=spec.name,
            secret=Secret(spec.text),
            dest=spec.dest,
            mode=spec.mode,
            user=user,
            group=group,
        )


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
    secret_puts = [
        TextFile(
            dest, Path(local).read_text(encoding="utf-8"), f"Secret {dest} (0600, {user})", "600"
        )
        for dest, local in secrets.items()
    ]
    key_files = []
    if key_env is not None:
        dest, content = key_env
        key_files.append(TextFile(dest, content, f"API key {dest} (root 0600)", "600"))
    units = _render_units(config, secrets)
    unit_files = [
        TextFile(path, content, f"Serving unit {path.rsplit('/', 1)[-1]}")
        for path, content in sorted(units.items())
    ]
    services = [f.dest.rsplit("/", 1)[-1] for f in unit_files if f.dest.endswith(".service")]
    engine_of = {unit: engine_binary(units[f"{UNIT_DIR}/{unit}"]) for unit in services}
    brought = engines_brought(config)
    # One round trip for every file and unit this concern decides on.
    snap = snapshot(
        paths=[
            *(f.dest for f in (*secret_puts, *key_files, *unit_files)),
            API_KEY_ENV_FILE,
            *(e for e in engine_of.values() if e),
        ],
        units=services,
    )
    key_wanted = {f.dest: sha1_text(f.text) for f in key_files}
    unit_wanted = {f.dest: sha1_text(f.text) for f in unit_files}
    # An opened unit reads the API key through EnvironmentFile=, and every unit runs its
    # engine: a new key or a new engine executable owes a restart.
    wanted = {
        unit: {
            f"{UNIT_DIR}/{unit}": unit_wanted[f"{UNIT_DIR}/{unit}"],
            **key_wanted,
            **{e: brought[e] for e in [engine_of[unit]] if e in brought},
        }
        for unit in services
    }
    # A unit whose engine is neither on the host nor brought by this deploy is enabled, not
    # started: starting it would fail the whole host (203/EXEC); the engine is the user's.
    startable = [
        u
        for u in services
        if engine_of[u] is None or engine_of[u] in brought or snap.files.get(engine_of[u] or "")
    ]
    if snap.systemd_booted:
        # Before the puts: a kill between a put and its restart leaves the restart owed.
        for unit in startable:
            mark_owed(restart_step(unit), snap, wanted[unit])
    _put_secrets(secret_puts, snap, user=user, group=user)
    _put_secrets(key_files, snap)
    if key_env is None and snap.files.get(API_KEY_ENV_FILE):
        # Serving went back to loopback: a key nobody checks any more is one more secret on
        # disk, and a stale EnvironmentFile would hide that the endpoint is closed.
        files.file(
            name=f"API key {API_KEY_ENV_FILE} removed (serving is on loopback)",
            path=API_KEY_ENV_FILE,
            present=False,
        )
    _put_engines(config, brought, snap)
    put_files(unit_files, snap)
    for unit in services:
        if unit in startable:
            service_after_change(unit, snap=snap, wanted=wanted[unit], name=unit)
            continue
        logger.warning(f"{host.name}: {unit}: {engine_of[unit]} is not installed: not started")
        state = snap.units.get(unit)
        if state is not None and state.enabled:
            host.noop(f"{unit}: enabled; {engine_of[unit]} not installed, so not started")
        else:
            server.shell(
                name=f"{unit}: enable ({engine_of[unit]} not installed: not started)",
                commands=[f"systemctl enable {shlex.quote(unit)}"],
            )
    _remove_stale_units(set(units))


_EXEC_START = re.compile(r"^ExecStart=(/\S+)", re.M)


def engine_binary(unit_text: str) -> str | None:
    """The absolute executable of a unit's ``ExecStart=`` (the engine), or ``None``."""
    match = _EXEC_START.search(unit_text)
    return match.group(1) if match else None


def engines_brought(config: HostConfig) -> dict[str, str]:
    """``{host path: SHA-1}`` of the engine executables the inventory brings.

    ``serving.llama_server``: a llama-server built on the control machine (e.g. from the
    llama.cpp sources), installed as :data:`~tuning.serving.ENGINE_BINS` ``["llama.cpp"]``.
    """
    if not config.serving.llama_server:
        return {}
    digest = hashlib.sha1(Path(config.serving.llama_server).read_bytes()).hexdigest()
    return {ENGINE_BINS["llama.cpp"]: digest}


def _put_engines(config: HostConfig, brought: dict[str, str], snap: Snapshot) -> None:
    """Put the brought engine executables (0755) that differ from the host's copy."""
    local = config.serving.llama_server or ""
    for dest in snap.differing(brought):
        files.put(
            name=f"llama-server ({Path(local).name}) as {dest}",
            src=local,
            dest=dest,
            mode="755",
        )
    for dest in sorted(set(brought) - set(snap.differing(brought))):
        host.noop(f"engine {dest} is up to date")


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
    for path in stale:
        unit = path.rsplit("/", 1)[-1]
        unit_removed(unit, name=f"Remove {unit} (no longer in the plan)")
