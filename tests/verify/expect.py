"""What a host deployed from an inventory must show, derived from the inventory alone.

The verify suite's oracle: every value here comes from the inventory (its hosts, GPUs, caps,
plan or models, secrets) and from what the distributions and engines publish (package names,
file paths a person can look up), never from the deploy code, so a deploy that writes the wrong
thing cannot also move what the check expects. The default tier checks these derivations
against the example inventories' literal values (``tests/unit/test_verify_expect.py``); the
checks in this folder compare them with a real host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inventory.schema import HostConfig
from tuning.captures.values import parse_cpu_list
from tuning.core.checks import unit_slug
from tuning.core.plan import load_plan
from tuning.core.profile import load_profile

#: Where rigforge's units, config and secrets land (the paths README and docs name).
UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/rigforge"
SECRETS_DIR = "/etc/rigforge/secrets"
#: The root-owned ``EnvironmentFile=`` of an opened stack's units (``NAME=key`` lines).
API_KEY_ENV_FILE = "/etc/rigforge/secrets/api-key.env"
#: The engines' documented API-key variables: vLLM's ``VLLM_API_KEY``, llama-server's
#: ``LLAMA_API_KEY`` (both read the variable in place of ``--api-key``).
API_KEY_VARIABLES = ("LLAMA_API_KEY", "VLLM_API_KEY")
GPU_SETTINGS_UNIT = "rigforge-gpu-settings.service"
IRQ_AFFINITY_UNIT = "rigforge-irq-affinity.service"
#: The persistence daemon's unit, as every driver source's ``nvidia-persistenced`` package
#: ships it (NVIDIA's driver README, "Using the nvidia-persistenced Utility").
PERSISTENCED_UNIT = "nvidia-persistenced.service"

#: Tools every rigforge host has: ``numactl`` (NUMA binding), ``lspci`` (``pciutils``: links),
#: ``sensors`` (``lm-sensors``: board temperatures). Debian and Ubuntu package names.
BASE_PACKAGES = ("numactl", "pciutils", "lm-sensors")
#: Meta-packages that install a driver (NVIDIA's CUDA installation guide: ``cuda`` and
#: ``cuda-drivers`` pull the driver; ``nvidia-open`` and Debian's ``nvidia-driver`` are one).
DRIVER_META_PACKAGES = frozenset({"cuda", "cuda-drivers", "nvidia-open", "nvidia-driver"})
#: Hardening every serving unit carries (systemd.exec(5); systemd-analyze security scores it).
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "DevicePolicy=closed",
    "RestrictNamespaces=yes",
    "UMask=0077",
)
#: Addresses only this machine reaches.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def driver_userspace(config: HostConfig) -> tuple[str, ...]:
    """The driver's user-space packages for the inventory's ``driver.source`` and distro.

    Package names as the archives publish them: Debian (non-free) ships ``nvidia-smi``,
    ``libnvidia-ml1`` (NVML) and ``nvidia-persistenced``; Ubuntu's server branches are
    ``nvidia-utils-<branch>-server`` and ``libnvidia-compute-<branch>-server``; NVIDIA's CUDA
    repository follows the distro's names (``nvidia-utils-<branch>`` on Ubuntu).
    """
    drv = config.driver
    if drv.source == "ubuntu":
        return (
            f"nvidia-utils-{drv.branch}-server",
            f"libnvidia-compute-{drv.branch}-server",
            "nvidia-persistenced",
        )
    if drv.source == "cuda-repo" and config.distro.id != "debian":
        return (
            f"nvidia-utils-{drv.branch}",
            f"libnvidia-compute-{drv.branch}",
            "nvidia-persistenced",
        )
    return ("nvidia-smi", "libnvidia-ml1", "nvidia-persistenced")


def driver_meta_package(config: HostConfig) -> str | None:
    """The one driver meta-package the inventory's driver brings with its kernel modules.

    ``None`` without kernel modules (``driver.install_kernel_modules: false``). Debian ships the
    driver as ``nvidia-driver``; NVIDIA's CUDA repository as ``nvidia-open`` (open modules) or
    ``cuda-drivers`` (proprietary); Ubuntu's ``nvidia-driver-<branch>-server`` is none of
    :data:`DRIVER_META_PACKAGES`.
    """
    drv = config.driver
    if not drv.install_kernel_modules:
        return None
    if drv.source == "debian":
        return "nvidia-driver"
    if drv.source == "cuda-repo":
        return "nvidia-open" if drv.flavour == "open" else "cuda-drivers"
    return None


def cuda_toolkit_package(version: str) -> str:
    """NVIDIA's toolkit-only package for a CUDA version: ``"12.8"`` → ``cuda-toolkit-12-8``."""
    return "cuda-toolkit-" + version.replace(".", "-")


