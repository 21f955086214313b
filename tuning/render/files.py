"""The :class:`FileSpec` of every templated file a deploy puts: path, template, context, mode.

The deploys put these on a host (``deploys.util.put_spec`` / ``put_pending``) and ``rigforge
loop`` renders them into a folder, so the two can never disagree about a file's content —
and ``rigforge loop`` needs no pyinfra. Defaults here are the deploys' defaults (their
``data_defaults`` refer to these constants).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inventory.schema import HostConfig
from tuning.core.profile import load_profile
from tuning.render.environment import render

#: Where the GPU-settings deploy puts the tuning profile and the nvidia-smi cap script.
GPU_SETTINGS_SCRIPT = "/usr/local/libexec/rigforge-gpu-settings"
PROFILE_TARGET = "/etc/rigforge/profile.yaml"
#: Where ``tuner.sim_rig`` lands on a host (the boot unit applies to it; deploys/tune.py
#: sweeps it).
SIM_RIG_TARGET = "/etc/rigforge/tune-rig.yaml"
#: How often the cap script retries a GPU that did not take its cap, and the pause between
#: tries (``estimate``: long enough for nvidia-persistenced to have initialised the GPU).
CAP_RETRIES = 3
CAP_RETRY_DELAY_S = 2
#: The IRQ-pinning script and irqbalance's policy script (``deploys/affinity.py``).
IRQ_SCRIPT = "/usr/local/libexec/rigforge-irq-affinity"
IRQBALANCE_POLICY_SCRIPT = "/usr/local/libexec/rigforge-irqbalance-policy"
#: The grub.d fragment of ``deploys/pcie.py`` and the kernel argument per ``pcie.aspm``.
GRUB_FRAGMENT = "/etc/default/grub.d/rigforge-pcie.cfg"
ASPM_CMDLINE: Mapping[str, str] = {"performance": "pcie_aspm.policy=performance"}


@dataclass(frozen=True)
class FileSpec:
    """One file a deploy writes: its target path, template, context, mode and label."""

    dest: str
    template: str
    context: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    mode: str = "644"

    def render(self) -> str:
        """The file's content (the one environment, :func:`tuning.render.render`)."""
        return render(self.template, **self.context)


# --------------------------------------------------------------------------------------------
# GPU settings (deploys/gpu_settings.py)
# --------------------------------------------------------------------------------------------


def profile_caps_w(path: str | Path) -> list[tuple[str, float]]:
    """``(uuid, cap_w)`` per GPU of a tuner profile, read by the one profile loader."""
    return [(gpu.uuid, gpu.cap_w) for gpu in load_profile(path).gpus]


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


def settings_unit(
    config: HostConfig,
    caps: Sequence[tuple[str, float]],
    *,
    use_tuner: bool,
    profile: str = PROFILE_TARGET,
    script: str = GPU_SETTINGS_SCRIPT,
    rig: str | None = None,
) -> FileSpec:
    """``rigforge-gpu-settings.service``: the caps per UUID, applied at every boot.

    ``use_tuner``: run ``rigforge apply <profile>`` from the tuner's venv, else ``script``;
    ``rig``: the simulated rig file it applies to (``--rig``) on a host without GPUs, whose
    ``tuner.sim_rig`` the profile was swept on (else the host's GPUs through NVML).
    """
    return FileSpec(
        dest="/etc/systemd/system/rigforge-gpu-settings.service",
        template="etc/systemd/system/rigforge-gpu-settings.service.j2",
        context={
            "caps_w": list(caps),
            "use_tuner": use_tuner,
            "venv": config.tuner.venv,
            "profile": profile,
            "script": script,
            "rig": rig,
        },
        name="rigforge-gpu-settings.service",
    )


def cap_script(
    *,
    dest: str = GPU_SETTINGS_SCRIPT,
    retries: int = CAP_RETRIES,
    retry_delay_s: float = CAP_RETRY_DELAY_S,
) -> FileSpec:
    """The ``nvidia-smi -i UUID -pl W`` script the unit runs when the tuner is not installed."""
    return FileSpec(
        dest=dest,
        template="usr/local/libexec/rigforge-gpu-settings.sh.j2",
        context={"retries": retries, "retry_delay_s": retry_delay_s},
        name="GPU power-cap script (nvidia-smi, clamped, read back)",
        mode="755",
    )


# --------------------------------------------------------------------------------------------
# PCIe and affinity (deploys/pcie.py, deploys/affinity.py)
# --------------------------------------------------------------------------------------------


def grub_fragment(dest: str = GRUB_FRAGMENT) -> FileSpec:
    """The grub.d fragment that puts ``pcie_aspm.policy=performance`` on the kernel cmdline."""
    return FileSpec(
        dest=dest,
        template="etc/default/grub.d/rigforge-pcie.cfg.j2",
        context={"cmdline": ASPM_CMDLINE["performance"]},
        name="Kernel cmdline: pcie_aspm.policy=performance (grub.d)",
    )


