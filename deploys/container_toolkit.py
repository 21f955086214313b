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

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from deploys.facts.container import CdiState, KeyringFingerprints, NvidiaRuntimeConfigured
from deploys.util import (
    cfg,
    ensure_packages,
    has_command,
    mark_pending,
    put_spec,
    restart_step,
    run_pending,
)
from tuning.render import files as specs

DEFAULTS = {
    "rigforge_ctk_repo": "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)",
    "rigforge_ctk_key_url": "https://nvidia.github.io/libnvidia-container/gpgkey",
    "rigforge_ctk_keyring": "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
    "rigforge_ctk_runtime": "docker",
    "rigforge_ctk_cdi_spec": "/etc/cdi/nvidia.yaml",
}

#: "NVIDIA CORPORATION (Open Source Projects) <cudatools@nvidia.com>", rsa4096, 2017-09-28:
#: the primary key of https://nvidia.github.io/libnvidia-container/gpgkey. NVIDIA's issue
#: threads show its key id DDCAE044F796ECB0 (github.com/NVIDIA/nvidia-container-runtime/
#: issues/88, github.com/NVIDIA/libnvidia-container/issues/171); the full fingerprint is the
#: one deployments pin for that URL (e.g. puppet ``apt::key`` ids for nvidia-docker).
CTK_KEY_FINGERPRINT = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"

#: The driver version the CDI spec was last generated for.
CDI_DRIVER_RECORD = "/var/lib/rigforge/cdi-driver-version"

#: Where each runtime keeps the config ``nvidia-ctk runtime configure`` edits.
RUNTIME_CONFIG = {"docker": "/etc/docker/daemon.json"}


def key_command(url: str, keyring: str, fingerprint: str = CTK_KEY_FINGERPRINT) -> str:
    """Fetch the key at ``url``, refuse it unless its primary fingerprint is ``fingerprint``,
    dearmor it and move it to ``keyring`` atomically (a kill leaves the old file or none)."""
    script = "\n".join(
        [
            "set -euo pipefail",
            "tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT",
            f'curl -fsSL --retry 3 -o "$tmp/key.asc" {shlex.quote(url)}',
            'fpr=$(gpg --batch --show-keys --with-colons "$tmp/key.asc" '
            "| awk -F: '$1 == \"fpr\" { print toupper($10); exit }')",
            f'if [ "$fpr" != {fingerprint} ]; then',
            f'  echo "rigforge: {url} has key ${{fpr:-none}}, expected {fingerprint}" >&2',
            "  exit 1",
            "fi",
            'gpg --batch --yes --dearmor -o "$tmp/keyring.gpg" "$tmp/key.asc"',
            f'install -m 644 "$tmp/keyring.gpg" {shlex.quote(keyring + ".rigforge-new")}',
            f"mv -f {shlex.quote(keyring + '.rigforge-new')} {shlex.quote(keyring)}",
        ]
    )
    return f"bash -c {shlex.quote(script)}"


def cdi_command(spec: str, record: str = CDI_DRIVER_RECORD) -> str:
    """Generate the CDI spec, then record the driver version it was generated for.

    The record is written last: a kill before it leaves a stale record, so the next run
    generates again.
    """
    script = "\n".join(
        [
            "set -euo pipefail",
            "d=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null "
            "| head -n1 || true)",
            '[ -n "$d" ] || d=$(cat /sys/module/nvidia/version 2>/dev/null || true)',
            f"nvidia-ctk cdi generate --output={shlex.quote(spec)}",
            f"mkdir -p {shlex.quote(record.rsplit('/', 1)[0])}",
            f'printf "%s\\n" "$d" > {shlex.quote(record)}',
        ]
    )
    return f"bash -c {shlex.quote(script)}"


def cdi_reason(state: dict) -> str | None:
    """Why the CDI spec must be (re)generated, or ``None`` when it fits the loaded driver."""
    if not state.get("spec"):
        return "missing"
    driver, recorded = state.get("driver"), state.get("recorded")
    if driver and recorded != driver:
        return f"generated for driver {recorded or 'unknown'}, driver now {driver}"
    return None


@deploy("NVIDIA Container Toolkit", data_defaults=DEFAULTS)
def container_toolkit() -> None:
    """Repo + ``nvidia-container-toolkit``, runtime configured, CDI spec generated."""
    config = cfg()
    if not config.container_toolkit.enabled:
        host.noop("container toolkit: disabled in the inventory")
        return
    keyring = host.data.rigforge_ctk_keyring
    ensure_packages(["gnupg", "curl"], name="gnupg + curl (repository key)")
    if CTK_KEY_FINGERPRINT in (host.get_fact(KeyringFingerprints, path=keyring) or []):
        host.noop(f"container toolkit: {keyring} holds key {CTK_KEY_FINGERPRINT}")
    else:
        server.shell(
            name="NVIDIA Container Toolkit key (fingerprint checked, dearmored)",
            commands=[key_command(host.data.rigforge_ctk_key_url, keyring)],
        )
    put_spec(specs.container_toolkit_sources(host.data.rigforge_ctk_repo, keyring))
    ensure_packages(["nvidia-container-toolkit"], name="nvidia-container-toolkit")
    _runtime(host.data.rigforge_ctk_runtime)
    spec = host.data.rigforge_ctk_cdi_spec
    reason = cdi_reason(
        host.get_fact(CdiState, spec=spec, record=CDI_DRIVER_RECORD) or CdiState.default()
    )
    if reason is None:
        host.noop(f"container toolkit: CDI spec {spec} fits the loaded driver")
        return
    files.directory(name="CDI spec folder", path=spec.rsplit("/", 1)[0])
    server.shell(
        name=f"Generate the CDI spec (nvidia-ctk cdi generate; {reason})",
        commands=[cdi_command(spec)],
    )


def _runtime(runtime: str) -> None:
    """Configure ``runtime`` for the nvidia runtime unless its config already declares it."""
    config_path = RUNTIME_CONFIG.get(runtime)
    if not config_path or not has_command(runtime):
        host.noop(f"container toolkit: {runtime} not installed; runtime not configured")
        return
    unit = f"{runtime}.service"
    step = restart_step(unit)
    if host.get_fact(NvidiaRuntimeConfigured, path=config_path):
        host.noop(f"container toolkit: {config_path} declares the nvidia runtime")
    else:
        if step is not None:
            mark_pending(step, reason=f"{config_path} gets the nvidia runtime")
        server.shell(
            name=f"nvidia-ctk runtime configure --runtime={runtime}",
            commands=[f"nvidia-ctk runtime configure --runtime={shlex.quote(runtime)}"],
        )
    if step is not None:
        run_pending(
            step,
            [f"systemctl try-restart {shlex.quote(unit)}"],
            name=f"Restart {runtime} (nvidia runtime configured)",
        )
