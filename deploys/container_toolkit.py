"""NVIDIA Container Toolkit: repository, package, runtime configuration and the CDI spec.

Repository: https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) with the key
https://nvidia.github.io/libnvidia-container/gpgkey (NVIDIA Container Toolkit install guide).
``nvidia-ctk runtime configure`` and ``nvidia-ctk cdi generate`` run only when their output is
missing (guarded by facts), so a second deploy changes nothing.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from deploys.util import cfg, ensure_packages, has_command, put_template

DEFAULTS = {
    "rigforge_ctk_repo": "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)",
    "rigforge_ctk_key_url": "https://nvidia.github.io/libnvidia-container/gpgkey",
    "rigforge_ctk_keyring": "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
    "rigforge_ctk_runtime": "docker",
    "rigforge_ctk_cdi_spec": "/etc/cdi/nvidia.yaml",
}


@deploy("NVIDIA Container Toolkit", data_defaults=DEFAULTS)
def container_toolkit() -> None:
    """Repo + ``nvidia-container-toolkit``, runtime configured, CDI spec generated."""
    config = cfg()
    if not config.container_toolkit.enabled:
        host.noop("container toolkit: disabled in the inventory")
        return
    keyring = host.data.rigforge_ctk_keyring
    if not host.get_fact(File, path=keyring):
        ensure_packages(["gnupg", "curl"], name="gnupg + curl (repository key)")
        server.shell(
            name="NVIDIA Container Toolkit key (dearmored)",
            commands=[f"curl -fsSL {host.data.rigforge_ctk_key_url} | gpg --dearmor -o {keyring}"],
        )
    put_template(
        "etc/apt/sources.list.d/nvidia-container-toolkit.sources.j2",
        "/etc/apt/sources.list.d/nvidia-container-toolkit.sources",
        name="NVIDIA Container Toolkit repository (deb822, signed-by)",
        uri=host.data.rigforge_ctk_repo,
        keyring=keyring,
    )
    ensure_packages(["nvidia-container-toolkit"], name="nvidia-container-toolkit")
    runtime = host.data.rigforge_ctk_runtime
    runtime_config = {"docker": "/etc/docker/daemon.json"}.get(runtime)
    if runtime_config and has_command(runtime):
        configured = host.get_fact(File, path=runtime_config)
        if not configured:
            server.shell(
                name=f"nvidia-ctk runtime configure --runtime={runtime}",
                commands=[f"nvidia-ctk runtime configure --runtime={runtime}"],
            )
    spec = host.data.rigforge_ctk_cdi_spec
    if not host.get_fact(File, path=spec):
        files.directory(name="CDI spec folder", path=spec.rsplit("/", 1)[0])
        server.shell(
            name="Generate the CDI spec (nvidia-ctk cdi generate)",
            commands=[f"nvidia-ctk cdi generate --output={spec}"],
        )
