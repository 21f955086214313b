"""NVIDIA Container Toolkit steps as operations: the repository key, the runtime, the CDI spec.

Each diffs a fact about its result (:mod:`deploys.facts.container`), not a file merely
existing, so a damaged keyring, a ``daemon.json`` another tool rewrote or a spec generated for
another driver is repaired, and a second deploy changes nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator

from pyinfra import host
from pyinfra.api import operation

from deploys.facts.container import Cdi, CdiState, KeyringFingerprints, NvidiaRuntimeConfigured
from deploys.facts.host import HostSnapshot
from deploys.operations.pending import clear_command, mark_command
from deploys.operations.systemd import restart_step

#: "NVIDIA CORPORATION (Open Source Projects) <cudatools@nvidia.com>", rsa4096, 2017-09-28:
#: the primary key of https://nvidia.github.io/libnvidia-container/gpgkey. NVIDIA's issue
#: threads show its key id DDCAE044F796ECB0 (github.com/NVIDIA/nvidia-container-runtime/
#: issues/88, github.com/NVIDIA/libnvidia-container/issues/171); the full fingerprint is the
#: one deployments pin for that URL (e.g. puppet ``apt::key`` ids for nvidia-docker).
CTK_KEY_FINGERPRINT = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"

#: The driver version the CDI spec was last generated for.
CDI_DRIVER_RECORD = "/var/lib/rigforge/cdi-driver-version"


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


def cdi_reason(state: Cdi) -> str | None:
    """Why the CDI spec must be (re)generated, or ``None`` when it fits the loaded driver.

    No driver loaded: the spec cannot be checked (nor generated), so it is left alone.
    """
    if not state.spec:
        return "missing"
    driver, recorded = state.driver, state.recorded
    if driver and recorded != driver:
        return f"generated for driver {recorded or 'unknown'}, driver now {driver}"
    return None


@operation()
def repository_key(
    url: str, keyring: str, fingerprint: str = CTK_KEY_FINGERPRINT
) -> Generator[str, None, None]:
    """Fetch the repository key into ``keyring`` unless it already holds ``fingerprint``.

    + url: where the armored key is (``https://nvidia.github.io/libnvidia-container/gpgkey``)
    + keyring: the dearmored keyring apt's ``Signed-By`` names
    + fingerprint: the primary key's fingerprint the download must have (else it fails)

    Example::

        container.repository_key(url="https://nvidia.github.io/libnvidia-container/gpgkey",
                                 keyring="/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg")
    """
    if fingerprint in host.get_fact(KeyringFingerprints, path=keyring):
        host.noop(f"{keyring} holds key {fingerprint}")
        return
    yield key_command(url, keyring, fingerprint)


@operation()
def runtime_configured(runtime: str, config_path: str) -> Generator[str, None, None]:
    """Declare the ``nvidia`` runtime in ``runtime``'s config; restart ``runtime`` after it.

    + runtime: the container runtime (``docker``)
    + config_path: the config ``nvidia-ctk runtime configure`` edits (``/etc/docker/daemon.json``)

    Where systemd runs, the restart is marked owed before the config changes and cleared after
    ``systemctl try-restart``, so a kill in between restarts on the next run. Example::

        container.runtime_configured(runtime="docker", config_path="/etc/docker/daemon.json")
    """
    unit = f"{runtime}.service"
    step = restart_step(unit)
    snap = host.get_fact(HostSnapshot)
    configured = host.get_fact(NvidiaRuntimeConfigured, path=config_path)
    owed = snap.systemd_booted and step in snap.pending
    if configured and not owed:
        host.noop(f"{config_path} declares the nvidia runtime")
        return
    if not configured:
        if snap.systemd_booted:
            yield mark_command(step)
        yield f"nvidia-ctk runtime configure --runtime={shlex.quote(runtime)}"
    if snap.systemd_booted:
        yield f"systemctl try-restart {shlex.quote(unit)}"
        yield clear_command(step)


@operation()
def cdi_spec(spec: str, record: str = CDI_DRIVER_RECORD) -> Generator[str, None, None]:
    """(Re)generate the CDI spec when it is missing or was made for another driver.

    + spec: the CDI spec path (``/etc/cdi/nvidia.yaml``)
    + record: where the driver version it was generated for is kept

    Example: ``container.cdi_spec(spec="/etc/cdi/nvidia.yaml")``.
    """
    reason = cdi_reason(host.get_fact(CdiState, spec=spec, record=record))
    if reason is None:
        host.noop(f"CDI spec {spec} fits the loaded driver")
        return
    yield f"mkdir -p {shlex.quote(spec.rsplit('/', 1)[0] or '/')}"
    yield cdi_command(spec, record)
