"""The workload description: what a load runs, on which GPUs, how (docs/workload.md).

A :class:`WorkloadSpec` is a model (an :class:`inventory.models.ModelSpec`), an engine, a
split (``tp × pp`` over named GPUs), the sequences in flight (``concurrency``), the tokens each
holds (``context``) and the ``phase`` (``decode`` | ``prefill`` | ``mixed``). The simulated rig
turns it into each GPU's step time with :func:`tuning.model.serving.predict`; ``rigforge sweep
--workload FILE.yaml`` reads one from a workload file (:func:`load_workload_file`).

``gpus`` empty means *every GPU on its own*: the description runs as one ``tp = pp = 1``
replica per GPU, each measured alone (what ``decode``, ``prefill`` and ``batched`` are:
:func:`preset_workload`). ``gpus`` named (an index in the rig's order, a UUID or a PCI bus id)
means *one group*: the model split over exactly those GPUs, stage-major (the first ``tp`` GPUs
are stage 0), measured as the group's tokens.

A workload file::

    schema_version: 1
    name: six-card-moe
    models: models.yaml      # optional: a models file (relative to this file)
    model: minimax-m2.5      # a name in that models file, or an inline models-file entry
    engine: llama.cpp        # optional: default the model's engine
    gpus: [0, 1, 2, 3, 4, 5] # optional: default every GPU on its own
    tp: 1
    pp: 6
    concurrency: 1           # sequences in flight
    context: 4096            # tokens in each sequence's KV cache (decode) / prompt (prefill)
    phase: decode            # decode | prefill | mixed

Every problem is reported before any GPU is touched, as ``file:line: yaml.path: what is wrong
and the fix`` (:func:`tuning.errors.problems_error`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from inventory.fields import GpuRef, StrictModel
from inventory.models import ENGINES, Engine, ModelSpec, load_models
from tuning.core.yamlsafe import YamlDocument
from tuning.errors import (
    ConfigError,
    did_you_mean,
    entry_problem,
    problems_error,
    read_yaml_config,
)

PRESETS_FILE = Path(__file__).with_name("presets.yaml")

Phase = Literal["decode", "prefill", "mixed"]
PHASES: tuple[str, ...] = ("decode", "prefill", "mixed")
#: The named presets (``rigforge sweep --workload decode``): see ``presets.yaml``.
PRESET_NAMES: tuple[str, ...] = ("decode", "prefill", "batched")
#: A GPU of the rig: its index in the rig's order, or a UUID / PCI bus id.
GpuSelector = Annotated[int, Field(ge=0, le=1023)] | GpuRef
#: Most GPUs one split may span (the largest boxes here have 8; NVL72 racks 72). estimate.
MAX_SPLIT_GPUS = 72


class WorkloadSpec(StrictModel):
    """One described workload (frozen). Units: ``concurrency`` sequences, ``context`` tokens.

    Contract: ``tp · pp == len(gpus)`` when ``gpus`` is given, else ``tp == pp == 1`` (one
    replica on every GPU on its own); ``context`` at most the model's ``context``.
    """

    name: str = Field(default="workload", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    model: ModelSpec
    engine: Engine
    gpus: tuple[GpuSelector, ...] = ()
    tp: int = Field(default=1, ge=1, le=MAX_SPLIT_GPUS)
    pp: int = Field(default=1, ge=1, le=MAX_SPLIT_GPUS)
    concurrency: int = Field(default=1, ge=1, le=65_536)
    context: int = Field(ge=0, le=100_000_000)
    phase: Phase = "decode"
    #: ``mixed`` only: prompt tokens prefilled per output token (a serving benchmark's input
    #: throughput over its output throughput); None: a full prefill chunk in every step.
    input_per_output: float | None = Field(default=None, gt=0, le=100_000)

    @field_validator("gpus", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value):
            raise ValueError("a GPU is an index (0, 1, …) or a UUID, not true/false")
        return value

    @model_validator(mode="after")
    def _split_matches(self) -> WorkloadSpec:
        n = self.tp * self.pp
        if self.gpus:
            keys = [str(g).lower() for g in self.gpus]
            if len(set(keys)) != len(keys):
                raise ValueError("gpus: a GPU is named twice; name each once")
            if n != len(self.gpus):
                raise ValueError(
                    f"gpus: tp × pp = {self.tp} × {self.pp} = {n} but gpus names "
                    f"{len(self.gpus)}; name one GPU per shard or change tp/pp"
                )
        elif n != 1:
            raise ValueError(
                f"gpus: tp × pp = {n} needs that many GPUs: name them in gpus: (indices or "
                "UUIDs), or set tp and pp to 1 to run one replica on every GPU"
            )
        if self.input_per_output is not None and self.phase != "mixed":
            raise ValueError(
                f"input_per_output applies to phase mixed, not {self.phase}: set phase: mixed "
                "or leave input_per_output out"
            )
        if self.context > self.model.context:
            raise ValueError(
                f"context: {self.context} tokens exceeds the model's context "
                f"({self.model.context}); lower it or raise the model's context"
            )
        return self

    @property
    def grouped(self) -> bool:
        """True when the workload is one split over named GPUs (not one replica per GPU)."""
        return bool(self.gpus)

    @property
    def label(self) -> str:
        """A short description for reports: name, model, engine, split, load."""
        split = f"tp{self.tp}×pp{self.pp}" if self.grouped else "per GPU"
        return (
            f"{self.name}: {self.model.name} on {self.engine}, {split}, "
            f"{self.concurrency} seq × {self.context} tok, {self.phase}"
        )


def resolve_gpus(spec: WorkloadSpec, uuids: Sequence[str], bus_ids: Sequence[str]) -> list[int]:
    """Rig indices of ``spec.gpus`` (index, UUID or PCI bus id, in the rig's order ``uuids`` /
    ``bus_ids``); :class:`ConfigError` naming the GPU the rig lacks and what it has."""
    out: list[int] = []
    for sel in spec.gpus:
        if isinstance(sel, int):
            if sel >= len(uuids):
                raise ConfigError(
                    f"workload {spec.name}: gpus: index {sel} but the rig has GPUs "
                    f"0-{len(uuids) - 1}; name one of those"
                )
            out.append(sel)
            continue
        wanted = sel.lower()
        found = [i for i, u in enumerate(uuids) if u.lower() == wanted]
        found += [i for i, b in enumerate(bus_ids) if _bus_key(b) == _bus_key(sel)]
        if not found:
            raise ConfigError(
                f"workload {spec.name}: gpus: {sel!r} is not a GPU of this rig; it has "
                f"{', '.join(uuids)} (or use indices 0-{len(uuids) - 1})"
            )
        out.append(found[0])
    if len(set(out)) != len(out):
        raise ConfigError(f"workload {spec.name}: gpus: two entries name the same GPU")
    return out


def _bus_key(bus_id: str) -> str:
    """``00000000:41:00.0`` and ``0000:41:00.0`` compare equal (domain width differs)."""
    parts = bus_id.strip().lower().split(":")
    if len(parts) == 3:
        parts[0] = parts[0].lstrip("0") or "0"
    return ":".join(parts)


# --------------------------------------------------------------------------------------------
# Presets (presets.yaml)
# --------------------------------------------------------------------------------------------


class _Architecture(StrictModel):
    layers: int = Field(ge=1, le=1024)
    attention_heads: int = Field(ge=1, le=4096)
    kv_heads: int = Field(ge=1, le=4096)
    head_dim: int = Field(ge=1, le=4096)
    context: int = Field(ge=1, le=100_000_000)
    kv_cache_bits: Literal[4, 8, 16, 32] = 16


class _Preset(StrictModel):
    concurrency: int | None = Field(default=None, ge=1, le=65_536)
    context: int = Field(ge=0, le=100_000_000)
    phase: Phase
    engine: Engine | None = None


class _PresetFile(StrictModel):
    schema_version: Literal[1]
    architecture: _Architecture
    engine: Engine
    presets: dict[Literal["decode", "prefill", "batched"], _Preset]
    sources: dict[str, str]


@cache
def _preset_file() -> _PresetFile:
    doc = read_yaml_config(PRESETS_FILE, "workload presets")
    try:
        spec = _PresetFile.model_validate(doc.data)
    except ValidationError as exc:
        raise problems_error(PRESETS_FILE.name, [_describe(e) for e in exc.errors()], doc) from None
    missing = [k for k in ("architecture", "engine", *PRESET_NAMES) if k not in spec.sources]
    if missing or set(spec.presets) != set(PRESET_NAMES):
        raise ConfigError(
            f"{PRESETS_FILE.name}: every preset ({', '.join(PRESET_NAMES)}) needs an entry and "
            f"a source; missing: {', '.join(missing) or 'an entry'}"
        )
    return spec


def preset_workload(
    name: str, *, params_b: float, weights_gb: float, batch: int, model_name: str = "rig-model"
) -> WorkloadSpec:
    """The named preset ``decode`` | ``prefill`` | ``batched`` on a rig whose model has
    ``params_b`` (10^9 parameters) in ``weights_gb`` (GB) of weights, serving ``batch``
    sequences when batched (the rig file's ``model:``). One replica per GPU."""
    if name not in PRESET_NAMES:
        raise ConfigError(
            f"unknown workload preset {name!r}; use one of {', '.join(PRESET_NAMES)} or a "
            "workload file (docs/workload.md)"
        )
    file = _preset_file()
    preset = file.presets[name]  # type: ignore[index]
    engine = preset.engine or file.engine
    model = ModelSpec(
        name=_safe_name(model_name),
        engine=engine,
        weights=f"sim:{_safe_name(model_name)}",
        params_b=params_b,
        quant_bits=weights_gb * 8.0 / params_b,
        **file.architecture.model_dump(),
    )
    return WorkloadSpec(
        name=name,
        model=model,
        engine=engine,
        concurrency=preset.concurrency or batch,
        context=preset.context,
        phase=preset.phase,
    )


def _safe_name(text: str) -> str:
    """A model name fit for :class:`ModelSpec` (letters, digits, ``._-``) from free text."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip("-._")
    return (cleaned or "rig-model")[:63]


# --------------------------------------------------------------------------------------------
# Workload files
# --------------------------------------------------------------------------------------------

#: pydantic's union tags in an error location (``int``, ``function-after[_gpu_ref(), str]``)
_UNION_TAG = re.compile(r"^(int|str|constrained-int|function-after\[.*\])$")
#: Keys of a workload file beyond :class:`WorkloadSpec`'s own.
_FILE_KEYS = ("schema_version", "models")


def is_workload_file(value: str) -> bool:
    """Whether a ``--workload`` value names a workload file: it ends in ``.yaml``/``.yml``, or
    is an existing path that is not a preset name or a ``cmd:``/``openai:`` spec."""
    if value.startswith(("cmd:", "openai:")) or value in PRESET_NAMES:
        return False
    return value.lower().endswith((".yaml", ".yml")) or Path(value).exists()


def load_workload_file(path: str | Path) -> WorkloadSpec:
    """Read and validate a workload file; :class:`ConfigError` lists every problem as
    ``file:line: yaml.path: what and the fix``. A ``model:`` given by name is looked up in the
    ``models:`` file (relative to the workload file), whose own errors name that file."""
    path = Path(path)
    doc = read_yaml_config(path, "workload file")
    return parse_workload(doc, source=str(path), base=path.parent)


def parse_workload(doc: YamlDocument, *, source: str, base: Path) -> WorkloadSpec:
    """Validate a parsed workload document; ``base``: the folder ``models:`` is relative to."""
    data = doc.data
    if not isinstance(data, dict):
        raise problems_error(
            source,
            [("(top level)", "expected a mapping with model:, context: … (docs/workload.md)")],
            doc,
        )
    problems: list[tuple[str, str]] = []
    body = {k: v for k, v in data.items() if k not in _FILE_KEYS}
    version = data.get("schema_version", 1)
    if version != 1 or isinstance(version, bool):
        problems.append(("schema_version", f"{version!r} is not a known version; write 1"))
    model = body.get("model")
    if isinstance(model, str):
        found = _model_by_name(model, data.get("models"), base)
        if isinstance(found, str):
            problems.append(("models" if "not a models" in found else "model", found))
        else:
            body["model"] = found
    elif "models" in data and data["models"] is not None and not isinstance(data["models"], str):
        problems.append(("models", "expected the path of a models file (a string)"))
    if isinstance(body.get("model"), Mapping) and "engine" not in body:
        body["engine"] = body["model"].get("engine")
    elif isinstance(body.get("model"), ModelSpec) and "engine" not in body:
        body["engine"] = body["model"].engine
    try:
        spec = WorkloadSpec.model_validate(body)
    except ValidationError as exc:
        reported = {p for p, _ in problems}
        if "model" in reported:
            reported.add("engine")  # defaults from the model that was refused
        for err in exc.errors():
            where, message = _describe(err)
            # a model already refused by name is not also "missing" or "not a mapping"
            if (
                where.split(".")[0].split("[")[0] not in reported
                and (where, message) not in problems
            ):
                problems.append((where, message))
        spec = None
    if problems or spec is None:
        raise problems_error(
            source,
            problems,
            doc,
            header=f"{source}: {len(problems)} problem(s) in the workload file:",
            indent="  - ",
        )
    return spec


def _model_by_name(name: str, models: Any, base: Path) -> ModelSpec | str:
    """The model ``name`` of the models file ``models`` (relative to ``base``), or why not."""
    if models is None:
        return (
            f"{name!r} names a model but the file gives no models: file; add models: "
            "PATH/models.yaml or write the model inline (docs/workload.md)"
        )
    if not isinstance(models, str):
        return "models: is not a models file path (a string)"
    path = Path(models)
    if not path.is_absolute():
        path = base / path
    loaded = load_models(path)  # its own ConfigError names that file, line and path
    names = [m.name for m in loaded.models]
    for m in loaded.models:
        if m.name == name:
            return m
    hint = did_you_mean(name, names)
    return f"no model {name!r} in {path.name}{hint}; it has {', '.join(names)}"


#: a check across keys names the key it refuses: ``gpus: …``, ``context: …``
_NAMED_KEY = re.compile(r"^(gpus|context): (.*)$", re.DOTALL)


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    """``(yaml path, what is wrong and the fix)`` of one pydantic error."""
    # pydantic's union tags (int | str for a GPU) are not part of the YAML path
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))
    return entry_problem(
        {**error, "loc": loc},
        known_keys=_known_keys,
        missing_fix="docs/workload.md lists every key",
        choices={"engine": ENGINES, "phase": PHASES},
        named=_NAMED_KEY,
    )


def _known_keys(parent: tuple[int | str, ...]) -> list[str]:
    if parent[:1] == ("model",):
        return list(ModelSpec.model_fields)
    return [*WorkloadSpec.model_fields, *_FILE_KEYS]
