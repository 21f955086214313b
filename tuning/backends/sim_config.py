"""Rig files and GPU presets for the simulated rig: schema, loading, validation.

A rig file (``tuning/backends/rigs/*.yaml``) describes a box: host, rack (ambient and how
neighbours heat each other), the model the workloads run, circuits, PSUs, GPUs (each naming a
preset from ``tuning/backends/presets.yaml`` or from the rig file's own ``presets:`` map) and
topology. Everything is validated before a simulation starts; every problem is reported at
once, each as ``<file>: <yaml.path>: <what is wrong and how to fix it>``, in one
:class:`~tuning.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from inventory.fields import StrictModel, without_bad_keys
from tuning.backends.cpu_spec import RigCpuSpec, check_rig_cpu
from tuning.core.limits import (
    MAX_CPU_ID,
    MAX_GPU_MEMORY_MIB,
    MAX_GPU_POWER_W,
    MAX_NUMA_NODE,
    MAX_TEMP_C,
    MIN_TEMP_C,
)
from tuning.core.pcie import LINK_ORDER, link_rank
from tuning.core.power import Circuit, Psu
from tuning.core.yamlsafe import YamlDocument
from tuning.errors import ConfigError, problems_error, read_yaml_config, yaml_path
from tuning.fabric.schema import FabricSpec, check_fabric

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
WORKLOADS: tuple[str, ...] = ("decode", "prefill", "batched")
#: Bus 00–ff, device 00–1f, function 0–7 (PCI Local Bus Spec 3.0); the domain is required here.
_BUS_ID_RE = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]$")
_UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


_M = TypeVar("_M", bound=BaseModel)


class _Strict(StrictModel):
    """Unknown keys, control characters, booleans as numbers and ``.inf``/``.nan`` refused."""


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


class PowerSpec(_Strict):
    """Power-limit range and idle (P8) draw. Units: W. What a busy card draws is the power
    model's (:mod:`tuning.model.power`)."""

    min_w: float = Field(gt=0, le=MAX_GPU_POWER_W)
    default_w: float = Field(gt=0, le=MAX_GPU_POWER_W)
    max_w: float = Field(gt=0, le=MAX_GPU_POWER_W)
    idle_w: float = Field(gt=0, le=MAX_GPU_POWER_W)


class ThresholdSpec(_Strict):
    """Temperature thresholds. Units: °C; ``target_c`` null where the card reports none."""

    slowdown_c: float = Field(ge=MIN_TEMP_C, le=MAX_TEMP_C)
    shutdown_c: float = Field(ge=MIN_TEMP_C, le=MAX_TEMP_C)
    max_operating_c: float = Field(ge=MIN_TEMP_C, le=MAX_TEMP_C)
    target_c: float | None = Field(default=None, ge=MIN_TEMP_C, le=MAX_TEMP_C)


class PcieSpec(_Strict):
    """A PCIe link: generation and lane count."""

    gen: int = Field(ge=1, le=6)
    width: Literal[1, 2, 4, 8, 16]


class ClockSpec(_Strict):
    """SM clocks. Units: MHz."""

    max: float = Field(gt=0)
    idle: float = Field(gt=0)


class CoolingSpec(_Strict):
    """First-order thermal model: resistance at full fan (°C/W) and time constant (s)."""

    kind: Literal["open_air", "blower", "passive"]
    r_c_per_w: float = Field(gt=0, le=2)
    tau_s: float = Field(gt=0, le=3600)
    fan_min_pct: float | None = Field(default=None, ge=0, le=100)


class PresetSpec(_Strict):
    """One GPU model's published (or estimated, and then said so) numbers."""

    name: str
    memory_mib: int = Field(gt=0, le=MAX_GPU_MEMORY_MIB)
    power: PowerSpec
    thresholds: ThresholdSpec
    memory_bw_gbps: float = Field(gt=0)
    fp16_tensor_tflops: float = Field(gt=0)
    #: Dense tensor TFLOPS of the faster paths the card has (``fp8``, ``int8``, ``int4``),
    #: read by the step-time model (tuning/model/serving.py); absent: FP16 only.
    tensor_tflops: dict[Literal["fp8", "int8", "int4"], float] = Field(default_factory=dict)
    #: Peak INT32 tera-operations/s of the CUDA cores (SMs × INT32 lanes per SM × boost clock
    #: × 2, the whitepapers' multiply-add convention): what llama.cpp's matrix-vector decode
    #: kernels (dequantise + dp4a) run on. Absent: such steps are priced as memory-bound.
    int32_tops: float | None = Field(default=None, gt=0)
    pcie: PcieSpec
    sm_clock_mhz: ClockSpec
    cooling: CoolingSpec
    source: dict[str, str] = Field(min_length=1)


