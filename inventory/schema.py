"""The inventory schema: what a host entry in ``inventory/<name>.yaml`` may say.

This module is the contract between the inventory (validated here and in
:mod:`inventory.validate`) and the deploys (``deploys/*.py``), which read one key of host data::

    from inventory.schema import host_config
    cfg = host_config(host)          # HostConfig, validated and with every default filled in
    cfg.driver.branch                # "535"

Every model forbids unknown keys (the validator turns pydantic's "extra" error into a
did-you-mean). Units are in the field names (``_w`` watts, ``_v`` volts, ``_a`` amperes,
``_mib`` MiB). Paths that name files on the control machine (profile, plan, secrets, SSH
key) are resolved against the inventory file's folder by the loader, so the ``rigforge``
host data the deploys see always holds absolute paths. Paths on the *target*
(``kernel.root``, ``tuner.venv``) are absolute target paths and are never resolved.

Cross-field checks that need no files (caps inside each GPU's range, duplicate UUIDs,
PSU/circuit budgets, references between sections) live in :func:`check_host`; checks that read
files (profile, plan, existence) live in :mod:`inventory.validate`.

This module imports neither pyinfra nor anything that touches a host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from inventory.fields import EngineArg, GpuId, UnitText
from tuning.core.bus import normalize_bus_id
from tuning.core.checks import (
    BUS_ID_RE,
    UUID_RE,
    gpu_id_problem,
    secret_arg_problem,
    text_problem,
    unit_name_collisions,
)
from tuning.core.power import BudgetModel, Circuit, Psu

__all__ = [
    "DATA_KEY",
    "AffinityConfig",
    "BaseConfig",
    "CircuitSpec",
    "ContainerToolkitConfig",
    "CudaConfig",
    "DistroConfig",
    "DriverConfig",
    "GpuSpec",
    "HostConfig",
    "Inventory",
    "Issue",
    "KernelConfig",
    "PcieConfig",
    "PowerConfig",
    "PsuSpec",
    "SecretsConfig",
    "ServingConfig",
    "ServingModel",
    "SshConfig",
    "TunerConfig",
    "check_host",
    "host_config",
    "psu_loads_w",
    "section_defaults",
]

#: The one host-data key that holds the validated host config (``HostConfig.model_dump``).
DATA_KEY = "rigforge"

#: Tag names of the ``gpus`` union; the validator drops them from YAML paths.
UNION_TAGS = frozenset({"gpu-list", "discover"})

_UUID_RE = UUID_RE
_BUS_ID_RE = BUS_ID_RE
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

#: Driver branch each Debian release ships in non-free (``nvidia-driver`` source package):
#: bullseye 470, bookworm 535, trixie 550 — https://packages.debian.org/search?keywords=nvidia-driver
DEBIAN_DRIVER_BRANCHES: Mapping[str, str] = {"bullseye": "470", "bookworm": "535", "trixie": "550"}

#: NVIDIA's open GPU kernel modules were first released with R515 (May 2022) —
#: https://developer.nvidia.com/blog/nvidia-releases-open-source-gpu-kernel-modules/
OPEN_MODULES_MIN_BRANCH = 515

#: Oldest driver branch each CUDA major version runs on (minor-version compatibility; CUDA
#: Toolkit release notes, "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor
#: Version Compatibility": CUDA 11.x >= 450.80.02, 12.x >= 525.60.13, 13.x >= 580).
CUDA_MIN_DRIVER_BRANCH: Mapping[int, int] = {11: 450, 12: 525, 13: 580}


class _Model(BaseModel):
    """Base for every inventory section: unknown keys are errors; values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class SshConfig(_Model):
    """How pyinfra reaches the host. ``key``/``known_hosts`` are control-machine paths."""

    host: str = Field(min_length=1, description="address or DNS name of the host")
    port: int = Field(22, ge=1, le=65535, description="SSH port")
    user: str = Field("root", min_length=1, description="SSH user")
    key: str | None = Field(None, description="private key file (resolved to an absolute path)")
    known_hosts: str | None = Field(
        None,
        description="known_hosts file; pyinfra 3.10 needs an existing one when "
        "~/.ssh/known_hosts is absent",
    )
    strict_host_key_checking: Literal["yes", "no", "accept-new", "off"] = Field(
        "accept-new", description="OpenSSH StrictHostKeyChecking for this host"
    )
    sudo: bool = Field(False, description="run operations through sudo (when user is not root)")


