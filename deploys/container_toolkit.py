"""NVIDIA Container Toolkit: repository, package, runtime configuration and the CDI spec.

Repository: https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) with the key
https://nvidia.github.io/libnvidia-container/gpgkey (NVIDIA Container Toolkit install guide).

Each step is guarded by a fact about its result, not by a file merely existing:

* key — fetched when the keyring does not hold :data:`CTK_KEY_FINGERPRINT` (missing, empty,
  damaged, rotated): downloaded to a temporary file under ``bash -o pipefail``, its fingerprint
  checked before it is dearmored, and moved into place atomically;
* runtime — ``nvidia-ctk runtime configure`` when ``daemon.json`` lacks the ``nvidia``
  runtime (another tool may have written the file), then Docker restarted (a pending marker
  makes a killed run finish the restart);
* CDI — ``nvidia-ctk cdi generate`` when the spec is missing or was generated for another
  driver version than the loaded one (recorded in :data:`CDI_DRIVER_RECORD`), so a driver
  upgrade regenerates it.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from deploys.facts.container import CdiState, KeyringFingerprints, NvidiaRuntimeConfigured
from deploys.operations import container
from deploys.operations.container import (
    CDI_DRIVER_RECORD,
    CTK_KEY_FINGERPRINT,
    cdi_command,
    cdi_reason,
    key_command,
)
from deploys.operations.systemd import restart_step
from deploys.util import cfg, ensure_packages, put_spec, snapshot
from tuning.render import files as specs

__all__ = ["CTK_KEY_FINGERPRINT", "cdi_command", "cdi_reason", "container_toolkit", "key_command"]

DEFAULTS = {
    "rigforge_ctk_repo": "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)",
    "rigforge_ctk_key_url": "https://nvidia.github.io/libnvidia-container/gpgkey",
    "rigforge_ctk_keyring": "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
    "rigforge_ctk_runtime": "docker",
    "rigforge_ctk_cdi_spec": "/etc/cdi/nvidia.yaml",
}

#: Where each runtime keeps the config ``nvidia-ctk runtime configure`` edits.
RUNTIME_CONFIG = {"docker": "/etc/docker/daemon.json"}


@deploy("NVIDIA Container Toolkit", data_defaults=DEFAULTS)
def container_toolkit() -> None:
    """Repo + ``nvidia-container-toolkit``, runtime configured, CDI spec generated."""
    config = cfg()
    if not config.container_toolkit.enabled:
        host.noop("container toolkit: disabled in the inventory")
        return
    keyring = host.data.rigforge_ctk_keyring
    ensure_packages(["gnupg", "curl"], name="gnupg + curl (repository key)")
    if CTK_KEY_FINGERPRINT in host.get_fact(KeyringFingerprints, path=keyring):
        host.noop(f"container toolkit: {keyring} holds key {CTK_KEY_FINGERPRINT}")
    else:
        container.repository_key(
            name="NVIDIA Container Toolkit key (fingerprint checked, dearmored)",
            url=host.data.rigforge_ctk_key_url,
            keyring=keyring,
        )
    put_spec(specs.container_toolkit_sources(host.data.rigforge_ctk_repo, keyring))
    ensure_packages(["nvidia-container-toolkit"], name="nvidia-container-toolkit")
    _runtime(host.data.rigforge_ctk_runtime)
    spec = host.data.rigforge_ctk_cdi_spec
    reason = cdi_reason(host.get_fact(CdiState, spec=spec, record=CDI_DRIVER_RECORD))
    if reason is None:
        host.noop(f"container toolkit: CDI spec {spec} fits the loaded driver")
        return
    container.cdi_spec(
        name=f"Generate the CDI spec (nvidia-ctk cdi generate; {reason})",
        spec=spec,
        record=CDI_DRIVER_RECORD,
    )


def _runtime(runtime: str) -> None:
    """Configure ``runtime`` for the nvidia runtime unless its config already declares it."""
    config_path = RUNTIME_CONFIG.get(runtime)
    unit = f"{runtime}.service"
    snap = snapshot(commands=[runtime])
    if not config_path or runtime not in snap.commands:
        host.noop(f"container toolkit: {runtime} not installed; runtime not configured")
        return
    configured = host.get_fact(NvidiaRuntimeConfigured, path=config_path)
    if configured and restart_step(unit) not in snap.pending:
        host.noop(f"container toolkit: {config_path} declares the nvidia runtime")
        return
    container.runtime_configured(
        name=f"nvidia-ctk runtime configure --runtime={runtime}, restart {runtime}",
        runtime=runtime,
        config_path=config_path,
    )