class PresetFile(_Strict):
    """``presets.yaml``: the presets."""

    presets: dict[str, PresetSpec]


# --------------------------------------------------------------------------------------------
# Rig files
# --------------------------------------------------------------------------------------------


class HostSpec(_Strict):
    cpu_model: str | None = None
    cpu_cores: int | None = Field(default=None, gt=0, le=MAX_CPU_ID + 1)
    memory_gib: float | None = Field(default=None, gt=0)
    numa_nodes: int | None = Field(default=None, gt=0, le=MAX_NUMA_NODE + 1)


#: Air's temperature rise per watt at one CFM of flow: the sensible-heat equation
#: q[BTU/h] = 1.08 × CFM × ΔT[°F] (ASHRAE Handbook—Fundamentals; 1.08 = 0.075 lb/ft³ × 60 min/h
#: × 0.24 BTU/(lb·°F)) gives ΔT[°C] = 3.412 W / (1.08 × CFM) / 1.8 = 1.755 × W / CFM.
AIR_C_PER_W_AT_1_CFM = 3.412 / 1.08 / 1.8


class CaseSpec(_Strict):
    """A closed case: its own air, warmed by everything inside it. ``airflow_cfm``: the air
    the case fans move through it (ft³/min); ``other_heat_w``: heat inside the case that is
    not a GPU's (CPU, board, drives) when it is not the PSUs' ``platform_w`` (None: their
    sum). Case air = ambient + 1.755 × (Σ GPU W + other W) / airflow_cfm (°C)."""

    airflow_cfm: float = Field(gt=0, le=5000)
    other_heat_w: float | None = Field(default=None, ge=0, le=20000)


class ChainSpec(_Strict):
    """Front-to-back airflow: the cards sit in series along the air path, the lowest slot
    at the intake, so each card's inlet is the case (or room) air plus 1.755 × Σ upstream
    W / ``airflow_cfm`` (°C) — the air that crossed the cards before it. ``airflow_cfm``:
    the air passing through the chain (ft³/min); ``intake``: which end the air enters,
    ``low_slot`` (default) or ``high_slot``."""

    airflow_cfm: float = Field(gt=0, le=5000)
    intake: Literal["low_slot", "high_slot"] = "low_slot"


class RackSpec(_Strict):
    """Air around the cards: ambient °C (the room). ``airflow``: ``mixed`` (default, open
    frames and desktop towers) — inlet rise per W of a neighbour one slot away (°C/W),
    multiplied by ``coupling_decay`` for each further slot of distance; ``front_to_back`` —
    a series chain (``chain``) where each card heats the ones behind it. ``case``: a closed
    case with its own air temperature (absent: the cards breathe room air)."""

    ambient_c: float = Field(default=25.0, ge=-10, le=60)
    coupling_c_per_w: float = Field(default=0.02, ge=0, le=0.5)
    coupling_decay: float = Field(default=0.35, ge=0, le=1)
    airflow: Literal["mixed", "front_to_back"] = "mixed"
    chain: ChainSpec | None = None
    case: CaseSpec | None = None

    @model_validator(mode="after")
    def _chain_matches_airflow(self) -> RackSpec:
        if self.airflow == "front_to_back" and self.chain is None:
            raise ValueError(
                "airflow front_to_back needs a chain: add rack.chain: {airflow_cfm: N} (the "
                "air through the cards, ft³/min)"
            )
        if self.airflow == "mixed" and self.chain is not None:
            raise ValueError(
                "rack.chain is only read with airflow: front_to_back; set airflow or drop chain"
            )
        return self


class ModelSpec(_Strict):
    """The model the workload classes run (sets absolute tokens/s)."""

    name: str = "27B dense, ~4.8 bits/weight GGUF"
    params_b: float = Field(default=27.0, gt=0)
    weights_gb: float = Field(default=16.5, gt=0)
    batch: int = Field(default=16, gt=0)