def irq_pinning_files(config: HostConfig, *, script: str = IRQ_SCRIPT) -> tuple[FileSpec, FileSpec]:
    """The IRQ-pinning script and the oneshot unit that runs it at every boot."""
    return (
        FileSpec(
            dest=script,
            template="usr/local/libexec/rigforge-irq-affinity.sh.j2",
            name="IRQ pinning script",
            mode="755",
        ),
        FileSpec(
            dest="/etc/systemd/system/rigforge-irq-affinity.service",
            template="etc/systemd/system/rigforge-irq-affinity.service.j2",
            context={"script": script, "kernel_root": config.kernel.root},
            name="rigforge-irq-affinity.service",
        ),
    )


def irqbalance_files(
    *, policy_script: str = IRQBALANCE_POLICY_SCRIPT
) -> tuple[FileSpec, FileSpec, FileSpec]:
    """irqbalance's policy script (ban NVIDIA GPU IRQs), its arguments and its drop-in."""
    return (
        FileSpec(
            dest=policy_script,
            template="usr/local/libexec/rigforge-irqbalance-policy.sh.j2",
            name="irqbalance policy script (ban NVIDIA GPU IRQs)",
            mode="755",
        ),
        FileSpec(
            dest="/etc/default/irqbalance-rigforge",
            template="etc/default/irqbalance-rigforge.j2",
            context={"policy_script": policy_script},
            name="irqbalance arguments (--policyscript)",
        ),
        FileSpec(
            dest="/etc/systemd/system/irqbalance.service.d/rigforge.conf",
            template="etc/systemd/system/irqbalance.service.d/rigforge.conf.j2",
            name="irqbalance.service drop-in",
        ),
    )


# --------------------------------------------------------------------------------------------
# Driver, CUDA and container toolkit (deploys/nvidia_driver.py, cuda.py, container_toolkit.py)
# --------------------------------------------------------------------------------------------


def unattended_blacklist(patterns: Sequence[str]) -> FileSpec:
    """Keep the NVIDIA packages (regexes on names) out of unattended-upgrades."""
    return FileSpec(
        dest="/etc/apt/apt.conf.d/51rigforge-nvidia-unattended",
        template="etc/apt/apt.conf.d/51rigforge-nvidia-unattended.j2",
        context={"patterns": tuple(patterns)},
        name="Keep NVIDIA packages out of unattended-upgrades",
    )


def driver_pin(patterns: Sequence[str], branch: str, source: str) -> FileSpec:
    """The apt preferences pin (priority 1001) that holds ``patterns`` on ``branch``."""
    return FileSpec(
        dest="/etc/apt/preferences.d/rigforge-nvidia-driver.pref",
        template="etc/apt/preferences.d/rigforge-nvidia-driver.pref.j2",
        context={"patterns": tuple(patterns), "branch": branch, "source": source},
        name=f"Pin NVIDIA packages to branch {branch}",
    )


def cuda_sources(dest: str, uri: str, keyring: str) -> FileSpec:
    """NVIDIA's CUDA apt repository as a deb822 ``.sources`` with ``Signed-By``."""
    return FileSpec(
        dest=dest,
        template="etc/apt/sources.list.d/cuda.sources.j2",
        context={"uri": uri, "keyring": keyring},
        name="CUDA apt repository (deb822, signed-by)",
    )


def nouveau_blacklist() -> FileSpec:
    """``/etc/modprobe.d/blacklist-nouveau.conf``."""
    return FileSpec(
        dest="/etc/modprobe.d/blacklist-nouveau.conf",
        template="etc/modprobe.d/blacklist-nouveau.conf.j2",
        name="Blacklist nouveau",
    )


def persistenced_dropin(user: str, daemon: str = "/usr/bin/nvidia-persistenced") -> FileSpec:
    """The nvidia-persistenced drop-in that turns persistence mode on (as ``user``)."""
    return FileSpec(
        dest="/etc/systemd/system/nvidia-persistenced.service.d/rigforge-persistence.conf",
        template="etc/systemd/system/nvidia-persistenced.service.d/rigforge-persistence.conf.j2",
        context={"daemon": daemon, "user": user},
        name="nvidia-persistenced: persistence mode on (drop-in)",
    )


def cuda_profile(version: str) -> FileSpec:
    """``/etc/profile.d/rigforge-cuda.sh``: ``/usr/local/cuda-<version>/bin`` on PATH."""
    return FileSpec(
        dest="/etc/profile.d/rigforge-cuda.sh",
        template="etc/profile.d/rigforge-cuda.sh.j2",
        context={"version": version, "prefix": f"/usr/local/cuda-{version}"},
        name=f"CUDA {version} on PATH (profile.d)",
    )


def container_toolkit_sources(uri: str, keyring: str) -> FileSpec:
    """The NVIDIA Container Toolkit apt repository (deb822, ``Signed-By``)."""
    return FileSpec(
        dest="/etc/apt/sources.list.d/nvidia-container-toolkit.sources",
        template="etc/apt/sources.list.d/nvidia-container-toolkit.sources.j2",
        context={"uri": uri, "keyring": keyring},
        name="NVIDIA Container Toolkit repository (deb822, signed-by)",
    )
