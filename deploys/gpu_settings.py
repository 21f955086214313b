"""Power caps per GPU UUID at every boot: ``rigforge-gpu-settings.service``.

A oneshot unit ordered ``After=nvidia-persistenced.service``. With the tuner installed and a
profile in the inventory it runs ``<venv>/bin/rigforge apply /etc/rigforge/profile.yaml``;
otherwise a rendered ``nvidia-smi`` script (``-i UUID -pl W``, clamped to the card's range,
read back, retried). Either way the unit carries the caps as ``RIGFORGE_CAPS_W="UUID=W …"``,
so a person (and the testinfra suite) can read them from the unit. systemd is reloaded only
when the unit or the script changed.

A profile tuned on another set of GPUs (a card swapped, added, moved) is refused before
anything of it reaches the host: :func:`profile_matches_gpus` fails this host (and only this
host) with a sentence naming the fix, ``re-run rigforge sweep --host NAME``.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pyinfra import host
from pyinfra.api import deploy, operation

from deploys.facts.nvidia import STATUS_OK, NvidiaGpus
from deploys.util import (
    cfg,
    put_pending,
    put_text_pending,
    restart_step,
    service_after_change,
    unit_removed,
)
from tuning.backends.base import GpuInfo, rig_fingerprint
from tuning.render.files import (
    CAP_RETRIES,
    CAP_RETRY_DELAY_S,
    GPU_SETTINGS_SCRIPT,
    PROFILE_TARGET,
    SIM_RIG_TARGET,
    cap_script,
    caps_w,
    settings_unit,
)

UNIT = "rigforge-gpu-settings.service"

SCRIPT_PATH = GPU_SETTINGS_SCRIPT
PROFILE_PATH = PROFILE_TARGET

DEFAULTS = {
    "rigforge_gpu_settings_script": SCRIPT_PATH,
    "rigforge_profile_path": PROFILE_PATH,
    "rigforge_sim_rig_path": SIM_RIG_TARGET,
    "rigforge_cap_retries": CAP_RETRIES,
    "rigforge_cap_retry_delay_s": CAP_RETRY_DELAY_S,
}


def stale_profile_problem(
    profile_path: str | Path, host_gpus: Iterable[Mapping[str, Any]], host_name: str
) -> str | None:
    """Why the profile does not fit the host's GPUs, or ``None`` when it does.

    ``host_gpus``: the host's GPUs as :class:`NvidiaGpus` reports them (or the inventory's
    list): ``uuid`` and, for the fingerprint, ``name``, ``pci_bus_id``, ``memory_total_mib``.
    Stale when a profiled UUID is missing on the host, the host has a GPU the profile never
    tuned, or (same UUIDs) the profile's ``rig.fingerprint`` differs from the host's — a card
    moved slot or was renamed. The sentence names the fix: ``rigforge sweep --host NAME``.
    """
    path = Path(profile_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    tuned = [str(g["uuid"]) for g in data.get("gpus") or []]
    gpus = list(host_gpus)
    present = [str(g.get("uuid") or "") for g in gpus]
    lower = {u.lower() for u in present}
    missing = [u for u in tuned if u.lower() not in lower]
    new = [u for u in present if u and u.lower() not in {t.lower() for t in tuned}]
    fix = f"re-run rigforge sweep --host {host_name}"
    if missing or new:
        parts = []
        if missing:
            parts.append(f"{', '.join(missing)} missing")
        if new:
            parts.append(f"{', '.join(new)} not tuned")
        return (
            f"profile {path.name} was tuned on a different set of GPUs: {'; '.join(parts)}; {fix}"
        )
    rig = data.get("rig")
    expected = rig.get("fingerprint") if isinstance(rig, dict) else None
    keys = ("uuid", "name", "pci_bus_id", "memory_total_mib")
    if expected and gpus and all(g.get(k) for g in gpus for k in keys):
        actual = rig_fingerprint(
            GpuInfo(
                index=i,
                uuid=str(g["uuid"]),
                name=str(g["name"]),
                pci_bus_id=str(g["pci_bus_id"]),
                memory_total_mib=int(g["memory_total_mib"]),
            )
            for i, g in enumerate(gpus)
        )
        if actual != expected:
            return (
                f"profile {path.name} was tuned on rig {expected} but the GPUs on this host "
                f"are {actual} (a GPU moved slot, was renamed or resized); {fix}"
            )
    return None


@operation()
def profile_matches_gpus(
    profile_path: str, inventory_gpus: list[dict[str, Any]]
) -> Generator[str, None, None]:
    """Refuse (fail the host) when the tuning profile was made on another set of GPUs.

    + profile_path: the profile on the control machine
    + inventory_gpus: the inventory's GPU list (used when the host reports no GPUs yet)

    Compares against the host's :class:`NvidiaGpus` fact when ``nvidia-smi`` lists GPUs
    (read when the operation runs, so a driver installed earlier in the same deploy counts),
    else against the inventory's list. On a mismatch it yields a command that prints the
    reason and exits 1, so pyinfra marks this host failed, stops its remaining operations
    (the profile is never applied) and carries on with the other hosts. Example::

        profile_matches_gpus(profile_path="inventory/host_data/ws1/profile.yaml",
                             inventory_gpus=[{"uuid": "GPU-…", "name": "…", …}])
    """
    fact = host.get_fact(NvidiaGpus) or {}
    if fact.get("status") == STATUS_OK and fact.get("gpus"):
        gpus, source = fact["gpus"], "nvidia-smi on the host"
    else:
        gpus = inventory_gpus
        source = f"the inventory's gpus (nvidia-smi: {fact.get('status', 'unknown')})"
    problem = stale_profile_problem(profile_path, gpus, host.name)
    if problem is None:
        host.noop(f"profile {Path(profile_path).name} matches this host's GPUs ({source})")
        return
    message = f"rigforge: {host.name}: {problem} (compared with {source})"
    yield f"echo {shlex.quote(message)} >&2; exit 1"


@deploy("GPU settings: power caps per UUID at every boot", data_defaults=DEFAULTS)
def gpu_settings() -> None:
    """Install ``rigforge-gpu-settings.service`` (and its profile or script) and enable it."""
    config = cfg()
    caps = caps_w(config)
    if not caps:
        # Caps turned off: the unit of an earlier deploy must not re-apply old caps at boot.
        # The caps already set stay until reboot (or `rigforge restore`).
        unit_removed(
            UNIT,
            extra_paths=(host.data.rigforge_gpu_settings_script,),
            name="GPU settings unit (no caps in the inventory or profile)",
        )
        return
    if config.power.profile:
        # Before the profile or its caps reach the host: a stale profile fails this host only.
        profile_matches_gpus(
            name="Tuning profile matches this host's GPUs (else refused: re-run sweep --host)",
            profile_path=config.power.profile,
            inventory_gpus=[g.model_dump(mode="json") for g in config.gpu_list],
        )
    use_tuner = bool(config.tuner.install and config.power.profile)
    step = restart_step(UNIT)
    changed = []
    rig = None
    if use_tuner and config.tuner.sim_rig:
        # No GPUs on this host (CI): apply to the simulated rig the profile was swept on,
        # which checks the profile against its GPUs and budget; NVML here would fail.
        rig = host.data.rigforge_sim_rig_path
        changed.append(
            put_text_pending(
                rig,
                Path(config.tuner.sim_rig).read_text(encoding="utf-8"),
                step,
                name=f"Simulated rig for rigforge apply ({rig})",
                mode="644",
            )
        )
    if use_tuner:
        changed.append(
            put_text_pending(
                host.data.rigforge_profile_path,
                Path(config.power.profile or "").read_text(encoding="utf-8"),
                step,
                name="Tuning profile (/etc/rigforge/profile.yaml)",
                mode="640",
                group=config.base.service_user,
            )
        )
    else:
        changed.append(
            put_pending(
                cap_script(
                    dest=host.data.rigforge_gpu_settings_script,
                    retries=host.data.rigforge_cap_retries,
                    retry_delay_s=host.data.rigforge_cap_retry_delay_s,
                ),
                step,
            )
        )
    changed.append(
        put_pending(
            settings_unit(
                config,
                caps,
                use_tuner=use_tuner,
                profile=host.data.rigforge_profile_path,
                script=host.data.rigforge_gpu_settings_script,
                rig=rig,
            ),
            step,
        )
    )
    service_after_change(UNIT, changed=changed, name="GPU settings", step=step)