class GpuSpec(_Strict):
    """One GPU in the rig. ``pcie``: the negotiated link under load when below the preset's
    maximum (a riser); ``r_c_per_w``/``tau_s`` override the preset's cooling."""

    preset: str
    slot: int = Field(ge=0)
    bus_id: str
    uuid: str | None = None
    psu: str | None = None
    numa_node: int | None = Field(default=None, ge=0, le=MAX_NUMA_NODE)
    cpus: str | None = None
    pcie: PcieSpec | None = None
    riser: bool = False
    power_limit_w: float | None = Field(default=None, gt=0, le=MAX_GPU_POWER_W)
    persistence: bool = True
    r_c_per_w: float | None = Field(default=None, gt=0, le=2)
    tau_s: float | None = Field(default=None, gt=0, le=3600)


class LinkSpec(_Strict):
    a: int = Field(ge=0)
    b: int = Field(ge=0)
    link: str


class TopologySpec(_Strict):
    """Links between GPUs: explicit pairs, else ``same_numa``/``cross_numa`` by NUMA node."""

    same_numa: str = "PHB"
    cross_numa: str = "SYS"
    links: list[LinkSpec] = Field(default_factory=list)


class NoiseSpec(_Strict):
    """Measurement noise (Gaussian σ): W on power readings, relative on tokens/s."""

    power_w: float = Field(default=1.5, ge=0)
    throughput_rel: float = Field(default=0.01, ge=0, lt=1)