class DistroConfig(_Model):
    """What the host is expected to run; the deploy checks it against the host's facts."""

    id: Literal["debian", "ubuntu"] = Field("debian", description="distribution id (os-release ID)")
    codename: str = Field(
        "bookworm",
        pattern=r"^[a-z]+$",
        description="release codename (os-release VERSION_CODENAME)",
    )


class DriverConfig(_Model):
    """The NVIDIA driver.

    ``source``: ``cuda-repo`` = NVIDIA's CUDA apt repository with ``cuda-keyring``;
    ``ubuntu`` = Canonical's ``nvidia-driver-<branch>-server`` packages; ``debian`` = Debian
    non-free (one branch per release, see :data:`DEBIAN_DRIVER_BRANCHES`).
    ``install_kernel_modules: false`` installs only user space (``nvidia-smi``, NVML,
    persistenced) — what the CI target does, since it has no GPU and builds no DKMS module.
    """

    source: Literal["cuda-repo", "ubuntu", "debian"] = Field(
        "cuda-repo",
        description="cuda-repo: NVIDIA's CUDA apt repo + cuda-keyring; ubuntu: Canonical's "
        "-server packages; debian: Debian non-free",
    )
    branch: str = Field("570", pattern=r"^[0-9]{3}$", description="driver branch, e.g. '570'")
    flavour: Literal["open", "proprietary"] = Field(
        "open", description="open (nvidia-open kernel modules, Turing and newer) or proprietary"
    )
    install_kernel_modules: bool = Field(
        True, description="false: user space only (nvidia-smi, NVML, persistenced), no DKMS"
    )

    @field_validator("branch", mode="before")
    @classmethod
    def _branch_as_text(cls, value: Any) -> Any:
        # YAML reads `branch: 570` as an int; accept it and keep the string form.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class CudaConfig(_Model):
    """The CUDA toolkit (never the ``cuda``/``cuda-drivers`` meta-packages). ``null``: none."""

    version: str = Field(pattern=r"^[0-9]{2}\.[0-9]$", description="major.minor, e.g. '12.8'")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 12.8` is a YAML float; keep the text the user meant ("12.10" would be lost).
        return str(value) if isinstance(value, float) else value


class ContainerToolkitConfig(_Model):
    """NVIDIA Container Toolkit (repo, ``nvidia-ctk runtime configure``, CDI spec)."""

    enabled: bool = Field(False, description="install and configure the container toolkit")


class GpuSpec(_Model):
    """One GPU, identified by UUID and/or PCI bus id (never by index).

    ``min_w``/``max_w``: the card's power-limit range (``nvidia-smi
    --query-gpu=power.min_limit,power.max_limit``); when given, caps are checked against it.
    ``power_cap_w``: a cap given by hand (leave it out when ``power.profile`` is set).
    ``psu``: the PSU that feeds the card (for the budget check); required when ``psus``
    lists more than one.
    """

    uuid: str | None = Field(None, pattern=_UUID_RE, description="GPU-… UUID (nvidia-smi -L)")
    pci_bus_id: str | None = Field(
        None, pattern=_BUS_ID_RE, description="PCI bus id, e.g. 00000000:41:00.0"
    )
    name: str | None = Field(None, description="product name, informational")
    memory_total_mib: int | None = Field(None, gt=0, description="VRAM, MiB")
    power_cap_w: float | None = Field(None, gt=0, description="cap by hand, W (no profile)")
    min_w: float | None = Field(None, gt=0, description="lowest settable power limit, W")
    max_w: float | None = Field(None, gt=0, description="highest settable power limit, W")
    psu: str | None = Field(
        None,
        description="name of the PSU feeding the card (psus[].name); required with several PSUs",
    )
    numa_node: int | None = Field(None, ge=0, description="NUMA node of the card's PCIe root")

    @model_validator(mode="after")
    def _identified(self) -> GpuSpec:
        if self.uuid is None and self.pci_bus_id is None:
            raise ValueError("a GPU needs a uuid or a pci_bus_id (indices are not stable)")
        if self.min_w is not None and self.max_w is not None and self.min_w > self.max_w:
            raise ValueError(f"min_w {self.min_w:g} is above max_w {self.max_w:g}")
        return self


#: The inventory's ``psus[]`` / ``circuits[]`` entries are the core types themselves (one
#: definition of a PSU and a circuit); these names stay for existing imports.
PsuSpec = Psu
CircuitSpec = Circuit


class PowerConfig(_Model):
    """Power policy: ``profile`` (a tuner profile YAML: ``gpus[].uuid``, ``gpus[].cap_w``,
    ``rig.fingerprint``) or caps by hand in ``gpus[].power_cap_w`` — not both."""

    profile: str | None = Field(None, description="tuner profile YAML (rigforge sweep --out)")


class PcieConfig(_Model):
    """ASPM policy: ``performance`` (kernel cmdline ``pcie_aspm.policy=performance``, runtime
    policy, per-device ``link/*aspm`` off), ``default`` (kernel default), ``unmanaged``."""

    aspm: Literal["performance", "default", "unmanaged"] = Field(
        "performance", description="ASPM policy (see the section text)"
    )


class AffinityConfig(_Model):
    """Pin each GPU's IRQs to its local CPUs; keep irqbalance off them."""

    pin_irqs: bool = Field(True, description="pin each GPU's IRQs to its local CPUs at boot")
    irqbalance_ban: bool = Field(True, description="tell irqbalance to leave GPU IRQs alone")


class ServingModel(_Model):
    """A model served by hand (same shape as a plan's ``placements[]``).

    ``model``, ``args``: no control characters, ``"`` or ``\\`` (they are copied into a
    systemd unit); ``args`` carry no secrets (``--api-key``, ``--hf-token``, ``*key*=…``: use
    ``serving.api_key_file`` / ``secrets.hf_token_file``). ``gpus``: UUIDs or PCI bus ids.
    """

    model: UnitText = Field(min_length=1, description="weights: a Hugging Face id or a path")
    engine: Literal["vllm", "llama.cpp", "sglang"] = Field(
        "vllm", description="vllm, llama.cpp or sglang"
    )
    gpus: list[GpuId] = Field(min_length=1, description="GPU UUIDs or PCI bus ids")
    tp: int = Field(1, ge=1, description="tensor-parallel size")
    pp: int = Field(1, ge=1, description="pipeline-parallel size")
    numa_node: int | None = Field(None, ge=0, description="NUMA node to bind CPU and memory to")
    port: int = Field(ge=1, le=65535, description="TCP port of the OpenAI-compatible API")
    args: list[EngineArg] = Field(
        default_factory=list, description="extra engine arguments (no secrets)"
    )


class ServingConfig(_Model):
    """The serving stack: ``plan`` (a placement plan YAML) or ``models`` by hand.

    Services bind to ``bind``; a non-loopback bind needs ``open: true`` and an
    ``api_key_file``.
    """

    plan: str | None = Field(None, description="placement plan YAML (rigforge plan --out)")
    models: list[ServingModel] = Field(
        default_factory=list, description="models placed by hand (instead of a plan)"
    )
    bind: str = Field("127.0.0.1", description="address the serving units listen on")
    open: bool = Field(False, description="allow a non-loopback bind (needs api_key_file)")
    api_key_file: str | None = Field(
        None, description="file holding the API key (copied 0600; never inline)"
    )
    compute: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="where llama.cpp units compute: cpu renders -dev none -ngl 0 (a CPU build "
        "of llama-server, e.g. a host without GPUs such as CI); vLLM and SGLang need gpu",
    )
    llama_server: str | None = Field(
        None,
        description="a llama-server executable on the control machine (e.g. built from the "
        "llama.cpp sources) that the deploy installs as /usr/local/bin/llama-server",
    )

    @field_validator("bind")
    @classmethod
    def _bind_is_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1)") from None
        return value


class SecretsConfig(_Model):
    """Secrets, by file reference only (the file is copied to the host, mode 0600)."""

    hf_token_file: str | None = Field(
        None, description="file holding a Hugging Face token (copied 0600; never inline)"
    )


class KernelConfig(_Model):
    """Gate for writes to the running kernel (``/proc/sys``, ``/sys``, ``/proc/irq``).

    ``root``: the target path those trees are read and written under — ``/`` on a real box,
    a scratch tree on a test target.
    """

    apply_runtime: bool = Field(True, description="write runtime settings (sysfs, /proc/irq)")
    root: str = Field("/", description="where /sys and /proc are on the target")

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path on the target")
        return value


class TunerConfig(_Model):
    """rigforge installed on the host in its own venv (``venv``: a target path)."""

    install: bool = Field(True, description="install rigforge on the host")
    venv: str = Field("/opt/rigforge/venv", description="its virtualenv on the host")
    # For deploys/tune.py (a sweep run on the host over SSH); see the README's remote tuning.
    sim_rig: str | None = Field(
        None,
        description="simulated rig YAML (control machine) that deploys/tune.py uploads and "
        "sweeps instead of the host's GPUs (--rig nvml); for a host without GPUs, like CI",
    )
    sweep_args: list[str] = Field(
        default_factory=list,
        description="extra `rigforge sweep` arguments for deploys/tune.py, e.g. "
        "['--workload', 'batched']",
    )


class BaseConfig(_Model):
    """The base deploy: the service user and extra packages."""

    service_user: str = Field(
        "rigforge", pattern=r"^[a-z_][a-z0-9_-]*$", description="unprivileged user the units run as"
    )
    extra_packages: list[str] = Field(default_factory=list, description="more apt packages")


def _gpus_tag(value: Any) -> str:
    return "discover" if isinstance(value, str) else "gpu-list"


GpusField = Annotated[
    Annotated[Literal["discover"], Tag("discover")] | Annotated[list[GpuSpec], Tag("gpu-list")],
    Discriminator(_gpus_tag),
]


class HostConfig(_Model):
    """Everything the inventory says about one host. Only ``ssh.host`` is required."""

    ssh: SshConfig
    distro: DistroConfig = Field(default_factory=lambda: DistroConfig.model_validate({}))
    driver: DriverConfig = Field(default_factory=lambda: DriverConfig.model_validate({}))
    cuda: CudaConfig | None = None
    container_toolkit: ContainerToolkitConfig = Field(default_factory=ContainerToolkitConfig)
    gpus: GpusField = "discover"
    psus: list[PsuSpec] = Field(default_factory=list)
    circuits: list[CircuitSpec] = Field(default_factory=list)
    power: PowerConfig = Field(default_factory=PowerConfig)
    pcie: PcieConfig = Field(default_factory=PcieConfig)
    affinity: AffinityConfig = Field(default_factory=AffinityConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    kernel: KernelConfig = Field(default_factory=KernelConfig)
    tuner: TunerConfig = Field(default_factory=TunerConfig)
    base: BaseConfig = Field(default_factory=lambda: BaseConfig.model_validate({}))

    @property
    def gpu_list(self) -> list[GpuSpec]:
        """The listed GPUs; empty when ``gpus: discover``."""
        return [] if self.gpus == "discover" else list(self.gpus)

    def gpu(self, key: str) -> GpuSpec | None:
        """The listed GPU with this UUID or PCI bus id, or ``None``."""
        for gpu in self.gpu_list:
            if gpu.uuid == key:
                return gpu
            if (
                gpu.pci_bus_id
                and re.match(_BUS_ID_RE, key)
                and normalize_bus_id(gpu.pci_bus_id) == normalize_bus_id(key)
            ):
                return gpu
        return None


class Inventory(_Model):
    """A whole inventory file: ``hosts: {name: HostConfig}``."""

    hosts: dict[Annotated[str, Field(pattern=_NAME_RE)], HostConfig] = Field(min_length=1)


# --------------------------------------------------------------------------------------------
# Defaults and the deploy-side helper
# --------------------------------------------------------------------------------------------


def section_defaults() -> dict[str, Any]:
    """Every section's defaults as plain data (for ``@deploy(data_defaults=...)``).

    ``ssh`` has no default (its ``host`` is required) and is left out.
    """
    out: dict[str, Any] = {}
    for name, info in HostConfig.model_fields.items():
        if name == "ssh":
            continue
        value = info.get_default(call_default_factory=True)
        out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return out


def host_config(host: Any) -> HostConfig:
    """The validated :class:`HostConfig` of a pyinfra host (from ``host.data.rigforge``).

    Raises ``KeyError`` with a sentence when the host was not loaded through
    :mod:`inventory.loader` (its data then lacks the ``rigforge`` key).
    """
    data = host.data.get(DATA_KEY) if hasattr(host.data, "get") else None
    if data is None:
        raise KeyError(
            f"host {getattr(host, 'name', host)!r} has no {DATA_KEY!r} data; load the "
            "inventory through inventory.loader (pyinfra inventory/<name>.py ...)"
        )
    return HostConfig.model_validate(data)


# --------------------------------------------------------------------------------------------
# Cross-field checks (no I/O)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One validation problem: a YAML path (``hosts.ws1.gpus[2].power_cap_w``) and a sentence."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def render(self, file: str) -> str:
        """``file: path: message`` (``file:line:col: message`` when there is no path)."""
        where = file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def _fmt(value: float) -> str:
    return f"{value:g}"


def check_cap(path: str, cap_w: float, gpu: GpuSpec) -> list[Issue]:
    """A cap outside the GPU's known range (``min_w``..``max_w``). Units: W."""
    if gpu.max_w is not None and cap_w > gpu.max_w:
        return [Issue(path, f"{_fmt(cap_w)} is above this GPU's max {_fmt(gpu.max_w)}")]
    if gpu.min_w is not None and cap_w < gpu.min_w:
        return [Issue(path, f"{_fmt(cap_w)} is below this GPU's min {_fmt(gpu.min_w)}")]
    return []


def budget_model(cfg: HostConfig) -> BudgetModel:
    """The host's budget model keyed by index into ``cfg.gpu_list`` (:mod:`tuning.core.power`)."""
    return BudgetModel(
        psus=tuple(cfg.psus),
        circuits=tuple(cfg.circuits),
        gpu_psu={i: gpu.psu for i, gpu in enumerate(cfg.gpu_list)},
    )


def psu_loads_w(cfg: HostConfig, caps_w: Mapping[int, float]) -> dict[str, float]:
    """DC load per PSU: its ``platform_w`` plus the caps of the GPUs it feeds. Units: W.

    ``caps_w`` maps an index into ``cfg.gpu_list`` to that GPU's cap. A GPU without ``psu``
    counts against the only PSU when there is exactly one, and against none otherwise.
    """
    return budget_model(cfg).psu_dc_w(caps_w)


def check_budget(
    prefix: str, cfg: HostConfig, caps_w: Mapping[int, float], source: str
) -> list[Issue]:
    """PSU and circuit budgets the caps plus platform draw cannot fit (the core budget model).

    Per PSU: ``platform_w + Σ caps <= rating_w`` (DC). Per circuit:
    ``Σ (PSU DC load / efficiency) <= voltage_v * breaker_a * continuous_ratio`` (AC).
    ``source`` names where the caps came from, for the message.
    """
    issues: list[Issue] = []
    psu_index = {psu.name: i for i, psu in enumerate(cfg.psus)}
    circuit_index = {circuit.name: i for i, circuit in enumerate(cfg.circuits)}
    for over in budget_model(cfg).overloads(caps_w):
        if over.kind == "psu":
            psu = cfg.psus[psu_index[over.name]]
            issues.append(
                Issue(
                    f"{prefix}.psus[{psu_index[over.name]}].rating_w",
                    f"PSU {psu.name!r} would carry {_fmt(over.load_w)} W ({source} + platform_w "
                    f"{_fmt(psu.platform_w)}) but is rated {_fmt(psu.rating_w)} W; lower the "
                    "caps or move a GPU to another PSU",
                )
            )
        else:
            circuit = cfg.circuits[circuit_index[over.name]]
            issues.append(
                Issue(
                    f"{prefix}.circuits[{circuit_index[over.name]}]",
                    f"circuit {circuit.name!r} would draw {over.load_w:.0f} W at the wall "
                    f"({source} + platform, through PSU efficiency) but its continuous budget "
                    f"is {circuit.budget_w:.0f} W ({_fmt(circuit.voltage_v)} V × "
                    f"{_fmt(circuit.breaker_a)} A × {_fmt(circuit.continuous_ratio)}); lower "
                    "the caps or spread the PSUs over more circuits",
                )
            )
    return issues


def check_host(name: str, cfg: HostConfig) -> list[Issue]:
    """Cross-field checks of one validated host that read no file. Returns every issue."""
    prefix = f"hosts.{name}"
    issues: list[Issue] = []
    gpus = cfg.gpu_list

    # Identity: duplicates make "GPU by UUID" ambiguous.
    seen_uuid: dict[str, int] = {}
    seen_bus: dict[str, int] = {}
    for i, gpu in enumerate(gpus):
        if gpu.uuid is not None:
            key = gpu.uuid.lower()
            if key in seen_uuid:
                issues.append(
                    Issue(
                        f"{prefix}.gpus[{i}].uuid",
                        f"{gpu.uuid} is already used by gpus[{seen_uuid[key]}]; each GPU "
                        "must appear once",
                    )
                )
            else:
                seen_uuid[key] = i
        if gpu.pci_bus_id is not None:
            key = normalize_bus_id(gpu.pci_bus_id)
            if key in seen_bus:
                issues.append(
                    Issue(
                        f"{prefix}.gpus[{i}].pci_bus_id",
                        f"{gpu.pci_bus_id} is already used by gpus[{seen_bus[key]}]",
                    )
                )
            else:
                seen_bus[key] = i

    # Hand caps: inside each card's range.
    hand_caps: dict[int, float] = {}
    for i, gpu in enumerate(gpus):
        if gpu.power_cap_w is not None:
            hand_caps[i] = gpu.power_cap_w
            issues += check_cap(f"{prefix}.gpus[{i}].power_cap_w", gpu.power_cap_w, gpu)
    if hand_caps and cfg.power.profile is not None:
        issues.append(
            Issue(
                f"{prefix}.power.profile",
                "both a profile and hand caps (gpus[].power_cap_w) are set; keep one",
            )
        )

    # References between sections.
    psu_names = [p.name for p in cfg.psus]
    circuit_names = [c.name for c in cfg.circuits]
    issues += _duplicates(f"{prefix}.psus", psu_names, "PSU")
    issues += _duplicates(f"{prefix}.circuits", circuit_names, "circuit")
    for i, gpu in enumerate(gpus):
        if gpu.psu is None and len(psu_names) > 1:
            # With several PSUs a GPU without psu counts against no budget at all.
            issues.append(
                Issue(
                    f"{prefix}.gpus[{i}].psu",
                    f"is required when several PSUs are listed ({', '.join(psu_names)}): "
                    "name the PSU that feeds this card, or it counts against no budget",
                )
            )
        if gpu.psu is not None and gpu.psu not in psu_names:
            issues.append(
                Issue(f"{prefix}.gpus[{i}].psu", _unknown_ref(gpu.psu, psu_names, "psus"))
            )
    for i, psu in enumerate(cfg.psus):
        if psu.circuit is not None and psu.circuit not in circuit_names:
            issues.append(
                Issue(
                    f"{prefix}.psus[{i}].circuit",
                    _unknown_ref(psu.circuit, circuit_names, "circuits"),
                )
            )
    if hand_caps:
        issues += check_budget(prefix, cfg, hand_caps, "hand caps")

    # Driver and toolkit fit together and fit the distro.
    driver = cfg.driver
    if driver.flavour == "open" and int(driver.branch) < OPEN_MODULES_MIN_BRANCH:
        issues.append(
            Issue(
                f"{prefix}.driver.flavour",
                f"'open' needs driver branch {OPEN_MODULES_MIN_BRANCH} or newer (branch is "
                f"{driver.branch}); use flavour 'proprietary' or a newer branch",
            )
        )
    if driver.source == "debian":
        if cfg.distro.id != "debian":
            issues.append(
                Issue(
                    f"{prefix}.driver.source",
                    f"'debian' needs distro.id debian, not {cfg.distro.id!r}",
                )
            )
        else:
            shipped = DEBIAN_DRIVER_BRANCHES.get(cfg.distro.codename)
            if shipped is not None and driver.branch != shipped:
                issues.append(
                    Issue(
                        f"{prefix}.driver.branch",
                        f"Debian {cfg.distro.codename} ships driver branch {shipped}, not "
                        f"{driver.branch}; use branch {shipped!r} or source 'cuda-repo'",
                    )
                )
    if driver.source == "ubuntu" and cfg.distro.id != "ubuntu":
        issues.append(
            Issue(
                f"{prefix}.driver.source", f"'ubuntu' needs distro.id ubuntu, not {cfg.distro.id!r}"
            )
        )
    if cfg.cuda is not None:
        major = int(cfg.cuda.version.split(".")[0])
        need = CUDA_MIN_DRIVER_BRANCH.get(major)
        if need is None:
            issues.append(
                Issue(
                    f"{prefix}.cuda.version",
                    f"unknown CUDA major version {major}; known: "
                    + ", ".join(str(m) for m in CUDA_MIN_DRIVER_BRANCH),
                )
            )
        elif int(driver.branch) < need:
            issues.append(
                Issue(
                    f"{prefix}.cuda.version",
                    f"CUDA {cfg.cuda.version} needs driver branch {need} or newer, but "
                    f"driver.branch is {driver.branch}",
                )
            )

    # Serving: reachable only where the user said so.
    serving = cfg.serving
    if serving.plan is not None and serving.models:
        issues.append(
            Issue(f"{prefix}.serving.models", "both a plan and models by hand are set; keep one")
        )
    if not ipaddress.ip_address(serving.bind).is_loopback and not serving.open:
        issues.append(
            Issue(
                f"{prefix}.serving.bind",
                f"{serving.bind} is not a loopback address; set serving.open: true (with an "
                "api_key_file) to expose the models, or bind 127.0.0.1",
            )
        )
    if serving.open and serving.api_key_file is None:
        issues.append(
            Issue(
                f"{prefix}.serving.api_key_file", "serving.open is true but no api_key_file is set"
            )
        )
    issues += check_placements(
        f"{prefix}.serving.models", cfg, [m.model_dump() for m in serving.models], "models"
    )
    return issues


def check_placements(
    path: str, cfg: HostConfig, placements: list[dict[str, Any]], what: str
) -> list[Issue]:
    """Placements (hand models or a plan's) name listed GPUs and distinct ports, and hold
    nothing that could not be copied into a unit file (see :mod:`tuning.serving_checks`)."""
    issues: list[Issue] = []
    listed = cfg.gpus != "discover"
    ports: dict[int, int] = {}
    for i, placement in enumerate(placements):
        issues += _unit_safety(f"{path}[{i}]", placement)
        for j, uuid in enumerate(placement.get("gpus") or []):
            if gpu_id_problem(uuid):
                continue  # _unit_safety said so
            if listed and cfg.gpu(str(uuid)) is None:
                issues.append(
                    Issue(
                        f"{path}[{i}].gpus[{j}]",
                        f"{what} reference GPU {uuid} which is not in gpus "
                        f"({', '.join(g.uuid or g.pci_bus_id or '?' for g in cfg.gpu_list)})",
                    )
                )
        port = placement.get("port")
        if isinstance(port, int):
            if port in ports:
                issues.append(
                    Issue(f"{path}[{i}].port", f"port {port} is already used by [{ports[port]}]")
                )
            else:
                ports[port] = i
    entries = [(str(p.get("model", "")), _int_or_zero(p.get("replica"))) for p in placements]
    for first, later, slug in unit_name_collisions(entries):
        issues.append(
            Issue(
                f"{path}[{later}].model",
                f"{what}[{later}] and [{first}] would both be served by "
                f"rigforge-serve-{slug}.service (characters other than letters, digits, '.', "
                "'_' and '-' become '-'); rename one",
            )
        )
    return issues


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _unit_safety(path: str, placement: dict[str, Any]) -> list[Issue]:
    """Text that would inject unit directives, GPU ids that are not ids, secrets in args."""
    issues: list[Issue] = []
    for key in ("model", "weights"):
        value = placement.get(key)
        problem = text_problem(value) if value is not None else None
        if problem:
            issues.append(Issue(f"{path}.{key}", problem))
    gpus = placement.get("gpus") or []
    for j, gpu in enumerate(gpus if isinstance(gpus, list) else [gpus]):
        problem = gpu_id_problem(gpu)
        if problem:
            issues.append(Issue(f"{path}.gpus[{j}]", problem))
    for key in ("args", "extra_args"):
        args = placement.get(key) or []
        for j, arg in enumerate(args if isinstance(args, list) else [args]):
            problem = text_problem(arg) or secret_arg_problem(arg)
            if problem:
                issues.append(Issue(f"{path}.{key}[{j}]", problem))
    return issues


def _duplicates(path: str, names: list[str], what: str) -> list[Issue]:
    issues = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            issues.append(Issue(f"{path}[{i}].name", f"{what} {name!r} is defined twice"))
        seen.add(name)
    return issues


def _unknown_ref(name: str, known: list[str], section: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(repr(k) for k in known) or "none"
    return f"{name!r} is not defined in {section} (defined: {listed}){hint}"