def caps_w(config: HostConfig) -> dict[str, float]:
    """The cap each GPU must run at, keyed as the inventory names it. Units: W.

    The tuner profile's ``gpus[].cap_w`` (by UUID) when ``power.profile`` names one, else the
    hand caps ``gpus[].power_cap_w`` (by UUID, or PCI bus id where no UUID is listed).
    """
    if config.power.profile:
        return dict(load_profile(config.power.profile).caps_w())
    return {
        (g.uuid or g.pci_bus_id or ""): g.power_cap_w
        for g in config.gpu_list
        if g.power_cap_w is not None
    }


@dataclass(frozen=True)
class Served:
    """One model the inventory serves, as its unit must show it.

    ``gpus``: UUIDs where the inventory knows them (a hand model may list PCI bus ids);
    ``weights``: what the engine loads; ``numa_node``/``cpus``: the binding (``None``/``()``:
    none asked for).
    """

    unit: str
    model: str
    engine: str
    weights: str
    port: int
    gpus: tuple[str, ...]
    tp: int
    numa_node: int | None
    cpus: tuple[int, ...]


def served(config: HostConfig) -> list[Served]:
    """What the inventory serves: the plan's placements, else the hand-listed models.

    The unit is ``rigforge-serve-<model>[-<replica>].service`` (README: serving).
    """
    if config.serving.plan:
        return [
            Served(
                unit=f"rigforge-serve-{unit_slug(p.model, p.replica)}.service",
                model=p.model,
                engine=p.engine,
                weights=p.weights,
                port=p.port,
                gpus=tuple(p.gpus),
                tp=p.tp,
                numa_node=p.numa_node,
                cpus=tuple(p.cpu_list),
            )
            for p in load_plan(config.serving.plan).placements
        ]
    out = []
    for m in config.serving.models:
        gpus = []
        for key in m.gpus:
            gpu = config.gpu(key)
            gpus.append(gpu.uuid if gpu is not None and gpu.uuid else key)
        out.append(
            Served(
                unit=f"rigforge-serve-{unit_slug(m.model)}.service",
                model=m.model,
                engine=m.engine,
                weights=m.model,
                port=m.port,
                gpus=tuple(gpus),
                tp=m.tp,
                numa_node=m.numa_node,
                cpus=(),
            )
        )
    return out


def units(config: HostConfig) -> tuple[str, ...]:
    """The systemd units a deploy of the inventory installs and starts, in boot order.

    ``nvidia-persistenced`` (the driver's user space, every driver source), the IRQ-pinning
    oneshot when ``affinity.pin_irqs``, the GPU-settings oneshot when the inventory has caps
    (:func:`caps_w`), then one serving unit per served model (:func:`served`). Monitoring's
    units are not among them (``monitoring``: checked by its own target test).
    """
    out = [PERSISTENCED_UNIT]
    if config.affinity.pin_irqs:
        out.append(IRQ_AFFINITY_UNIT)
    if caps_w(config):
        out.append(GPU_SETTINGS_UNIT)
    return (*out, *(s.unit for s in served(config)))


def secret_files(config: HostConfig) -> dict[str, Path]:
    """``{path on the host: the inventory's local file}`` of every secret copied verbatim.

    The Hugging Face token lands at ``/etc/rigforge/secrets/hf-token``; the API key is not
    copied (the host gets :data:`API_KEY_ENV_FILE` written from it instead).
    """
    out = {}
    if config.secrets.hf_token_file:
        out[f"{SECRETS_DIR}/hf-token"] = Path(config.secrets.hf_token_file)
    return out


def cpu_set(text: str) -> frozenset[int]:
    """The CPUs a kernel cpulist names (``"0-3,8,10-11"``; ``""``: none)."""
    return frozenset(parse_cpu_list(text) or ())
