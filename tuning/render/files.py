"""The :class:`FileSpec` of every templated file a deploy puts: path, template, context, mode.

The deploys put these on a host (``deploys.util.put_spec`` / ``put_pending``) and ``rigforge
loop`` renders them into a folder, so the two can never disagree about a file's content —
and ``rigforge loop`` needs no pyinfra. Defaults here are the deploys' defaults (their
``data_defaults`` refer to these constants).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inventory.schema import HostConfig
from tuning.core.checks import text_problem
from tuning.core.power import POWER_LIMIT_TOLERANCE_W
from tuning.core.profile import load_profile
from tuning.render.environment import render
from tuning.render.unit_text import UnsafeUnitValue

_BUS_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]")
_CPU_LIST = re.compile(r"\d{1,4}(?:-\d{1,4})?(?:,\d{1,4}(?:-\d{1,4})?)*")

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
        context={
            "retries": retries,
            "retry_delay_s": retry_delay_s,
            "tolerance_w": POWER_LIMIT_TOLERANCE_W,
        },
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


def planned_irq_cpus(config: HostConfig) -> dict[str, str]:
    """PCI bus id → kernel CPU list of each GPU's IRQs from the host's plan (``serving.plan``:
    its ``irq_cpus``, each GPU's unit's CPUs); empty without a plan or a CPU plan in it."""
    if not config.serving.plan:
        return {}
    from tuning.core.cpu import format_cpu_list
    from tuning.core.plan import load_plan

    return {i.gpu: format_cpu_list(i.cpus) for i in load_plan(config.serving.plan).irq_cpus}


HOUSEKEEPING_DROPIN = "/etc/systemd/system.conf.d/rigforge-housekeeping.conf"


def housekeeping_dropin(config: HostConfig) -> FileSpec | None:
    """The ``system.conf.d`` drop-in keeping system services on the host plan's housekeeping
    CPUs (``CPUAffinity=`` of the service manager, which every unit without its own
    inherits); ``None`` when the host has no plan or its plan no housekeeping CPUs."""
    if not config.serving.plan:
        return None
    from tuning.core.cpu import format_cpu_list
    from tuning.core.plan import load_plan

    cpus = load_plan(config.serving.plan).housekeeping_cpus
    if not cpus:
        return None
    return FileSpec(
        dest=HOUSEKEEPING_DROPIN,
        template="etc/systemd/system.conf.d/rigforge-housekeeping.conf.j2",
        context={"cpus": format_cpu_list(cpus).replace(",", " ")},
        name="system services on the housekeeping CPUs (system.conf.d)",
    )


def irq_pinning_files(
    config: HostConfig,
    *,
    script: str = IRQ_SCRIPT,
    irq_cpus: Mapping[str, str] | None = None,
) -> tuple[FileSpec, FileSpec]:
    """The IRQ-pinning script and the oneshot unit that runs it at every boot.

    ``irq_cpus``: PCI bus id → CPU list for each GPU the CPU plan placed (default: from the
    host's plan, :func:`planned_irq_cpus`); a GPU not listed gets its ``local_cpulist``.
    Both are checked here (bus id ``dddd:bb:dd.f``, a CPU list) before they reach the script.
    """
    wanted = planned_irq_cpus(config) if irq_cpus is None else dict(irq_cpus)
    checked: list[tuple[str, str]] = []
    for bus, cpus in sorted(wanted.items()):
        if not _BUS_ID.fullmatch(bus) or not _CPU_LIST.fullmatch(cpus):
            raise UnsafeUnitValue(f"IRQ CPUs {cpus!r} of GPU {bus!r}: not a bus id and CPU list")
        checked.append((bus, cpus))
    return (
        FileSpec(
            dest=script,
            template="usr/local/libexec/rigforge-irq-affinity.sh.j2",
            context={"irq_cpus": checked},
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


#: A CUDA toolkit version as the profile.d script may carry it (``12.8``): the script is
#: sourced by every login shell, root's too, so nothing but digits and one dot reaches it.
_CUDA_VERSION = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}$")


def cuda_profile(version: str) -> FileSpec:
    """``/etc/profile.d/rigforge-cuda.sh``: ``/usr/local/cuda-<version>/bin`` on PATH.

    Raises :class:`~tuning.render.UnsafeUnitValue` unless ``version`` is ``major.minor``.
    """
    if not _CUDA_VERSION.fullmatch(str(version)):
        raise UnsafeUnitValue(
            f"CUDA version {str(version)!r} is not major.minor (like 12.8); it would be copied "
            "into a script every login shell runs"
        )
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


# --- monitoring (deploys/monitoring.py) --------------------------------------------------

EXPORTER_UNIT = "rigforge-exporter.service"
ENFORCE_SERVICE = "rigforge-enforce-caps.service"
ENFORCE_TIMER = "rigforge-enforce-caps.timer"
#: Where the monitoring deploy puts the plan for the exporter (the profile: PROFILE_TARGET).
PLAN_TARGET = "/etc/rigforge/plan.yaml"
#: root's state dir (``tuning.apply.state.SYSTEM_STATE_DIR``): the enforcement record lives
#: there, written by the root timer, read by the unprivileged exporter.
MONITORING_STATE_DIR = "/var/lib/rigforge/state"
ENFORCEMENT_RECORD = f"{MONITORING_STATE_DIR}/enforce.json"
#: A simulated rig's load/room control file (CI drives the rig hot through it).
SIM_CONTROL = "/var/lib/rigforge/sim-control.json"
RULES_DEST = "/etc/prometheus/rules/rigforge.rules.yml"
#: How often enforcement re-checks the caps. Shorter than the cap-drift alert's ``for: 10m``,
#: so that alert fires only when enforcement is off or failing. Units: min.
ENFORCE_INTERVAL_MIN = 5
#: node-exporter's textfile collector folder in Debian's prometheus-node-exporter (root:root
#: 0755 in the package; ``--collector.textfile.directory``), and rigforge's file in it.
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
TEXTFILE_PATH = f"{TEXTFILE_DIR}/rigforge.prom"
TEXTFILE_SERVICE = "rigforge-textfile.service"
TEXTFILE_TIMER = "rigforge-textfile.timer"


def monitored_rig(config: HostConfig) -> str:
    """The rig spec the exporter and the enforcement timer read: the host's GPUs.

    A host whose GPUs are a simulated rig (``tuner.sim_rig``, CI) is watched on the copy the
    boot unit applies the profile to (:data:`SIM_RIG_TARGET`), so the exporter sees the caps
    ``rigforge apply`` set there; else ``monitoring.rig`` (``nvml``, or ``sim:NAME``).
    """
    return SIM_RIG_TARGET if config.tuner.sim_rig else config.monitoring.rig


def _exporter_sources(config: HostConfig, *, profile: bool, plan: bool) -> dict[str, Any]:
    """What every ``rigforge exporter`` unit reads (``rigforge-exporter-sources.inc.j2``)."""
    rig = monitored_rig(config)
    return {
        "venv": config.tuner.venv,
        "rig": rig,
        "state_dir": MONITORING_STATE_DIR,
        "enforcement_state": ENFORCEMENT_RECORD,
        "profile": PROFILE_TARGET if profile else None,
        "plan": PLAN_TARGET if plan else None,
        "sim": rig != "nvml",
        "sim_control": SIM_CONTROL,
    }


def exporter_unit(config: HostConfig, *, profile: bool, plan: bool) -> FileSpec:
    """``rigforge-exporter.service`` (``profile``/``plan``: the deploy put them on the host)."""
    import ipaddress

    m = config.monitoring
    address = m.listen.rpartition(":")[0].strip("[]")
    return FileSpec(
        dest=f"/etc/systemd/system/{EXPORTER_UNIT}",
        template=f"etc/systemd/system/{EXPORTER_UNIT}.j2",
        context={
            **_exporter_sources(config, profile=profile, plan=plan),
            "user": config.base.service_user,
            "listen": m.listen,
            "opened": not ipaddress.ip_address(address).is_loopback,
        },
        name=f"Exporter unit ({m.listen})",
    )


def _service_and_timer(
    service: str, timer: str, context: dict[str, Any], name: str
) -> list[FileSpec]:
    """A oneshot and the timer that starts it, both from ``context``, each at
    ``/etc/systemd/system/<unit>``; ``name`` says what they are, ``{kind}`` being
    ``service`` or ``timer``."""
    return [
        FileSpec(
            dest=f"/etc/systemd/system/{unit}",
            template=f"etc/systemd/system/{unit}.j2",
            context=context,
            name=name.format(kind=unit.rsplit(".", 1)[1]),
        )
        for unit in (service, timer)
    ]


def textfile_units(config: HostConfig, *, profile: bool, plan: bool) -> list[FileSpec]:
    """``rigforge-textfile.service`` (one scrape to :data:`TEXTFILE_PATH`) and its timer."""
    context = {
        **_exporter_sources(config, profile=profile, plan=plan),
        "textfile": TEXTFILE_PATH,
        "textfile_dir": TEXTFILE_DIR,
        "interval_s": config.monitoring.textfile_interval_s,
    }
    name = f"Textfile collector {{kind}} ({TEXTFILE_PATH})"
    return _service_and_timer(TEXTFILE_SERVICE, TEXTFILE_TIMER, context, name)


def node_exporter_default(config: HostConfig) -> FileSpec:
    """``/etc/default/prometheus-node-exporter``: its listen address and textfile folder."""
    return FileSpec(
        dest="/etc/default/prometheus-node-exporter",
        template="etc/default/prometheus-node-exporter.j2",
        context={"listen": config.monitoring.node_exporter_listen, "textfile_dir": TEXTFILE_DIR},
        name=f"node-exporter listens on {config.monitoring.node_exporter_listen}",
    )


def enforce_units(config: HostConfig) -> list[FileSpec]:
    """The oneshot that re-applies the profile's caps (``--record``) and its timer."""
    context = {
        "venv": config.tuner.venv,
        "profile": PROFILE_TARGET,
        "rig": monitored_rig(config),
        "enforcement_state": ENFORCEMENT_RECORD,
        "interval_min": ENFORCE_INTERVAL_MIN,
    }
    return _service_and_timer(ENFORCE_SERVICE, ENFORCE_TIMER, context, "Cap enforcement {kind}")


def engine_targets(config: HostConfig) -> list[dict[str, Any]]:
    """Each placed model's engine (port, model, unit, engine) from the plan, for scraping."""
    if not config.serving.plan:
        return []
    from tuning.core.plan import load_plan
    from tuning.serving import unit_name

    return [
        {"port": p.port, "model": p.model, "unit": unit_name(p), "engine": p.engine}
        for p in load_plan(config.serving.plan).placements
    ]


def prometheus_files(config: HostConfig) -> list[FileSpec]:
    """``/etc/prometheus/prometheus.yml`` (jobs, rules) and ``/etc/default/prometheus``."""
    return [
        FileSpec(
            dest="/etc/prometheus/prometheus.yml",
            template="etc/prometheus/prometheus.yml.j2",
            context={
                "interval_s": config.monitoring.scrape_interval_s,
                "prometheus_listen": config.monitoring.prometheus_listen,
                "exporter": config.monitoring.listen if config.monitoring.exporter else None,
                "node_exporter": (
                    config.monitoring.node_exporter_listen
                    if config.monitoring.node_exporter
                    else None
                ),
                "engines": engine_targets(config),
            },
            name="Prometheus scrape config (exporter, engines, rules)",
        ),
        FileSpec(
            dest="/etc/default/prometheus",
            template="etc/default/prometheus.j2",
            context={"listen": config.monitoring.prometheus_listen},
            name=f"Prometheus listens on {config.monitoring.prometheus_listen}",
        ),
    ]


# --------------------------------------------------------------------------------------------
# CPU power and latency (deploys/cpu.py)
# --------------------------------------------------------------------------------------------

CPU_TMPFILES = "/etc/tmpfiles.d/rigforge-cpu.conf"
CPU_SYSCTL = "/etc/sysctl.d/90-rigforge-cpu.conf"
_IDLE_DIR = re.compile(r"state\d{1,2}")


@dataclass(frozen=True)
class IdleStateOff:
    """An idle state the boot file disables: its ``stateN`` folder, name and exit latency."""

    dir: str
    name: str
    latency_us: int


def numa_balancing_on(config: HostConfig) -> bool:
    """``kernel.numa_balancing`` wanted: ``cpu.numa_balancing``; ``auto`` is off whenever the
    host serves (its units are bound with ``NUMAPolicy=bind``), on otherwise."""
    mode = config.cpu.numa_balancing
    if mode == "auto":
        return not (config.serving.plan or config.serving.models)
    return mode == "on"


def cpu_boot_files(
    config: HostConfig, disabled_states: Sequence[IdleStateOff] = ()
) -> tuple[FileSpec, FileSpec]:
    """The tmpfiles.d file (governor, idle states, THP) and the sysctl.d file (swappiness,
    NUMA balancing) that apply the ``cpu:`` section at every boot.

    ``disabled_states``: the idle states whose exit latency exceeds the limit on this host
    (read at deploy time from its cpuidle files).
    """
    for state in disabled_states:
        if not _IDLE_DIR.fullmatch(state.dir) or text_problem(state.name, quotes=True):
            raise UnsafeUnitValue(f"idle state {state.dir!r} ({state.name!r}) cannot go in a file")
    cpu = config.cpu
    return (
        FileSpec(
            dest=CPU_TMPFILES,
            template="etc/tmpfiles.d/rigforge-cpu.conf.j2",
            context={
                "governor": cpu.governor,
                "thp": cpu.transparent_hugepages,
                "disabled_states": list(disabled_states),
                "max_latency_us": cpu.max_cstate_latency_us,
            },
            name="CPU settings at boot (tmpfiles.d)",
        ),
        FileSpec(
            dest=CPU_SYSCTL,
            template="etc/sysctl.d/90-rigforge-cpu.conf.j2",
            context={
                "swappiness": cpu.swappiness,
                "numa_balancing": 1 if numa_balancing_on(config) else 0,
            },
            name="CPU sysctls at boot (sysctl.d)",
        ),
    )
