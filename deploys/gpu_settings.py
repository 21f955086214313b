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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy, operation

from deploys.facts.nvidia import STATUS_OK, NvidiaGpus
from deploys.operations.systemd import restart_step
from deploys.util import (
    TextFile,
    cfg,
    put_files,
    service_after_change,
    snapshot,
    unit_removed,
)
from tuning.core.profile import load_profile, profile_mismatch
from tuning.core.rig import GpuInfo
from tuning.render.files import (
    CAP_RETRIES,
    CAP_RETRY_DELAY_S,
    GPU_SETTINGS_SCRIPT,
    PROFILE_TARGET,
    SIM_RIG_TARGET,
    FileSpec,
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
    The check is the one stale-profile check, :func:`tuning.core.profile.profile_mismatch`;
    the sentence names the fix: ``rigforge sweep --host NAME``.
    """
    path = Path(profile_path)
    gpus = [
        GpuInfo(
            index=i,
            uuid=str(g.get("uuid") or "") or None,
            name=str(g["name"]) if g.get("name") else None,
            pci_bus_id=str(g["pci_bus_id"]) if g.get("pci_bus_id") else None,
            memory_total_mib=int(g["memory_total_mib"]) if g.get("memory_total_mib") else None,
        )
        for i, g in enumerate(host_gpus)
    ]
    problem = profile_mismatch(load_profile(path), gpus)
    if problem is None:
        return None
    return f"profile {path.name} {problem}; re-run rigforge sweep --host {host_name}"


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
    fact = host.get_fact(NvidiaGpus)
    gpus: list[Mapping[str, Any]]
    if fact.status == STATUS_OK and fact.gpus:
        gpus, source = [asdict(g) for g in fact.gpus], "nvidia-smi on the host"
    else:
        gpus = list(inventory_gpus)
        source = f"the inventory's gpus (nvidia-smi: {fact.status})"
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
    # No GPUs on this host (CI, tuner.sim_rig): apply to the simulated rig the profile was
    # swept on, which checks it against its GPUs and budget; NVML here would fail.
    rig = host.data.rigforge_sim_rig_path if use_tuner and config.tuner.sim_rig else None
    unit = settings_unit(
        config,
        caps,
        use_tuner=use_tuner,
        profile=host.data.rigforge_profile_path,
        script=host.data.rigforge_gpu_settings_script,
        rig=rig,
    )
    sim_rig = [
        TextFile(
            dest=rig,
            text=Path(config.tuner.sim_rig or "").read_text(encoding="utf-8"),
            name=f"Simulated rig for rigforge apply ({rig})",
        )
        for _ in [rig]
        if rig is not None
    ]
    runner: FileSpec | TextFile
    if use_tuner:
        runner = TextFile(
            dest=host.data.rigforge_profile_path,
            text=Path(config.power.profile or "").read_text(encoding="utf-8"),
            name="Tuning profile (/etc/rigforge/profile.yaml)",
            mode="640",
        )
    else:
        runner = cap_script(
            dest=host.data.rigforge_gpu_settings_script,
            retries=host.data.rigforge_cap_retries,
            retry_delay_s=host.data.rigforge_cap_retry_delay_s,
        )
    # One round trip for every file and the unit this concern decides on.
    snap = snapshot(paths=[runner.dest, unit.dest, *(f.dest for f in sim_rig)], units=[UNIT])
    step = restart_step(UNIT) if snap.systemd_booted else None
    group = config.base.service_user if use_tuner else "root"
    wanted = put_files([runner], snap, step, group=group)
    wanted.update(put_files(sim_rig, snap, step))
    wanted.update(put_files([unit], snap, step))
    # New caps are re-applied under the running engines: they Requires= this unit (so a
    # failed apply keeps them from starting), but a restart of it must not restart them.
    service_after_change(UNIT, snap=snap, wanted=wanted, name="GPU settings", restart_alone=True)
