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
PSU/circuit budgets, references between sections) live in
:func:`inventory.host_checks.check_host`; checks that read files (profile, plan, existence)
live in :mod:`inventory.validate`.

This module imports neither pyinfra nor anything that touches a host.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from inventory.fields import (
    BindAddress,
    CommandArg,
    DebianPackage,
    EngineArg,
    GpuId,
    ListenAddress,
    LoginName,
    ServicePort,
    ServiceUser,
    SshHost,
    StrictModel,
    TargetPath,
    UnitText,
)
from tuning.core.bus import normalize_bus_id
from tuning.core.checks import (
    BUS_ID_RE,
    UUID_RE,
)
from tuning.core.limits import MAX_GPU_MEMORY_MIB, MAX_GPU_POWER_W, MAX_NUMA_NODE
from tuning.core.power import Circuit, Psu
from tuning.core.yamlsafe import source_text

__all__ = [
    "DATA_KEY",
    "AffinityConfig",
    "BaseConfig",
    "ContainerToolkitConfig",
    "CudaConfig",
    "DistroConfig",
    "DriverConfig",
    "GpuSpec",
    "HostConfig",
    "Inventory",
    "KernelConfig",
    "PcieConfig",
    "PowerConfig",
    "SecretsConfig",
    "ServingConfig",
    "ServingModel",
    "SshConfig",
    "TunerConfig",
    "host_config",
    "section_defaults",
]

#: The one host-data key that holds the validated host config (``HostConfig.model_dump``).
DATA_KEY = "rigforge"

#: Tag names of the ``gpus`` union; the validator drops them from YAML paths.
UNION_TAGS = frozenset({"gpu-list", "discover"})

