"""Power caps per GPU UUID at every boot: ``rigforge-gpu-settings.service``.

A oneshot unit ordered ``After=nvidia-persistenced.service``. With the tuner installed and a
profile in the inventory it runs ``<venv>/bin/rigforge apply /etc/rigforge/profile.yaml``;
otherwise a rendered ``nvidia-smi`` script (``-i UUID -pl W``, clamped to the card's range,
read back, retried). Either way the unit carries the caps as ``RIGFORGE_CAPS_W="UUID=W …"``,
so a person (and the testinfra suite) can read them from the unit. systemd is reloaded only
when the unit or the script changed.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pyinfra import host
from pyinfra.api import deploy

from deploys.util import cfg, put_template, put_text, service_after_change
from inventory.schema import HostConfig

DEFAULTS = {
    "rigforge_gpu_settings_script": "/usr/local/libexec/rigforge-gpu-settings",
    "rigforge_profile_path": "/etc/rigforge/profile.yaml",
    "rigforge_cap_retries": 3,
    "rigforge_cap_retry_delay_s": 2,
}


def profile_caps_w(path: str | Path) -> list[tuple[str, float]]:
    """``(uuid, cap_w)`` per GPU from a tuner profile (``gpus[].uuid``, ``gpus[].cap_w``)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return [(str(g["uuid"]), float(g["cap_w"])) for g in data.get("gpus") or []]


def caps_w(config: HostConfig) -> list[tuple[str, float]]:
    """The caps to enforce: the profile's, else the inventory's hand caps (UUID or bus id).

    Caps above a listed GPU's ``max_w`` or below its ``min_w`` are clamped here too; the
    inventory validator has already refused them, so this is belt and braces.
    """
    if config.power.profile:
        pairs = profile_caps_w(config.power.profile)
    else:
        pairs = [
            (g.uuid or g.pci_bus_id or "", g.power_cap_w)
            for g in config.gpu_list
            if g.power_cap_w is not None
        ]
    out = []
    for key, cap_w in pairs:
        gpu = config.gpu(key)
        if gpu is not None and gpu.max_w is not None:
            cap_w = min(cap_w, gpu.max_w)
        if gpu is not None and gpu.min_w is not None:
            cap_w = max(cap_w, gpu.min_w)
        out.append((key, cap_w))
    return out


@deploy("GPU settings: power caps per UUID at every boot", data_defaults=DEFAULTS)
def gpu_settings() -> None:
    """Install ``rigforge-gpu-settings.service`` (and its profile or script) and enable it."""
    config = cfg()
    caps = caps_w(config)
    if not caps:
        host.noop("gpu_settings: no caps in the inventory or profile; no unit")
        return
    use_tuner = bool(config.tuner.install and config.power.profile)
    changed = []
    if use_tuner:
        changed.append(
            put_text(
                host.data.rigforge_profile_path,
                Path(config.power.profile or "").read_text(encoding="utf-8"),
                name="Tuning profile (/etc/rigforge/profile.yaml)",
                mode="640",
                group=config.base.service_user,
            )
        )
    else:
        changed.append(
            put_template(
                "usr/local/libexec/rigforge-gpu-settings.sh.j2",
                host.data.rigforge_gpu_settings_script,
                name="GPU power-cap script (nvidia-smi, clamped, read back)",
                mode="755",
                retries=host.data.rigforge_cap_retries,
                retry_delay_s=host.data.rigforge_cap_retry_delay_s,
            )
        )
    changed.append(
        put_template(
            "etc/systemd/system/rigforge-gpu-settings.service.j2",
            "/etc/systemd/system/rigforge-gpu-settings.service",
            name="rigforge-gpu-settings.service",
            caps_w=caps,
            use_tuner=use_tuner,
            venv=config.tuner.venv,
            profile=host.data.rigforge_profile_path,
            script=host.data.rigforge_gpu_settings_script,
        )
    )
    service_after_change("rigforge-gpu-settings.service", changed=changed, name="GPU settings")
