"""The models file: which LLMs the rig should serve, and what the placement solver needs to know.

A models file is YAML::

    schema_version: 1
    headroom_pct: 10          # VRAM kept free on every GPU (default 10 %)
    models:
      - name: qwq-32b
        engine: vllm          # vllm | llama.cpp | sglang
        weights: Qwen/QwQ-32B-AWQ
        params_b: 32.8        # parameters, billions
        quant_bits: 4         # bits per weight
        layers: 64
        attention_heads: 40
        kv_heads: 8
        head_dim: 128
        context: 32768        # tokens per sequence
        max_sequences: 4      # concurrent sequences the KV cache must hold
        priority: 2           # weight in the objective (default 1)
        gpus: [GPU-…]         # optional pins (UUIDs or PCI bus ids)
        replicas: 1           # optional scale-out (default 1)
        max_gpus: 2           # optional: let the solver spread a replica over up to N GPUs
        allow_sharing: false  # optional: may share GPUs with other sharing models
        port: 8000            # optional; assigned from 8000 upwards when absent
        kv_cache_bits: 16     # optional KV-cache precision (default 16)
        extra_args: []        # optional engine flags appended verbatim (no secrets)
        cpus: "16-23,80-87"   # optional: this model's own CPUs (a kernel CPU list), instead
                              # of the cores the CPU plan would choose (one replica only)

``weights`` and ``extra_args`` end up in a systemd unit, so control characters, ``"`` and ``\\``
are refused in them, and so are secrets in ``extra_args`` (``--api-key``, ``--hf-token``,
``*key*=…``: the inventory's ``serving.api_key_file`` / ``secrets.hf_token_file`` hold those).

:func:`load_models` validates everything before anything is planned and raises
:class:`~tuning.errors.ConfigError` naming the file, the YAML path (``models[1].kv_heads``) and
the fix; unknown keys get a did-you-mean. This module imports neither pyinfra nor the tuner.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from inventory.fields import MAX_PORT, EngineArg, GpuRef, ServicePort, StrictModel, UnitText
from tuning.core.checks import unit_name_collisions
from tuning.core.cpu import cpu_list_values, format_cpu_list
from tuning.core.limits import MAX_CPU_ID
from tuning.core.yamlsafe import YamlDocument, YamlRefused, read_text_file
from tuning.errors import ConfigError, entry_problem, parse_yaml_config, problems_error

#: Engines the serving templates know how to start.
ENGINES: tuple[str, ...] = ("vllm", "llama.cpp", "sglang")
#: First port handed out to models that do not name one.
DEFAULT_BASE_PORT = 8000
#: VRAM kept free on every GPU unless the file says otherwise. Units: %.
DEFAULT_HEADROOM_PCT = 10.0

Engine = Literal["vllm", "llama.cpp", "sglang"]

#: ggml's weight types (ggml/include/ggml.h ``enum ggml_type``, the quantised ones): what a GGUF
#: file's bulk weights are stored as. A file's quantisation *mix* (``Q4_K_M``, Unsloth's
#: ``UD-Q3_K_XL``) names the type most of its weights use (``Q4_K``, ``Q3_K``).
QuantType = Literal[
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
    "TQ1_0", "TQ2_0", "MXFP4",
]  # fmt: skip
QUANT_TYPES: tuple[str, ...] = get_args(QuantType)


class ModelSpec(StrictModel):
    """One model to serve. Architecture numbers come from the model's ``config.json``.

    Units: ``params_b`` billions of parameters, ``quant_bits``/``kv_cache_bits`` bits per
    value, ``context`` tokens per sequence, ``port`` TCP port.

    Pins (``gpus``): with one replica the model runs on exactly these GPUs; with several
    replicas every replica's GPUs are drawn from this list.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    engine: Engine
    weights: UnitText = Field(min_length=1)
    params_b: float = Field(gt=0, le=2000)
    quant_bits: float = Field(gt=1, le=32)
    # Upper bounds stop typos (1e20), not real models: the largest published configs have
    # 126 layers / 128 heads / head_dim 256 (Llama 3.1 405B, config.json) and 10M tokens of
    # context (Llama 4 Scout); each bound is an estimate with room to spare.
    layers: int = Field(ge=1, le=1024)
    attention_heads: int = Field(ge=1, le=4096)
    kv_heads: int = Field(ge=1, le=4096)
    head_dim: int = Field(ge=1, le=4096)
    context: int = Field(ge=1, le=100_000_000)
    max_sequences: int = Field(default=1, ge=1, le=65_536)
    priority: float = Field(default=1.0, gt=0, le=1e6)
    gpus: tuple[GpuRef, ...] | None = None
    replicas: int = Field(default=1, ge=1, le=16)
    max_gpus: int | None = Field(default=None, ge=1, le=64)
    allow_sharing: bool = False
    port: ServicePort | None = None
    kv_cache_bits: Literal[4, 8, 16, 32] = 16
    extra_args: tuple[EngineArg, ...] = ()
    # A mixture of experts reads only its active parameters per token (the model card's
    # "activated parameters"); the step-time model uses it, memory sizing uses params_b.
    active_params_b: float | None = Field(default=None, gt=0, le=2000)
    # A mixture of experts' routed experts per layer and how many each token uses (config.json
    # n_routed_experts / num_experts and num_experts_per_tok): a step of several tokens reads
    # every expert any of them routes to, so a batch reads more than one token's active set.
    experts: int | None = Field(default=None, ge=2, le=65_536)
    experts_per_token: int | None = Field(default=None, ge=1, le=65_536)
    # A GGUF's weight type (llama.cpp): its matrix-vector kernel's integer work per weight.
    quant_type: QuantType | None = None
    # Floors the placement must meet: per-sequence decode tokens/s and time to first token (s).
    min_tokens_per_s: float | None = Field(default=None, gt=0, le=1e6)
    max_ttft_s: float | None = Field(default=None, gt=0, le=86_400)
    cpus: str | None = Field(default=None, max_length=4096)

    @field_validator("quant_type", mode="before")
    @classmethod
    def _ggml_type(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in QUANT_TYPES:
            # a llama-quantize mix name: the type, then its size letter (Q4_K_M, UD-Q3_K_XL)
            mix = re.match(r"^(?:UD-)?(.+?)(?:_(?:XXS|XS|S|M|L|XL))?$", value.upper())
            base = mix.group(1) if mix else ""
            hint = f" ({base!r} for {value[:40]!r})" if base in QUANT_TYPES else ""
            raise ValueError(
                f"{value[:40]!r} is not a ggml weight type; name the type most of the file's "
                f"weights use{hint}, one of {', '.join(QUANT_TYPES)}"
            )
        return value

    @field_validator("cpus")
    @classmethod
    def _cpu_list(cls, value: str | None) -> str | None:
        if value is not None and cpu_list_values(value) is None:
            raise ValueError(
                f"{value[:40]!r} is not a CPU list; write it as the kernel does, "
                f"e.g. '16-23,80-87' (CPU ids up to {MAX_CPU_ID})"
            )
        return value

    @property
    def pinned_cpus(self) -> tuple[int, ...] | None:
        """The ``cpus:`` pin as logical CPU ids (ascending); ``None`` when not pinned."""
        return cpu_list_values(self.cpus) if self.cpus is not None else None

    @model_validator(mode="after")
    def _heads_consistent(self) -> ModelSpec:
        if self.kv_heads > self.attention_heads or self.attention_heads % self.kv_heads:
            raise ValueError(
                f"kv_heads ({self.kv_heads}) must divide attention_heads "
                f"({self.attention_heads}); copy num_key_value_heads and num_attention_heads "
                "from the model's config.json"
            )
        if self.active_params_b is not None and self.active_params_b > self.params_b:
            raise ValueError(
                f"active_params_b ({self.active_params_b}) exceeds params_b ({self.params_b}); "
                "give the model card's activated parameters, at most the total"
            )
        if (self.experts is None) != (self.experts_per_token is None):
            raise ValueError(
                "experts and experts_per_token go together: copy both from the model's "
                "config.json (n_routed_experts or num_experts, and num_experts_per_tok)"
            )
        if self.experts is not None and self.experts_per_token is not None:
            if self.experts_per_token >= self.experts:
                raise ValueError(
                    f"experts_per_token ({self.experts_per_token}) must be below experts "
                    f"({self.experts}); copy num_experts_per_tok and n_routed_experts from "
                    "the model's config.json"
                )
            if self.active_params_b is None or self.active_params_b >= self.params_b:
                raise ValueError(
                    "experts needs active_params_b below params_b (the model card's activated "
                    "parameters): the expert sizes come from the difference"
                )
        if self.gpus is not None:
            if not self.gpus:
                raise ValueError("gpus: give at least one GPU UUID, or leave the key out")
            if len(set(self.gpus)) != len(self.gpus):
                raise ValueError("gpus: a GPU is pinned twice; list each UUID once")
            if len(self.gpus) < self.replicas:
                raise ValueError(
                    f"gpus: {len(self.gpus)} pinned GPU(s) cannot hold {self.replicas} "
                    "replicas; pin more GPUs or lower replicas"
                )
        if self.cpus is not None and self.replicas > 1:
            raise ValueError(
                f"cpus: pins the CPUs of one unit but the model has {self.replicas} replicas; "
                "leave cpus: out (the CPU plan gives each replica its own cores) or use one "
                "replica"
            )
        return self

    @property
    def weights_bytes(self) -> float:
        """Size of the quantised weights. Units: bytes."""
        return self.params_b * 1e9 * self.quant_bits / 8


class ModelsFile(StrictModel):
    """The whole models file."""

    schema_version: Literal[1] = 1
    headroom_pct: float = Field(default=DEFAULT_HEADROOM_PCT, ge=0, lt=100)
    models: tuple[ModelSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ModelsFile:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"model name {model.name!r} appears twice; names must be unique")
            seen.add(model.name)
        _check_cpu_pins(self.models)
        assign_ports(self.models)  # raises on collisions
        entries = [(m.name, r) for m in self.models for r in range(m.replicas)]
        for first, later, slug in unit_name_collisions(entries):
            raise ValueError(
                f"models {entries[first][0]!r} and {entries[later][0]!r} would share the unit "
                f"rigforge-serve-{slug}.service (replica k > 0 of a model gets '-k'); rename one"
            )
        return self

    def ports(self) -> dict[str, tuple[int, ...]]:
        """Port of every replica of every model (see :func:`assign_ports`)."""
        return assign_ports(self.models)


def _check_cpu_pins(models: Sequence[ModelSpec]) -> None:
    """Refuse two models pinning the same CPU (``ValueError`` naming both and the CPUs)."""
    owner: dict[int, str] = {}
    for index, model in enumerate(models):
        cpus = model.pinned_cpus or ()
        for other in dict.fromkeys(owner[c] for c in cpus if c in owner):
            shared = [c for c in cpus if owner.get(c) == other]
            raise ValueError(
                f"models[{index}].cpus: models {other!r} and {model.name!r} both pin CPUs "
                f"{format_cpu_list(shared)} (cpus:); give each model its own CPUs"
            )
        owner.update(dict.fromkeys(cpus, model.name))


def assign_ports(models: Sequence[ModelSpec]) -> dict[str, tuple[int, ...]]:
    """Ports per model, one per replica: ``port, port+1, …``.

    Models without a port get the lowest free ports from :data:`DEFAULT_BASE_PORT` up, in file
    order. Raises ``ValueError`` when two models' explicit ports overlap.
    """
    taken: dict[int, str] = {}
    result: dict[str, tuple[int, ...]] = {}
    for model in models:
        if model.port is None:
            continue
        ports = tuple(range(model.port, model.port + model.replicas))
        if ports[-1] > MAX_PORT:
            raise ValueError(
                f"model {model.name!r}: {model.replicas} replicas from port {model.port} run to "
                f"{ports[-1]}, past {MAX_PORT}; give a lower port"
            )
        for port in ports:
            if port in taken:
                raise ValueError(
                    f"port {port} of model {model.name!r} is already used by "
                    f"{taken[port]!r}; give one of them another port"
                )
            taken[port] = model.name
        result[model.name] = ports
    next_port = DEFAULT_BASE_PORT
    for model in models:
        if model.port is not None:
            continue
        ports_list: list[int] = []
        while len(ports_list) < model.replicas:
            if next_port > MAX_PORT:
                raise ValueError(
                    f"model {model.name!r}: no free port left below {MAX_PORT} for its replicas"
                )
            if next_port not in taken:
                taken[next_port] = model.name
                ports_list.append(next_port)
            next_port += 1
        result[model.name] = tuple(ports_list)
    return {m.name: result[m.name] for m in models}


# --------------------------------------------------------------------------------------------
# Loading with errors a person can act on
# --------------------------------------------------------------------------------------------


def load_models(path: str | Path) -> ModelsFile:
    """Read and validate a models file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = read_text_file(path, "models file")
    except YamlRefused as error:
        raise ConfigError(str(error)) from None
    return parse_models(text, source=str(path))


def parse_models(text: str, *, source: str = "<models>") -> ModelsFile:
    """Validate models-file YAML text; ``source`` names it in error messages."""
    doc = parse_yaml_config(text, source)
    data = doc.data
    if isinstance(data, list):
        data = {"models": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'models:' list at the top level")
    try:
        return ModelsFile.model_validate(data)
    except ValidationError as error:
        errors = error.errors()
        nested = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
        # pydantic also reports the list as too short once all its items failed: noise
        errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in nested)]
        problems = [_describe(err) for err in errors]
        # A bare list was read as ``models:``; its items' lines are under the list's own paths.
        bare = isinstance(doc.data, list)
        raise problems_error(
            source,
            problems,
            _unwrapped(doc) if bare else doc,
            header=f"{source}: {len(problems)} problem(s) in the models file:",
            indent="  - ",
        ) from None


#: a check across models names the entry it refuses: ``models[2].port: …``
_NAMED_ENTRY = re.compile(r"(models\[\d+\]\.\w+): (.*)$", re.DOTALL)


def _describe(err: Any) -> tuple[str, str]:
    """``(yaml path, what is wrong and the fix)`` of one pydantic error."""
    return entry_problem(
        err,
        known_keys=_known_keys,
        missing_fix="see inventory/models.py for its meaning",
        choices={"engine": ENGINES},
        named=_NAMED_ENTRY,
    )


def models_document(path: str | Path) -> YamlDocument | None:
    """The parsed models file at ``path`` with its positions (a bare list's under
    ``models``), for a later refusal's line numbers; ``None`` when it cannot be read."""
    try:
        doc = parse_yaml_config(read_text_file(path, "models file"), str(path))
    except (YamlRefused, ConfigError, OSError):
        return None
    return _unwrapped(doc) if isinstance(doc.data, list) else doc


def _unwrapped(doc: YamlDocument) -> YamlDocument:
    """``doc`` of a bare top-level list with its positions moved under ``models``."""
    positions = {
        ("models" + path if path.startswith("[") else path or "models"): where
        for path, where in doc.positions.items()
    }
    return YamlDocument(doc.data, doc.source, positions)


def _known_keys(parent: Sequence[int | str]) -> list[str]:
    if parent and parent[0] == "models" and len(parent) >= 2:
        return list(ModelSpec.model_fields)
    return list(ModelsFile.model_fields)