_UUID_RE = UUID_RE
_BUS_ID_RE = BUS_ID_RE
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Model(StrictModel):
    """Base for every inventory section: unknown keys are errors; values are immutable;
    control characters, booleans as numbers and non-finite numbers are refused."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class SshConfig(_Model):
    """How pyinfra reaches the host. ``key``/``known_hosts`` are control-machine paths."""

    host: SshHost = Field(description="IP address or RFC 1123 host name of the host")
    port: int = Field(22, ge=1, le=65535, description="SSH port")
    user: LoginName = Field("root", description="SSH user (a POSIX user name)")
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

    version: str = Field(
        pattern=r"^[0-9]{2}\.[0-9]{1,2}$", description="major.minor, e.g. '12.8' or '12.10'"
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 12.10` is a YAML float (12.1); the loader keeps the text as written.
        return source_text(value) if isinstance(value, float) else value


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
    memory_total_mib: int | None = Field(None, gt=0, le=MAX_GPU_MEMORY_MIB, description="VRAM, MiB")
    power_cap_w: float | None = Field(
        None, gt=0, le=MAX_GPU_POWER_W, description="cap by hand, W (no profile)"
    )
    min_w: float | None = Field(
        None, gt=0, le=MAX_GPU_POWER_W, description="lowest settable power limit, W"
    )
    max_w: float | None = Field(
        None, gt=0, le=MAX_GPU_POWER_W, description="highest settable power limit, W"
    )
    psu: str | None = Field(
        None,
        description="name of the PSU feeding the card (psus[].name); required with several PSUs",
    )
    numa_node: int | None = Field(
        None, ge=0, le=MAX_NUMA_NODE, description="NUMA node of the card's PCIe root"
    )

    @model_validator(mode="after")
    def _identified(self) -> GpuSpec:
        if self.uuid is None and self.pci_bus_id is None:
            raise ValueError("a GPU needs a uuid or a pci_bus_id (indices are not stable)")
        if self.min_w is not None and self.max_w is not None and self.min_w > self.max_w:
            raise ValueError(f"min_w {self.min_w:g} is above max_w {self.max_w:g}")
        return self


class PowerConfig(_Model):
    """Power policy: ``profile`` (a tuner profile YAML: ``gpus[].uuid``, ``gpus[].cap_w``,
    ``rig.fingerprint``) or caps by hand in ``gpus[].power_cap_w`` — not both."""

    profile: str | None = Field(None, description="tuner profile YAML (rigforge sweep --out)")
    enforce: bool = Field(
        False,
        description="a timer re-applies the profile's caps when they revert (counted as a metric)",
    )


class PcieConfig(_Model):
    """ASPM policy: ``performance`` (kernel cmdline ``pcie_aspm.policy=performance``, runtime
    policy, per-device ``link/*aspm`` off), ``default`` (kernel default), ``unmanaged``."""

    aspm: Literal["performance", "default", "unmanaged"] = Field(
        "performance", description="ASPM policy (see the section text)"
    )


class AffinityConfig(_Model):
    """Pin each GPU's IRQs to its unit's CPUs (the plan's ``irq_cpus``), or to its local CPUs
    when the plan does not list it; keep irqbalance off them."""

    pin_irqs: bool = Field(
        True, description="pin each GPU's IRQs to its unit's (else its local) CPUs at boot"
    )
    irqbalance_ban: bool = Field(True, description="tell irqbalance to leave GPU IRQs alone")
    housekeeping_services: bool = Field(
        False,
        description="keep system services on the plan's housekeeping CPUs (a system.conf.d "
        "CPUAffinity= drop-in; read at boot)",
    )


class CpuConfig(_Model):
    """The CPU's own power and latency (``enabled: true`` to manage them; off by default).

    Applied at deploy (written under ``kernel.root``) and at every boot (a ``tmpfiles.d``
    and a ``sysctl.d`` file); the values found before the first change are recorded on the
    host (``/var/lib/rigforge/cpu-defaults``) and written back when ``enabled`` turns false.
    Defaults follow tuned's ``accelerator-performance`` profile (``governor=performance``,
    ``force_latency=99``; tuned's ``profiles/accelerator-performance/tuned.conf``) and its
    ``throughput-performance`` base (``vm.swappiness=10``).
    """

    enabled: bool = Field(False, description="manage governor, C-states, THP and sysctls")
    governor: Literal["performance", "schedutil", "ondemand", "powersave"] = Field(
        "performance", description="cpufreq scaling governor of every CPU"
    )
    max_cstate_latency_us: int | None = Field(
        99,
        ge=0,
        le=100_000,
        description="disable idle states whose exit latency exceeds this (tuned's "
        "force_latency); null leaves C-states alone",
    )
    transparent_hugepages: Literal["always", "madvise", "never"] = Field(
        "madvise", description="/sys/kernel/mm/transparent_hugepage/enabled"
    )
    swappiness: int = Field(10, ge=0, le=200, description="vm.swappiness")
    numa_balancing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="kernel.numa_balancing; auto: off when serving units are bound to a "
        "NUMA node (they are, whenever they are served), on otherwise",
    )


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
    tp: int = Field(1, ge=1, le=64, description="tensor-parallel size")
    pp: int = Field(1, ge=1, le=64, description="pipeline-parallel size")
    numa_node: int | None = Field(
        None, ge=0, le=MAX_NUMA_NODE, description="NUMA node to bind CPU and memory to"
    )
    port: ServicePort = Field(description="TCP port of the OpenAI-compatible API (1024–65535)")
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
    bind: BindAddress = Field(
        "127.0.0.1", description="IP address the serving units listen on (no scope id)"
    )
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
    root: TargetPath = Field(
        "/", description="where /sys and /proc are on the target (absolute, normalised)"
    )


class TunerConfig(_Model):
    """rigforge installed on the host in its own venv (``venv``: a target path)."""

    install: bool = Field(True, description="install rigforge on the host")
    venv: TargetPath = Field(
        "/opt/rigforge/venv", description="its virtualenv on the host (absolute, normalised)"
    )
    # For deploys/tune.py (a sweep run on the host over SSH); see the README's remote tuning.
    sim_rig: str | None = Field(
        None,
        description="simulated rig YAML (control machine) that deploys/tune.py uploads and "
        "sweeps instead of the host's GPUs (--rig nvml); for a host without GPUs, like CI",
    )
    sweep_args: list[CommandArg] = Field(
        default_factory=list,
        description="extra `rigforge sweep` arguments for deploys/tune.py, e.g. "
        "['--workload', 'batched'] (no secrets or control characters; each is shell-quoted)",
    )


class BaseConfig(_Model):
    """The base deploy: the service user and extra packages."""

    service_user: ServiceUser = Field(
        "rigforge", description="unprivileged user the units run as (never root)"
    )
    extra_packages: list[DebianPackage] = Field(
        default_factory=list, description="more apt packages (Debian package names)"
    )


def _gpus_tag(value: Any) -> str:
    return "discover" if isinstance(value, str) else "gpu-list"


GpusField = Annotated[
    Annotated[Literal["discover"], Tag("discover")] | Annotated[list[GpuSpec], Tag("gpu-list")],
    Discriminator(_gpus_tag),
]


class MonitoringConfig(_Model):
    """``rigforge exporter`` as a hardened unit; optionally Prometheus from Debian with the
    scrape config and the alert rules. The exporter listens on localhost unless ``open``
    (checked with the other cross-field rules in :mod:`inventory.host_checks`)."""

    exporter: bool = Field(False, description="install rigforge-exporter.service")
    listen: ListenAddress = Field(
        "127.0.0.1:9835", description="IP:PORT the exporter serves /metrics on"
    )
    open: bool = Field(False, description="allow a non-loopback listen address")
    rig: str = Field(
        "nvml",
        pattern=r"^(nvml|sim:[A-Za-z0-9_-]+)$",
        description="nvml, or sim:NAME (CI); a host with tuner.sim_rig is watched on that rig",
    )
    prometheus: bool = Field(
        False, description="install Debian's prometheus with the scrape config and the rules"
    )
    prometheus_listen: ListenAddress = Field(
        "127.0.0.1:9090",
        description="IP:PORT Debian's prometheus serves its UI and API on (localhost unless open)",
    )
    scrape_interval_s: int = Field(15, ge=1, le=3600, description="Prometheus scrape interval")
    textfile: bool = Field(
        False,
        description="write the metrics to /var/lib/prometheus/node-exporter/rigforge.prom "
        "(node-exporter textfile collector) from a timer, beside or instead of the exporter",
    )
    textfile_interval_s: int = Field(
        60, ge=10, le=3600, description="how often the textfile timer rewrites rigforge.prom"
    )
    node_exporter: bool = Field(
        False, description="install Debian's prometheus-node-exporter (reads the textfile)"
    )
    node_exporter_listen: ListenAddress = Field(
        "127.0.0.1:9100",
        description="IP:PORT node-exporter serves on (its default port; localhost unless open)",
    )


class HostConfig(_Model):
    """Everything the inventory says about one host. Only ``ssh.host`` is required."""

    ssh: SshConfig
    distro: DistroConfig = Field(default_factory=lambda: DistroConfig.model_validate({}))
    driver: DriverConfig = Field(default_factory=lambda: DriverConfig.model_validate({}))
    cuda: CudaConfig | None = None
    container_toolkit: ContainerToolkitConfig = Field(default_factory=ContainerToolkitConfig)
    gpus: GpusField = "discover"
    # The core types themselves: one definition of a PSU and a circuit (tuning.core.power).
    psus: list[Psu] = Field(default_factory=list)
    circuits: list[Circuit] = Field(default_factory=list)
    power: PowerConfig = Field(default_factory=PowerConfig)
    pcie: PcieConfig = Field(default_factory=PcieConfig)
    affinity: AffinityConfig = Field(default_factory=AffinityConfig)
    cpu: CpuConfig = Field(default_factory=CpuConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    kernel: KernelConfig = Field(default_factory=KernelConfig)
    tuner: TunerConfig = Field(default_factory=TunerConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
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
