"""Cross-field checks of one inventory host (no I/O): caps inside each GPU's range, PSU and
circuit budgets, driver/CUDA/distro compatibility, duplicate ids, references between sections,
serving units and placements.

Types, ranges and unknown keys are the schema's (:mod:`inventory.schema`); checks that read
files (profile, plan, existence) live in :mod:`inventory.validate`. No pyinfra, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inventory.fields import (
    MAX_PORT,
    MIN_SERVICE_PORT,
)
from inventory.schema import GpuSpec, HostConfig
from tuning.core.bus import normalize_bus_id
from tuning.core.checks import (
    gpu_id_problem,
    secret_arg_problem,
    text_problem,
    unit_name_collisions,
)
from tuning.core.power import BudgetModel

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
            reserved = f" + reserved_w {_fmt(circuit.reserved_w)}" if circuit.reserved_w > 0 else ""
            fix = "lower the caps or spread the PSUs over more circuits"
            if circuit.reserved_w > 0:
                fix += " (or move the other loads of reserved_w off this circuit)"
            issues.append(
                Issue(
                    f"{prefix}.circuits[{circuit_index[over.name]}]",
                    f"circuit {circuit.name!r} would draw {over.load_w:.0f} W at the wall "
                    f"({source} + platform, through PSU efficiency{reserved}) but its "
                    f"continuous budget is {circuit.budget_w:.0f} W ({_fmt(circuit.voltage_v)} V "
                    f"× {_fmt(circuit.breaker_a)} A × {_fmt(circuit.continuous_ratio)}); {fix}",
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

    # The service user is not the login: the base deploy locks its shell and home.
    if cfg.base.service_user == cfg.ssh.user:
        issues.append(
            Issue(
                f"{prefix}.base.service_user",
                f"{cfg.base.service_user!r} is also ssh.user; the base deploy gives the service "
                "user no shell (usermod -s /usr/sbin/nologin), which would lock the login out: "
                "use a separate user such as 'rigforge'",
            )
        )

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
    issues += _monitoring(prefix, cfg)
    return issues


def _monitoring(prefix: str, cfg: HostConfig) -> list[Issue]:
    """The exporter reachable only where the user said so; what needs a profile or rigforge
    on the host has them."""
    issues: list[Issue] = []
    monitoring = cfg.monitoring
    for key, listen in (
        ("listen", monitoring.listen),
        ("prometheus_listen", monitoring.prometheus_listen),
        ("node_exporter_listen", monitoring.node_exporter_listen),
    ):
        address = listen.rpartition(":")[0].strip("[]")
        if not ipaddress.ip_address(address).is_loopback and not monitoring.open:
            issues.append(
                Issue(
                    f"{prefix}.monitoring.{key}",
                    f"{listen} is beyond this machine; set monitoring.open: true to "
                    "expose the metrics, or listen on 127.0.0.1",
                )
            )
    if cfg.tuner.sim_rig and monitoring.rig != "nvml":
        issues.append(
            Issue(
                f"{prefix}.monitoring.rig",
                f"{monitoring.rig}: this host's GPUs are tuner.sim_rig ({cfg.tuner.sim_rig}), "
                "which the exporter and the enforcement timer watch; drop monitoring.rig",
            )
        )
    if cfg.power.enforce and cfg.power.profile is None:
        issues.append(
            Issue(
                f"{prefix}.power.enforce",
                "re-applies a tuning profile's caps: set power.profile (rigforge sweep --out)",
            )
        )
    for path, wanted in (
        ("monitoring.exporter", monitoring.exporter),
        ("monitoring.textfile", monitoring.textfile),
        ("power.enforce", cfg.power.enforce),
    ):
        if wanted and not cfg.tuner.install:
            issues.append(
                Issue(f"{prefix}.{path}", "runs rigforge on the host: set tuner.install: true")
            )
    return issues


def check_placements(
    path: str, cfg: HostConfig, placements: list[dict[str, Any]], what: str
) -> list[Issue]:
    """Placements (hand models or a plan's) name listed GPUs and distinct ports, and hold
    nothing that could not be copied into a unit file (see :mod:`tuning.core.checks`)."""
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
        if port is not None and (
            isinstance(port, bool)
            or not isinstance(port, int)
            or not MIN_SERVICE_PORT <= port <= MAX_PORT
        ):
            issues.append(
                Issue(
                    f"{path}[{i}].port",
                    f"{port!r} is not a port a serving unit may use ({MIN_SERVICE_PORT}–"
                    f"{MAX_PORT}: lower ports need root)",
                )
            )
        elif isinstance(port, int):
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
            issues.append(
                Issue(f"{path}[{i}].name", f"duplicate {what} {name!r}: defined twice; rename one")
            )
        seen.add(name)
    return issues


def _unknown_ref(name: str, known: list[str], section: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(repr(k) for k in known) or "none"
    return f"{name!r} is not defined in {section} (defined: {listed}){hint}"