class RigSpec(_Strict):
    """A rig file."""

    name: str
    description: str = ""
    seed: int = 0
    step_s: float = Field(default=0.1, gt=0, le=1)
    host: HostSpec = Field(default_factory=HostSpec)
    cpu: RigCpuSpec | None = None
    rack: RackSpec = Field(default_factory=RackSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    circuits: list[Circuit] = Field(default_factory=list)
    psus: list[Psu] = Field(default_factory=list)
    gpus: list[GpuSpec] = Field(min_length=1)
    topology: TopologySpec = Field(default_factory=TopologySpec)
    fabric: FabricSpec | None = None
    presets: dict[str, PresetSpec] = Field(default_factory=dict)
    sources: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Loading and error reporting
# --------------------------------------------------------------------------------------------


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return yaml_path(loc), "is required; add it"
    if kind == "extra_forbidden":
        return yaml_path(loc), f"unknown key {loc[-1]!r}; remove it or fix its spelling"
    given = error.get("input")
    shown = f" (got {given!r})" if not isinstance(given, dict | list) else ""
    return yaml_path(loc), f"{error['msg']}{shown}"


def _raise(source: str, problems: list[tuple[str, str]], doc: YamlDocument | None = None) -> None:
    """One :class:`ConfigError` with a ``source:line: path: message`` line per problem (the line
    when ``doc`` knows where the path is), in file order."""
    if problems:
        raise problems_error(source, problems, doc)


def _validate(model: type[_M], data: Any, source: str) -> _M:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping of keys, got {data!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _raise(source, [_describe(e) for e in exc.errors()])
    raise AssertionError("unreachable")


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; ConfigError naming the file and line on bad syntax."""
    return read_yaml_config(path, "rig file").data


def _removed(path: str, removed: Sequence[str]) -> bool:
    return any(path == r or path.startswith((r + ".", r + "[")) for r in removed)


@cache
def load_presets() -> PresetFile:
    """The shipped presets (``presets.yaml``), validated once per process."""
    spec: PresetFile = _validate(PresetFile, read_yaml(PRESETS_FILE), PRESETS_FILE.name)
    problems: list[tuple[str, str]] = []
    for key, preset in spec.presets.items():
        problems += _check_preset(preset, f"presets.{key}")
    _raise(PRESETS_FILE.name, problems)
    return spec


def preset_names() -> list[str]:
    """Keys usable as ``gpus[i].preset`` in a rig file."""
    return sorted(load_presets().presets)


def _check_preset(preset: PresetSpec, path: str) -> list[tuple[str, str]]:
    p = preset.power
    problems = []
    if not p.min_w <= p.default_w <= p.max_w:
        problems.append(
            (
                f"{path}.power",
                f"need min_w <= default_w <= max_w, got {p.min_w:g}/{p.default_w:g}/{p.max_w:g} W",
            )
        )
    if p.idle_w >= p.default_w:
        problems.append((f"{path}.power.idle_w", "must be below default_w"))
    t = preset.thresholds
    if not t.max_operating_c <= t.slowdown_c <= t.shutdown_c:
        problems.append((f"{path}.thresholds", "need max_operating_c <= slowdown_c <= shutdown_c"))
    if t.target_c is not None and t.target_c > t.slowdown_c:
        problems.append((f"{path}.thresholds.target_c", "must not exceed slowdown_c"))
    if preset.cooling.kind != "passive" and preset.cooling.fan_min_pct is None:
        problems.append((f"{path}.cooling.fan_min_pct", "is required for a card with fans"))
    if preset.sm_clock_mhz.idle >= preset.sm_clock_mhz.max:
        problems.append((f"{path}.sm_clock_mhz.idle", "must be below max"))
    return problems


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``"0-31,64-95"`` → (0, …, 31, 64, …, 95). ValueError on bad syntax."""
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            if hi < lo:
                raise ValueError(f"range {part!r} runs backwards")
        else:
            lo = hi = int(part)
        if lo < 0 or hi > MAX_CPU_ID:
            # Checked before expanding: "0-2000000000" would not fit in memory.
            raise ValueError(f"CPU {hi if hi > MAX_CPU_ID else lo} is outside 0–{MAX_CPU_ID}")
        cpus.extend(range(lo, hi + 1))
    return tuple(cpus)


def _valid_link(link: str) -> bool:
    return link_rank(link) < len(LINK_ORDER)


def load_rig_spec(
    data: Any, source: str, doc: YamlDocument | None = None
) -> tuple[RigSpec, dict[str, PresetSpec]]:
    """Validate a rig document; return it with the presets it may use.

    Raises :class:`ConfigError` listing every problem with its YAML path (and its line when
    ``doc``, the parsed file, is given) — type errors and cross-field problems in one pass:
    keys with a bad value are left out for the cross-field checks, not the whole file.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping of keys, got {data!r}")
    problems: list[tuple[str, str]] = []
    removed: list[str] = []
    try:
        spec = RigSpec.model_validate(data)
    except ValidationError as exc:
        problems += [_describe(e) for e in exc.errors()]
        repaired, locs = without_bad_keys(RigSpec, data, exc.errors())
        if repaired is None:
            _raise(source, problems, doc)
            raise AssertionError("unreachable") from None
        spec, removed = repaired, [yaml_path(loc) for loc in locs]
    shipped = load_presets().presets
    presets = {**shipped, **spec.presets}
    first_stage = list(problems)
    problems = []
    for key, preset in spec.presets.items():
        problems += _check_preset(preset, f"presets.{key}")

    circuit_names = [c.name for c in spec.circuits]
    psu_names = [p.name for p in spec.psus]
    problems += _duplicates(circuit_names, "circuits", "name")
    problems += _duplicates(psu_names, "psus", "name")
    for i, psu in enumerate(spec.psus):
        if psu.circuit is None:
            problems.append(
                (f"psus[{i}].circuit", "is required in a rig file; name one of circuits")
            )
        elif psu.circuit not in circuit_names:
            problems.append((f"psus[{i}].circuit", _unknown("circuit", psu.circuit, circuit_names)))

    problems += _duplicates([g.slot for g in spec.gpus], "gpus", "slot")
    problems += _duplicates([g.bus_id.lower() for g in spec.gpus], "gpus", "bus_id")
    problems += _duplicates([g.uuid for g in spec.gpus], "gpus", "uuid")
    for i, gpu in enumerate(spec.gpus):
        path = f"gpus[{i}]"
        gpu_preset = presets.get(gpu.preset)
        if gpu_preset is None:
            problems.append((f"{path}.preset", _unknown("preset", gpu.preset, sorted(presets))))
        if not _BUS_ID_RE.match(gpu.bus_id):
            problems.append(
                (f"{path}.bus_id", f"{gpu.bus_id!r} is not a PCI bus id like '00000000:41:00.0'")
            )
        if gpu.uuid is not None and not _UUID_RE.match(gpu.uuid):
            problems.append(
                (
                    f"{path}.uuid",
                    f"{gpu.uuid!r} is not like 'GPU-xxxxxxxx-xxxx-xxxx-xxxx-"
                    "xxxxxxxxxxxx' (lower-case hex); or leave it out to derive one",
                )
            )
        if gpu.psu is not None and gpu.psu not in psu_names:
            problems.append((f"{path}.psu", _unknown("PSU", gpu.psu, psu_names)))
        if spec.psus and gpu.psu is None:
            problems.append((f"{path}.psu", "is required when the rig lists psus; name one"))
        if gpu.cpus is not None:
            try:
                parse_cpu_list(gpu.cpus)
            except ValueError as exc:
                problems.append(
                    (f"{path}.cpus", f"{gpu.cpus!r} is not a CPU list like '0-31,64-95' ({exc})")
                )
        if gpu_preset is None:
            continue
        preset = gpu_preset
        if gpu.pcie is not None and (
            gpu.pcie.gen > preset.pcie.gen or gpu.pcie.width > preset.pcie.width
        ):
            problems.append(
                (
                    f"{path}.pcie",
                    f"negotiated gen {gpu.pcie.gen} x{gpu.pcie.width} exceeds the "
                    f"card's gen {preset.pcie.gen} x{preset.pcie.width}; lower it",
                )
            )
        if gpu.power_limit_w is not None and not (
            preset.power.min_w <= gpu.power_limit_w <= preset.power.max_w
        ):
            problems.append(
                (
                    f"{path}.power_limit_w",
                    f"{gpu.power_limit_w:g} W is outside the preset's "
                    f"{preset.power.min_w:g}–{preset.power.max_w:g} W",
                )
            )

    n = len(spec.gpus)
    for key in ("same_numa", "cross_numa"):
        link = getattr(spec.topology, key)
        if not _valid_link(link):
            problems.append((f"topology.{key}", _bad_link(link)))
    seen: set[frozenset[int]] = set()
    for i, entry in enumerate(spec.topology.links):
        path = f"topology.links[{i}]"
        if entry.a >= n or entry.b >= n:
            problems.append((path, f"GPU index out of range; the rig has GPUs 0–{n - 1}"))
        if entry.a == entry.b:
            problems.append((path, "a link joins two different GPUs; fix a or b"))
        pair = frozenset((entry.a, entry.b))
        if pair in seen:
            problems.append((path, f"pair {entry.a}–{entry.b} is listed twice; keep one"))
        seen.add(pair)
        if not _valid_link(entry.link):
            problems.append((f"{path}.link", _bad_link(entry.link)))
    if spec.cpu is not None:
        problems += check_rig_cpu(
            spec.cpu,
            host_cores=spec.host.cpu_cores,
            host_numa_nodes=spec.host.numa_nodes,
            gpus=[(g.numa_node, g.cpus) for g in spec.gpus],
        )
    if spec.fabric is not None:
        links = [
            (g.pcie.gen, g.pcie.width)
            if g.pcie is not None
            else ((p.pcie.gen, p.pcie.width) if (p := presets.get(g.preset)) else None)
            for g in spec.gpus
        ]
        problems += check_fabric(spec.fabric, [g.riser for g in spec.gpus], links)
    problems = first_stage + [p for p in problems if not _removed(p[0], removed)]
    _raise(source, problems, doc)
    return spec, presets


def load_rig_file(path: Path) -> tuple[RigSpec, dict[str, PresetSpec]]:
    """Read and validate a rig file (errors name the file and line)."""
    doc = read_yaml_config(path, "rig file")
    return load_rig_spec(doc.data, _short(path), doc)


def _short(path: Path) -> str:
    parent = path.parent.name
    return f"{parent}/{path.name}" if parent else path.name


def _unknown(what: str, name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(known) if known else "none defined"
    return f"{name!r} is not a known {what}{hint}; known: {listed}"


def _bad_link(link: str) -> str:
    return f"{link!r} is not an nvidia-smi link name; use NV<n>, PIX, PXB, PHB, NODE or SYS"


def _duplicates(values: Sequence[Any], list_name: str, key: str) -> list[tuple[str, str]]:
    problems = []
    first: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in first:
            problems.append(
                (
                    f"{list_name}[{i}].{key}",
                    f"duplicate {key} {value!r}: {list_name}[{first[value]}] has it too; make "
                    "it unique",
                )
            )
        else:
            first[value] = i
    return problems
