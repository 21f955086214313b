"""The serving step-time model: tokens/s, TTFT and where the step goes, from hardware and model.

One engine (vLLM, SGLang, llama.cpp) serves one model on ``tp × pp`` GPUs with ``concurrency``
sequences in flight at ``context`` tokens each. Every figure is derived from

* the model (``inventory.models.ModelSpec``: parameters — active ones for a MoE —, bits per
  weight and per KV value, layers, heads, head size);
* the GPUs (:class:`GpuHardware`: memory bandwidth and dense tensor TFLOPS per dtype, from
  ``tuning/backends/presets.yaml``);
* the link between them (:class:`Link`: from the fabric model, ``links.yaml`` or nominal PCIe);
* the host (:class:`HostShare`: cores the engine gets, engines sharing them, NUMA locality);
* the engine's physical parameters in ``serving.yaml`` beside this module (each cited, fitted
  to a cited figure, or marked estimate).

Formulas (docs/model.md has them with units and sources). Per pipeline stage and GPU, with
``m`` sequences per micro-batch (``ceil(concurrency / pp)``, at least 1)::

    memory_s   = (weights_active / (tp·pp) + m · context · kv_bytes_per_token / (tp·pp))
                 / (memory_bw · bw_efficiency)   [moe_bw_efficiency: a MoE's matvec steps]
    compute_s  = (2 · active_params · m + 4 · layers · m · context · hidden) / (tp·pp)
                 / (tensor_tflops[dtype] · mfu)
                 [steps of few tokens (matvec): FLOPs/2 · int_ops_per_weight / int32_tops]
    allreduce  = overhead[link kind] + 2(tp−1) · latency + 2(tp−1)/tp · bytes / (bw · bw_frac)
    interconnect_s (vLLM, SGLang) = 2 · layers/pp · allreduce(m · hidden · 2 B)  [tp > 1]
                                    + handoff(m · hidden · 2 B)                   [pp > 1]
    interconnect_s (llama.cpp)    = transfers · copy_latency[link kind] + bytes / bw
                     [row: 2(tp−1) copies per split matmul; layer: one f32 residual copy]

The engine's split modes (``collectives.split_modes``) decide what :func:`link_traffic`
counts; under llama.cpp's ``row`` the unsplit weights (a MoE's experts) and the KV cache are
read one layer's device at a time (serialised: as if one GPU read them all).
    host_s     = (host_step_s + host_per_seq_s · m) · max(1, cores_needed / cores_effective)
                 · (remote_numa_factor if the cores are on another NUMA node)
                 + row_launches · ggml_launch_gap   [llama.cpp row: CUDA graphs off]

A token of one sequence passes all ``pp`` stages, so per-sequence decode is one over a round
of ``pp`` stage steps, whose CPU step is paid once per micro-batch in flight (not per stage),
and the aggregate ``concurrency`` times that: with fewer sequences than stages the pipeline
idles (``busy_frac`` < 1), and a pipeline adds capacity (bandwidth of more GPUs for more
sequences), never single-stream speed.

Hand-worked example (the docstring of :func:`predict` has a second): a 14.8 B model at
8.5 bits (15.7 GB) on one RTX 3090 (936 GB/s) under llama.cpp (efficiency 0.62) reads
15.7e9 / (936e9 · 0.62) = 27.1 ms per step; with 0.85 ms host time that is ~35.8 tok/s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from inventory.fields import StrictModel
from inventory.models import QuantType
from tuning.errors import ConfigError, read_yaml_config, validated
from tuning.model.step import Resource, StepTime

PARAMS_FILE = Path(__file__).with_name("serving.yaml")

Phase = Literal["decode", "prefill", "mixed"]
LinkKind = Literal["nvlink", "peer", "staged"]
Dtype = Literal["fp16", "fp8", "int8", "int4"]

#: Bytes of one activation value on the wire (bf16/fp16 activations in every engine here).
ACTIVATION_BYTES = 2


# --------------------------------------------------------------------------------------------
# Parameters (serving.yaml)
# --------------------------------------------------------------------------------------------


class EngineStep(StrictModel):
    """What one step of an engine costs; units in the names, sources beside them."""

    bw_efficiency_frac: float = Field(gt=0, le=1)
    mfu_frac: float = Field(gt=0, le=1)
    host_step_s: float = Field(ge=0, le=1)
    host_per_seq_s: float = Field(ge=0, le=1)
    prefill_chunk_tokens: int = Field(ge=1, le=1_000_000)
    sources: dict[str, str]
    #: Steps of at most ``matvec_max_tokens`` tokens run the engine's matrix-vector kernels on
    #: the CUDA cores (no tensor cores): per token, ``matvec_int_ops_per_weight`` integer
    #: operations per weight (unpack, scale, dp4a, reduce) against the GPU's ``int32_tops``;
    #: None: every step runs on the tensor path at ``mfu_frac``.
    matvec_int_ops_per_weight: float | None = Field(default=None, gt=0, le=1000)
    #: ``matvec_int_ops_per_weight`` for the weight types (ggml's, a models file's
    #: ``quant_type``) whose unpacking costs another amount; the others take the default.
    matvec_int_ops_by_quant: dict[QuantType, float] | None = None
    matvec_max_tokens: int | None = Field(default=None, ge=1, le=1024)
    #: A mixture of experts' matrix-vector steps (at most ``matvec_max_tokens`` tokens) read
    #: many small expert matrices (one grouped matrix-vector product per layer) at
    #: ``moe_bw_efficiency_frac`` of the datasheet bandwidth instead of ``bw_efficiency_frac``;
    #: None: as a dense model.
    moe_bw_efficiency_frac: float | None = Field(default=None, gt=0, le=1)

    def bw_efficiency_for(self, moe: bool, tokens: int) -> float:
        """The share of datasheet bandwidth the reads of a step of ``tokens`` new tokens
        achieve (``moe``: the model reads only some of its experts per token)."""
        if moe and self.matvec(tokens) and self.moe_bw_efficiency_frac is not None:
            return self.moe_bw_efficiency_frac
        return self.bw_efficiency_frac

    def int_ops_for(self, quant_type: str | None) -> float | None:
        """Integer operations per weight and token of a matrix-vector step on weights of
        ``quant_type`` (None: unknown, the default figure)."""
        by_quant = self.matvec_int_ops_by_quant or {}
        if quant_type is not None and quant_type in by_quant:
            return by_quant[quant_type]
        return self.matvec_int_ops_per_weight

    def matvec(self, tokens: int) -> bool:
        """Whether a step of ``tokens`` new tokens runs the matrix-vector kernels (at most
        ``matvec_max_tokens``; never for an engine without that bound)."""
        return tokens <= (self.matvec_max_tokens or 0)


class SplitModes(StrictModel):
    """How one engine splits a model: ``tp`` over tensor-parallel members, ``pp`` over stages.

    ``allreduce``: every member holds a slice of every layer and the partial outputs are summed
    by a collective (NCCL or the engine's custom all-reduce) twice per layer (vLLM, SGLang).
    ``row``: llama.cpp's ``--split-mode row``: each 2-D weight matrix is split by rows; per
    matmul the main GPU sends the input to the others and gathers their shares of the output.
    ``handoff``: one activation tensor sent to the next stage per boundary (vLLM, SGLang).
    ``layer``: llama.cpp's ``--split-mode layer``: ggml's scheduler copies each split's inputs
    (the residual stream at the boundary, the graph inputs the later stage's layers read).
    """

    tp: Literal["allreduce", "row"]
    pp: Literal["handoff", "layer"]


class Collectives(StrictModel):
    allreduce_overhead_us: dict[LinkKind, float]
    allreduce_bw_frac: float = Field(gt=0, le=1)
    handoff_overhead_us: float = Field(ge=0)
    nvlink_bridge_link_gbps: float = Field(gt=0)
    nvlink_datacenter_link_gbps: float = Field(gt=0)
    split_modes: dict[str, SplitModes]
    copy_latency_us: dict[LinkKind, float]
    ggml_residual_bytes: int = Field(ge=1, le=8)
    ggml_kq_mask_bytes: int = Field(ge=1, le=8)
    ggml_kv_pad_tokens: int = Field(ge=1, le=65_536)
    ggml_input_bytes_per_token: int = Field(ge=0, le=4096)
    ggml_q8_1_bytes_per_value: float = Field(gt=0, le=8)
    ggml_matrix_row_padding: int = Field(ge=1, le=65_536)
    ggml_dst_bytes: int = Field(ge=1, le=8)
    ggml_launch_gap_us: float = Field(ge=0, le=1000)
    ggml_layer_kernels: int = Field(ge=0, le=10_000)
    ggml_matmul_col_stride: int = Field(ge=1, le=65_536)
    sources: dict[str, str]


class HostParams(StrictModel):
    remote_numa_factor: float = Field(ge=1, le=10)
    io_bytes_per_seq: float = Field(ge=0, le=1e9)
    sources: dict[str, str]


class ServingParams(StrictModel):
    schema_version: Literal[1]
    engines: dict[str, EngineStep]
    collectives: Collectives
    host: HostParams


@cache
def load_serving_params(path: Path = PARAMS_FILE) -> ServingParams:
    """``serving.yaml``, validated: every number has a source, every engine is a CPU-plan one."""
    params = validated(ServingParams, read_yaml_config(path, "serving model parameters"), path.name)
    sections: list[tuple[str, StrictModel, dict[str, str]]] = [
        (f"engines.{n}", e, e.sources) for n, e in params.engines.items()
    ]
    sections.append(("collectives", params.collectives, params.collectives.sources))
    sections.append(("host", params.host, params.host.sources))
    for where, section, sources in sections:
        for key in type(section).model_fields:
            if key != "sources" and key not in sources and getattr(section, key) is not None:
                raise ConfigError(
                    f"{path.name}: {where}.sources.{key}: missing; cite the figure or mark it "
                    "'estimate'"
                )
    from tuning.cpuplan.rules import load_rules

    known = set(load_rules().engines)
    for name in params.collectives.split_modes:
        if name not in params.engines:
            raise ConfigError(
                f"{path.name}: collectives.split_modes.{name}: not an engine of engines: "
                f"({', '.join(sorted(params.engines))})"
            )
    for name in params.engines:
        if name not in params.collectives.split_modes:
            raise ConfigError(
                f"{path.name}: collectives.split_modes.{name}: missing; say how {name} splits "
                "a model (tp: allreduce | row, pp: handoff | layer)"
            )
    for name in params.engines:
        if name not in known:
            raise ConfigError(
                f"{path.name}: engines.{name}: not an engine of tuning/cpuplan/engines.yaml "
                f"({', '.join(sorted(known))})"
            )
    return params


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


class ModelLike(Protocol):
    """What the model needs of a model (``inventory.models.ModelSpec`` has it)."""

    @property
    def engine(self) -> str: ...
    @property
    def params_b(self) -> float: ...
    @property
    def quant_bits(self) -> float: ...
    @property
    def layers(self) -> int: ...
    @property
    def attention_heads(self) -> int: ...
    @property
    def kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def kv_cache_bits(self) -> int: ...


@dataclass(frozen=True)
class GpuHardware:
    """One GPU's throughput figures. Units: GB/s (10^9 B/s), dense tensor TFLOPS per dtype,
    INT32 TOPS of the CUDA cores.

    ``preset``: the ``presets.yaml`` key the figures come from (its power split and clocks
    are what :mod:`tuning.model.split` puts under a cap); ``None`` when built by hand."""

    name: str
    memory_bw_gbps: float
    tensor_tflops: dict[str, float] = field(default_factory=dict)
    preset: str | None = None
    #: Peak INT32 TOPS of the CUDA cores (presets.yaml ``int32_tops``); None: unknown, and
    #: matrix-vector steps are then priced as memory-bound.
    int32_tops: float | None = None

    def tflops(self, dtype: str) -> float:
        """Dense tensor TFLOPS for ``dtype``; FP16 where the GPU has no faster path for it."""
        return self.tensor_tflops.get(dtype, self.tensor_tflops["fp16"])


def gpu_from_preset(key: str) -> GpuHardware:
    """The :class:`GpuHardware` of a ``presets.yaml`` preset (its cited figures)."""
    from tuning.backends.sim_config import load_presets
    from tuning.backends.sim_workload import hardware_of

    presets = load_presets().presets
    if key not in presets:
        raise ConfigError(f"unknown GPU preset {key!r}; known: {', '.join(sorted(presets))}")
    return replace(hardware_of(presets[key]), preset=key)


@dataclass(frozen=True)
class Link:
    """The slowest GPU-to-GPU path of a group: kind, one-way GB/s, one-hop latency (µs)."""

    kind: LinkKind
    bandwidth_gbps: float
    latency_us: float


def nominal_link() -> Link:
    """PCIe Gen4 x16 peer-to-peer through one root complex, from ``tuning/fabric/pcie.yaml``."""
    from tuning.fabric.params import load_params, raw_gbps

    p = load_params()
    lat = p.latency
    return Link(
        kind="peer",
        bandwidth_gbps=raw_gbps(4, 16) * p.link_efficiency,
        latency_us=lat.gpu_peer_base_us + 2 * lat.root_complex_hop_us,
    )


def link_for_topology(topo: str, gen: int | None = None, width: int | None = None) -> Link:
    """The :class:`Link` of an nvidia-smi ``topo -m`` class between two GPUs.

    ``NV<n>``: n bonded NVLinks. ``PIX``/``PXB``: peer-to-peer through PCIe switches. ``PHB``,
    ``NODE``, ``SYS``: staged through host memory — two copies one after
    the other, so half the link's rate, with two driver copy set-ups (``tuning/fabric/pcie.yaml``);
    ``SYS`` adds the inter-socket hop. ``gen``/``width``: the slower card's current PCIe link
    (default Gen4 x16).
    """
    from tuning.core.pcie import nvlink_count
    from tuning.fabric.params import load_params, raw_gbps

    p = load_params()
    lat = p.latency
    col = load_serving_params().collectives
    links = nvlink_count(topo)
    if links:
        per = col.nvlink_bridge_link_gbps if links <= 4 else col.nvlink_datacenter_link_gbps
        return Link(
            kind="nvlink",
            bandwidth_gbps=links * per * p.nvlink_efficiency,
            latency_us=lat.gpu_peer_base_us + lat.nvlink_hop_us,
        )
    pcie_gbps = raw_gbps(gen or 4, width or 16) * p.link_efficiency
    if topo in ("PIX", "PXB"):
        hops = 2 if topo == "PIX" else 4
        return Link(
            kind="peer",
            bandwidth_gbps=pcie_gbps,
            latency_us=lat.gpu_peer_base_us + hops * lat.switch_hop_us,
        )
    legs = 2 * lat.root_complex_hop_us + (lat.inter_socket_hop_us if topo == "SYS" else 0.0)
    return Link(
        kind="staged",
        bandwidth_gbps=pcie_gbps / 2,
        latency_us=2 * lat.staged_copy_setup_us + lat.gpu_peer_base_us + legs,
    )


def gpu_for_name(name: str | None) -> GpuHardware | None:
    """The preset whose ``name`` is the GPU's (as NVML reports it); None when none matches."""
    if not name:
        return None
    from tuning.backends.sim_config import load_presets

    wanted = name.strip().lower()
    for key, preset in sorted(load_presets().presets.items()):
        if preset.name.lower() == wanted:
            return gpu_from_preset(key)
    return None


def link_from_fabric(fabric: object, gpus: Sequence[int]) -> Link:
    """The worst pair of ``gpus`` (fabric indices) on a :class:`tuning.fabric.graph.Fabric`."""
    from tuning.fabric.graph import Fabric
    from tuning.fabric.model import P2pMode, Transfer, alone_gbps, latency_us, p2p_mode

    assert isinstance(fabric, Fabric)
    order = {P2pMode.NVLINK: 0, P2pMode.PEER: 1, P2pMode.STAGED: 2}
    worst: Link | None = None
    for i, a in enumerate(gpus):
        for b in gpus[i + 1 :]:
            mode = p2p_mode(fabric, a, b)
            bw = min(
                alone_gbps(fabric, Transfer(kind="p2p", src=a, dst=b)),
                alone_gbps(fabric, Transfer(kind="p2p", src=b, dst=a)),
            )
            lat = max(latency_us(fabric, a, b), latency_us(fabric, b, a))
            kinds: tuple[LinkKind, ...] = ("nvlink", "peer", "staged")
            link = Link(kind=kinds[order[mode]], bandwidth_gbps=bw, latency_us=lat)
            if worst is None or (order[mode], -bw) > (
                kinds.index(worst.kind),
                -worst.bandwidth_gbps,
            ):
                worst = link
    return worst if worst is not None else nominal_link()


@dataclass(frozen=True)
class HostShare:
    """The CPU side of one engine: whole cores it gets (None: its full allotment from
    ``tuning/cpuplan/engines.yaml``), other engines on the same cores, and whether those cores
    are on another NUMA node than its GPUs."""

    cores: int | None = None
    other_engines: int = 0
    remote_numa: bool = False
    #: The slowest member's PCIe link to the host (GB/s); None: no host-copy cost modelled.
    pcie_gbps: float | None = None


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """What one placement of one model serves. Units: tokens/s, seconds.

    ``decode_step``: one decode round (every sequence in flight gains a token; ``pp`` stage
    steps); ``prefill_step``: one prefill chunk through every stage. ``step`` is the one of
    ``phase`` (``mixed``: decode). ``busy_frac``: share of the round each GPU works (a pipeline
    with fewer sequences than stages idles). ``clock_mhz``: each GPU's SM clock in decode
    under its cap (MHz, :func:`tuning.model.split.split_operating_point`); empty: full clock.
    """

    phase: Phase
    tokens_per_s: float
    tokens_per_s_per_seq: float
    prefill_tokens_per_s: float
    ttft_s: float
    decode_step: StepTime
    prefill_step: StepTime
    busy_frac: float
    dtype: str
    clock_mhz: tuple[float, ...] = ()
    mixed_step: StepTime | None = None

    @property
    def step(self) -> StepTime:
        return self.prefill_step if self.phase == "prefill" else self.decode_step

    @property
    def bottleneck(self) -> Resource:
        return self.step.bottleneck

    def breakdown(self) -> dict[Resource, float]:
        return self.step.breakdown()


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def kv_bytes_per_token(model: ModelLike) -> float:
    """KV cache bytes one token adds (K and V, every layer). Units: bytes."""
    return 2 * model.layers * model.kv_heads * model.head_dim * model.kv_cache_bits / 8


def active_params_b(model: ModelLike) -> float:
    """Parameters read per token: ``active_params_b`` for a MoE, else all. Units: 10^9."""
    active = getattr(model, "active_params_b", None)
    return float(active) if active else model.params_b


def read_params_b(model: ModelLike, tokens: float) -> float:
    """Parameters a step of ``tokens`` new tokens reads from memory. Units: 10^9.

    A dense model reads all of them. A mixture of experts reads its shared weights and every
    routed expert at least one of the tokens uses. With ``E = experts`` and ``k =
    experts_per_token``, the experts hold ``e = (params_b − active_params_b) / (E − k)`` each
    (summed over layers) and the shared part is ``active_params_b − k·e``; under uniform
    routing a layer's expert is used by none of ``n`` tokens with probability ``(1 − k/E)^n``,
    so ``E·(1 − (1 − k/E)^n)`` experts are read (an upper bound: real routers are skewed, and
    hit fewer). Without ``experts`` in the models file a MoE step reads one token's active set
    at any batch (an underestimate for batches).

    Hand-worked: GLM-4.5-Air (106 B, 12 B active, 128 experts, 8 per token), 32 tokens:
    e = 94/120 = 0.783 B, shared 12 − 8·0.783 = 5.73 B; 128·(1 − (120/128)^32) = 111.7
    experts; 5.73 + 111.7·0.783 = 93.2 B read per step (one token: 12 B).
    """
    active = active_params_b(model)
    experts = getattr(model, "experts", None)
    per_token = getattr(model, "experts_per_token", None)
    if not _is_moe(model) or experts is None or per_token is None or tokens <= 1:
        return active
    each = (model.params_b - active) / (experts - per_token)
    shared = max(0.0, active - per_token * each)
    used = experts * (1.0 - (1.0 - per_token / experts) ** tokens)
    # n ≥ 2 tokens use at least k experts, so ``used`` ≥ k; the cap only matters when the
    # shared part was clamped at 0 (an active count smaller than k experts)
    return min(model.params_b, shared + used * each)


def compute_dtype(model: ModelLike, gpu: GpuHardware) -> str:
    """The tensor path the matmuls take: FP8 for 8-bit weights on vLLM/SGLang where the GPU has
    FP8 tensor cores; FP16 otherwise (4-bit AWQ/GPTQ and GGUF kernels dequantise to FP16)."""
    if model.quant_bits == 8 and model.engine != "llama.cpp" and "fp8" in gpu.tensor_tflops:
        return "fp8"
    return "fp16"


TpMode = Literal["allreduce", "row"]
PpMode = Literal["handoff", "layer"]


def hidden_size(model: ModelLike) -> int:
    """The residual stream's width: ``attention_heads · head_dim``. Units: values per token."""
    return model.attention_heads * model.head_dim


def ffn_dim(model: ModelLike) -> float:
    """The FFN's intermediate width, derived from the parameter count (the models file has no
    such field). Units: values per token.

    Each layer holds ``2h² + 2h·kv`` attention weights (q and o of ``h×h``, k and v of
    ``h×kv`` with ``kv = kv_heads · head_dim``) and ``3h·ffn`` FFN weights (gate, up, down);
    the rest of ``params_b / layers`` is the FFN. Embeddings are neglected (a few % of a model
    of 7 B or more), so this overestimates a little; a MoE's is its active experts' summed width.

    Hand-worked: 27 B, 64 layers, h = 40·128 = 5120, kv = 8·128 = 1024: per layer
    27e9/64 = 421.9 M; attention 2·5120² + 2·5120·1024 = 62.9 M; ffn = (421.9 − 62.9) M /
    (3·5120) = 23 370 (Qwen2.5-32B's config.json: 27 648 at 32.8 B, 64 layers, the same h).
    """
    h = hidden_size(model)
    kv = model.kv_heads * model.head_dim
    per_layer = active_params_b(model) * 1e9 / model.layers
    return max(0.0, (per_layer - 2 * h * h - 2 * h * kv) / (3 * h))


def _attention_params(model: ModelLike) -> float:
    """Weights of the attention projections of every layer (q, k, v, o). Units: parameters."""
    h = hidden_size(model)
    kv = model.kv_heads * model.head_dim
    return model.layers * (2 * h * h + 2 * h * kv)


def _is_moe(model: ModelLike) -> bool:
    return active_params_b(model) < model.params_b


def ggml_device_layers(layers: int, devices: int) -> int:
    """The layers llama.cpp puts on its busiest (first) device when ``layers`` repeating
    layers are spread over ``devices`` with an even ``--tensor-split``. Units: layers.

    src/llama-model.cpp ``load_tensors`` assigns layer ``il`` to the first device whose
    cumulative split exceeds ``il / (layers + 1)`` (``act_gpu_layers`` counts the output layer
    when ``-ngl`` covers it, as the rendered unit's ``-ngl 999`` does), in every split mode: the
    first device takes ``ceil((layers + 1) / devices)``. Hand-worked: 40 layers over 2 devices:
    layers 0..20 (il/41 < 0.5) on the first, 21 of them; 30 over 4: 8, 8, 8, 6.
    """
    if devices <= 1:
        return layers
    return min(layers, math.ceil((layers + 1) / devices))


def row_split_params(model: ModelLike) -> float:
    """The parameters llama.cpp's ``--split-mode row`` divides by rows among the members; the
    rest stays whole on the device of its layer. Units: parameters.

    Only ``GGML_OP_MUL_MAT`` may read a split buffer (ggml-cuda.cu supports_op: "split buffers
    can only be used with GGML_OP_MUL_MAT"), so a MoE's expert tensors (3-D, ``MUL_MAT_ID``)
    stay whole on their layer's device and only the attention projections
    (:func:`_row_matmuls`) are split; a dense model's matrices are all split (all of
    ``params_b``).
    """
    total = model.params_b * 1e9
    if not _is_moe(model):
        return total
    return min(total, _attention_params(model))


def _row_matmuls(model: ModelLike) -> list[tuple[float, float]]:
    """(input width, output width) of each matmul of one layer that ``row`` splits."""
    h = float(hidden_size(model))
    kv = float(model.kv_heads * model.head_dim)
    attn = [(h, h), (h, kv), (h, kv), (h, h)]  # q, k, v, o
    if _is_moe(model):
        return attn
    f = ffn_dim(model)
    return [*attn, (h, f), (h, f), (f, h)]  # gate, up, down


def row_launches(model: ModelLike, tp: int, pp: int, tokens: float) -> float:
    """GPU operations a ``row`` stage step of ``tokens`` new tokens issues one by one because
    CUDA graphs are off (0 unless ``tp > 1``). Units: count.

    ggml-cuda turns CUDA graphs off as soon as a node reads a split buffer (ggml-cuda.cu
    ``check_node_graph_compatibility``: "Split buffers are not supported by CUDA graph
    capture"). Per split matmul and chunk of ``ggml_matmul_col_stride`` tokens,
    ``ggml_cuda_op_mul_mat`` issues ``4·tp`` of them besides the ``2(tp−1)`` copies
    :func:`link_traffic` counts: the q8_1 quantisation on the main device, one matmul kernel
    per member, the main's "input ready" event, each other member's wait on it and its "done"
    event, and the main's wait on every member. A single-token step also launches the layer's
    other kernels (``ggml_layer_kernels``) one by one, which a graph launches as one in the
    other split modes; a step of more tokens runs without graphs in every mode (ggml-cuda
    disables them for batch > 1), so there they are no extra.

    Hand-worked, the 40-layer dense model of :func:`link_traffic` at TP=2, one token: 280 split
    matmuls x 8 + 40 x 12 = 2720; 2048 tokens: 16 chunks, 280 x 8 x 16 = 35 840.
    """
    if tp <= 1:
        return 0.0
    col = load_serving_params().collectives
    layers = model.layers / pp
    matmuls = layers * len(_row_matmuls(model))
    chunks = math.ceil(tokens / col.ggml_matmul_col_stride)
    per_step = matmuls * 4 * tp * chunks
    if tokens <= 1:
        per_step += layers * col.ggml_layer_kernels
    return per_step


def split_modes(engine: str) -> SplitModes:
    """The engine's split modes (``serving.yaml`` ``collectives.split_modes``)."""
    modes = load_serving_params().collectives.split_modes
    if engine not in modes:
        raise ConfigError(f"no split modes for engine {engine!r} in {PARAMS_FILE.name}")
    return modes[engine]


@dataclass(frozen=True)
class LinkTraffic:
    """What one stage step of ``tokens`` new tokens moves, per member. Units: bytes, counts.

    ``tp_mode``/``pp_mode``: the engine's split (:class:`SplitModes`; ``none`` at 1).
    GPU to GPU, per stage step:

    * ``allreduce`` (vLLM, SGLang): ``allreduces`` collectives of ``message_bytes`` each (two
      per layer the stage holds, ``tokens · hidden · ACTIVATION_BYTES``); each member sends
      ``allreduce_sent_bytes`` (a ring sends ``2(tp−1)/tp`` of every message).
    * ``row`` (llama.cpp): ``row_matmuls`` split matmuls; for each, the main GPU sends its input
      to every other member and gathers their shares of the output: ``row_sent_bytes`` leave the
      main GPU, ``row_received_bytes`` come back to it; ``row_transfers`` counts those copies,
      which run one after the other on the main GPU's stream.
    * ``handoff_bytes``: one stage boundary's activation, sent by a stage to the next
      (``handoff``: bf16; ``layer``: ggml's f32 residual stream).

    Host to GPU (llama.cpp, what nvidia-smi dmon also counts, not link time):
    ``input_bytes`` of graph inputs every stage's GPU receives (KQ mask, positions, KV slot
    indices) and ``embedding_bytes`` the first stage receives (llama.cpp keeps the token
    embedding on the CPU: one f32 row per token).
    """

    tp_mode: Literal["none", "allreduce", "row"]
    pp_mode: Literal["none", "handoff", "layer"]
    message_bytes: float
    allreduces: float
    allreduce_sent_bytes: float
    handoff_bytes: float
    row_matmuls: float = 0.0
    row_sent_bytes: float = 0.0
    row_received_bytes: float = 0.0
    row_transfers: float = 0.0
    input_bytes: float = 0.0
    embedding_bytes: float = 0.0

    @property
    def transfers(self) -> float:
        """GPU-to-GPU operations the stage step waits on: all-reduces, row copies, the
        boundary's hand-off. Units: count."""
        return self.allreduces + self.row_transfers + (0.0 if self.pp_mode == "none" else 1.0)


def link_traffic(
    model: ModelLike,
    tp: int,
    pp: int,
    tokens: float,
    context: float = 0.0,
    engine: str | None = None,
) -> LinkTraffic:
    """The bytes and transfers a stage step of ``tokens`` new tokens at ``context`` tokens of
    KV moves (see :class:`LinkTraffic`); ``engine`` overrides ``model.engine``.

    Hand-worked, a 40-layer model with hidden 2048 = 16·128 (8 KV heads · 128 = 1024), one
    token:

    * vLLM TP=2: each all-reduce is 2048 · 2 B = 4 KiB, 80 of them per step; each member
      sends 80 · 4 KiB = 320 KiB; PP=2: one 4 KiB bf16 hand-off per token per boundary.
    * llama.cpp ``layer`` PP=2 at 1000 tokens of context: the boundary copies the f32
      residual, 2048 · 4 B = 8 KiB; every stage's GPU receives the KQ mask of
      ceil(1001/256)·256 = 1024 KV cells · 2 B (f16) = 2 KiB and 20 B of positions and KV slot
      indices (int32 + 2 · int64); the first stage the 8 KiB embedding row.
    * llama.cpp ``row`` TP=2 of a dense 8-bit model of 40 · 62 914 560 = 2.5165824 B
      parameters (ffn = (62 914 560 − 2·2048² − 2·2048·1024)/(3·2048) = 8192): 7 split
      matmuls a layer, 280 a step, 2 copies each (input out, output share back): 560
      transfers. Inputs as q8_1 (36 B per 32 values, rows padded to 512): q, k, v, o, gate, up
      read 2048 values → 2304 B each, down 8192 → 9216 B: (6 · 2304 + 9216) · 40 = 921 600 B
      sent by the main GPU. Outputs in f32, half from the other card: (2048 + 1024 + 1024 +
      2048 + 2 · 8192 + 2048) · 4 / 2 · 40 = 1 966 080 B received.
    """
    col = load_serving_params().collectives
    modes = split_modes(engine or model.engine)
    hidden = hidden_size(model)
    layers = model.layers / pp
    tp_mode: Literal["none", "allreduce", "row"] = modes.tp if tp > 1 else "none"
    pp_mode: Literal["none", "handoff", "layer"] = modes.pp if pp > 1 else "none"
    message = tokens * hidden * ACTIVATION_BYTES
    allreduces = 2 * layers if tp_mode == "allreduce" else 0.0
    matmuls = sent = received = row_transfers = 0.0
    if tp_mode == "row":
        pad = col.ggml_matrix_row_padding
        quantised = model.quant_bits < 16
        for n_in, n_out in _row_matmuls(model):
            src1 = (
                math.ceil(n_in / pad) * pad * col.ggml_q8_1_bytes_per_value
                if quantised
                else n_in * col.ggml_dst_bytes
            )
            sent += layers * tokens * src1 * (tp - 1)
            received += layers * tokens * n_out * col.ggml_dst_bytes * (tp - 1) / tp
            matmuls += layers
        row_transfers = matmuls * 2 * (tp - 1)
    handoff = 0.0
    if pp_mode == "handoff":
        handoff = message
    elif pp_mode == "layer":
        handoff = tokens * hidden * col.ggml_residual_bytes
    inputs = embedding = 0.0
    if modes.pp == "layer" or modes.tp == "row":  # a ggml engine: inputs through the host
        pad_kv = col.ggml_kv_pad_tokens
        n_kv = math.ceil((context + tokens) / pad_kv) * pad_kv
        inputs = tokens * (n_kv * col.ggml_kq_mask_bytes + col.ggml_input_bytes_per_token)
        embedding = tokens * hidden * col.ggml_residual_bytes
    return LinkTraffic(
        tp_mode=tp_mode,
        pp_mode=pp_mode,
        message_bytes=message,
        allreduces=allreduces,
        allreduce_sent_bytes=allreduces * 2 * (tp - 1) / tp * message,
        handoff_bytes=handoff,
        row_matmuls=matmuls,
        row_sent_bytes=sent,
        row_received_bytes=received,
        row_transfers=row_transfers,
        input_bytes=inputs,
        embedding_bytes=embedding,
    )


def _allreduce_s(nbytes: float, tp: int, link: Link, overhead_us: float, bw_frac: float) -> float:
    """Ring all-reduce of ``nbytes`` over ``tp`` GPUs (s)."""
    if tp <= 1:
        return 0.0
    hops = 2 * (tp - 1)
    wire = 2 * (tp - 1) / tp * nbytes / (link.bandwidth_gbps * 1e9 * bw_frac)
    return (overhead_us + hops * link.latency_us) * 1e-6 + wire


def interconnect_s(
    traffic: LinkTraffic, tp: int, link: Link, params: ServingParams, numa: float = 1.0
) -> float:
    """The time one stage step waits on the links for ``traffic`` (s).

    ``allreduce``: each collective costs the engine's overhead per link kind (× ``numa`` when
    staged through a remote node's memory) plus a ring over the link (:func:`_allreduce_s`).
    ``row``: every copy waits one copy latency (``copy_latency_us`` per link kind:
    club-3090's measured cudaMemcpyPeer latency, 15.23 µs staged, 1.01 µs peer) and the bytes
    cross at the link's rate, one after the other. Hand-offs: ``handoff`` one send/recv
    (``handoff_overhead_us`` + the link's latency), ``layer`` one ggml copy (a copy latency);
    both plus the bytes over the link.

    Hand-worked: the 560 row transfers of :func:`link_traffic`'s example over a staged link
    (15.23 µs, 15.2 GB/s), 0.92 MB out and 1.97 MB back: 560 · 15.23 µs + 2.89e6 / 15.2e9 s =
    8.53 + 0.19 = 8.72 ms.
    """
    col = params.collectives
    bw = link.bandwidth_gbps * 1e9
    copy_s = col.copy_latency_us[link.kind] * 1e-6
    inter = 0.0
    if traffic.tp_mode == "allreduce":
        overhead = col.allreduce_overhead_us[link.kind] * (numa if link.kind == "staged" else 1.0)
        inter += traffic.allreduces * _allreduce_s(
            traffic.message_bytes, tp, link, overhead, col.allreduce_bw_frac
        )
    elif traffic.tp_mode == "row":
        inter += traffic.row_transfers * copy_s
        inter += (traffic.row_sent_bytes + traffic.row_received_bytes) / bw
    if traffic.pp_mode == "handoff":
        inter += (col.handoff_overhead_us + link.latency_us) * 1e-6 + traffic.handoff_bytes / bw
    elif traffic.pp_mode == "layer":
        inter += copy_s + traffic.handoff_bytes / bw
    return inter


def _stage(
    model: ModelLike,
    gpus: Sequence[GpuHardware],
    tp: int,
    pp: int,
    tokens: int,
    seqs: int,
    context: float,
    link: Link,
    host: HostShare,
    engine: EngineStep,
    params: ServingParams,
    engine_name: str | None = None,
) -> StepTime:
    """One stage step on ``tokens`` new tokens of ``seqs`` sequences at ``context`` (s).

    Under llama.cpp's ``row`` split only the split matmuls' weights are shared among the
    ``tp`` members; the unsplit weights (a MoE's experts) and the KV cache are read by one GPU
    at a time: each layer's sit on the device the layer is assigned to (:func:`ggml_device_layers`,
    where ``tuning/vram.py`` puts them), whose stream runs the layer's attention and unsplit
    matmuls while the others wait, so a step reads all of them at one GPU's bandwidth.
    """
    n = tp * pp
    name = engine_name or model.engine
    gpu_bw = min(g.memory_bw_gbps for g in gpus) * 1e9
    dtype = compute_dtype(model, gpus[0])
    tflops = min(g.tflops(dtype) for g in gpus) * 1e12
    active = active_params_b(model) * 1e9
    hidden = hidden_size(model)
    row = tp > 1 and split_modes(name).tp == "row"
    # The parameters row divides among the members (the rest, and the KV, stay whole).
    split = min(row_split_params(model), active) if row else 0.0
    # The bytes: the step's routed experts (read_params_b), the busiest member's part of them.
    read = read_params_b(model, tokens) * 1e9
    weights = _busiest_member(read, split, tp, row) * model.quant_bits / 8 / pp
    kv = _busiest_member(seqs * context * kv_bytes_per_token(model), 0.0, tp, row) / pp
    moe = _is_moe(model)
    memory_s = (weights + kv) / (gpu_bw * engine.bw_efficiency_for(moe, tokens))
    attention_flops = 4 * model.layers * tokens * context * hidden
    flops = (
        2 * tokens * _busiest_member(active, split, tp, row)
        + _busiest_member(attention_flops, 0.0, tp, row)
    ) / pp
    compute_s = _compute_s(flops, tokens, gpus, tflops, engine, getattr(model, "quant_type", None))
    numa = params.host.remote_numa_factor if host.remote_numa else 1.0
    traffic = link_traffic(model, tp, pp, tokens, context, name)
    inter = interconnect_s(traffic, tp, link, params, numa)
    host_s = _host_step_s(model, n, seqs, host, engine, params)
    if row:  # CUDA graphs off: every launch leaves its gap on the GPU (row_launches)
        host_s += row_launches(model, tp, pp, tokens) * params.collectives.ggml_launch_gap_us * 1e-6
    if host.pcie_gbps:
        host_s += seqs * params.host.io_bytes_per_seq / (host.pcie_gbps * 1e9)
    return StepTime(
        memory_s=memory_s, compute_s=compute_s, interconnect_s=inter, host_s=host_s, tokens=tokens
    )


def _busiest_member(whole: float, split: float, tp: int, row: bool) -> float:
    """The busiest of ``tp`` members' part of ``whole`` (bytes, parameters or FLOPs) of a
    stage step: ``split`` of it is divided among the members under llama.cpp's ``row`` and
    the rest runs whole on one of them; every other tensor-parallel split divides all of it.

    Hand-worked: the 35 B-A3B's 3 B active parameters at TP=2 under ``row``, 377 M of them in
    the split attention matmuls: 377 M / 2 + 3 B − 377 M = 2.81 B; under vLLM 1.5 B.
    """
    return (split / tp + whole - split) if row else whole / tp


def _compute_s(
    flops: float,
    tokens: int,
    gpus: Sequence[GpuHardware],
    tflops: float,
    engine: EngineStep,
    quant_type: str | None = None,
) -> float:
    """Math time of a stage step of ``flops`` FLOPs (s) at the slowest member's throughput.

    A matrix-vector step (:meth:`EngineStep.matvec`) runs on the CUDA cores: each of its
    ``flops / 2`` multiply-adds (one per weight and token) costs ``matvec_int_ops_per_weight``
    integer operations (``matvec_int_ops_by_quant`` for the weights' ``quant_type`` where it
    names one) at the GPU's ``int32_tops``; a member with no ``int32_tops`` leaves the
    step memory-bound (0 s of math). Every other step runs on the tensor cores at ``mfu_frac``
    of ``tflops`` (FLOP/s)."""
    ops_per_weight = engine.int_ops_for(quant_type)
    if ops_per_weight is not None and engine.matvec(tokens):
        known = [g.int32_tops for g in gpus if g.int32_tops is not None]
        if len(known) < len(gpus):
            return 0.0
        return flops / 2 * ops_per_weight / (min(known) * 1e12)
    return flops / (tflops * engine.mfu_frac)


def _host_step_s(
    model: ModelLike,
    gpus: int,
    seqs: int,
    host: HostShare,
    engine: EngineStep,
    params: ServingParams,
) -> float:
    """The CPU's part of one micro-batch step (s): scheduling, input preparation, sampling for
    ``seqs`` sequences, stretched when the engine has fewer (or shared, or remote) cores."""
    numa = params.host.remote_numa_factor if host.remote_numa else 1.0
    return (engine.host_step_s + engine.host_per_seq_s * seqs) * _host_factor(
        model.engine, gpus, host, numa
    )


def _round(stage: StepTime, host_step_s: float, pp: int, in_flight: int, tokens: float) -> StepTime:
    """One decode round over ``pp`` stages (every sequence in flight gains a token).

    The GPU work, the links and the host-to-GPU copies are paid at every stage; the CPU's step
    (``host_step_s``, :func:`_host_step_s`) once per micro-batch in flight, not once per stage:
    with fewer micro-batches than stages (one sequence through a layer split) the token's host
    work runs once while it crosses the stages — llama.cpp builds one graph over all GPUs per
    token and samples once, vLLM schedules one step per micro-batch. With ``pp`` in flight this
    is ``pp`` times the stage step.
    """
    return StepTime(
        memory_s=stage.memory_s * pp,
        compute_s=stage.compute_s * pp,
        interconnect_s=stage.interconnect_s * pp,
        host_s=(stage.host_s - host_step_s) * pp + host_step_s * in_flight,
        tokens=tokens,
    )


def _host_factor(engine: str, gpus: int, host: HostShare, numa: float) -> float:
    """How much longer host work takes with fewer (or shared) cores than the engine's allotment."""
    from tuning.cpuplan.rules import load_rules

    rule = load_rules().engines.get(engine)
    needed = rule.cores_for(gpus) if rule is not None else 1
    cores = needed if host.cores is None else host.cores
    effective = cores / (1 + host.other_engines)
    return max(1.0, needed / effective) * numa


def _scaled(step: StepTime, factor: float, tokens: float) -> StepTime:
    return step.scaled(factor, tokens)


def mixed_prefill_tokens(seqs: int, chunk: int, input_per_output: float | None) -> int:
    """Prompt tokens one ``mixed`` step of ``seqs`` decoding sequences carries beside their
    decode tokens. Units: tokens.

    ``input_per_output`` (a serving benchmark's input throughput over its output throughput):
    the step yields ``seqs`` output tokens, so it prefills ``seqs · input_per_output`` prompt
    tokens, at most one ``chunk`` (the engine's token budget per step); None: one full chunk
    every step (prompts always waiting). Hand-worked: 32 sequences at 2.04 prompt tokens per
    output token carry ceil(65.3) = 66 prompt tokens; at 100 they carry the 2048-token chunk.
    """
    if input_per_output is None:
        return chunk
    # less a float's rounding error: 100 × 1.1 is 110.00000000000001, which is 110 tokens, not 111
    return max(1, min(chunk, math.ceil(seqs * input_per_output - 1e-9)))


def predict(
    model: ModelLike,
    gpus: Sequence[GpuHardware],
    *,
    tp: int = 1,
    pp: int = 1,
    concurrency: int = 1,
    context: int | None = None,
    phase: Phase = "decode",
    link: Link | None = None,
    host: HostShare | None = None,
    prompt_tokens: int | None = None,
    engine: str | None = None,
    input_per_output: float | None = None,
) -> Prediction:
    """Predict one model's serving on ``gpus`` (``tp · pp`` of them, stage-major).

    ``concurrency``: sequences in flight; ``context``: tokens each has in its KV cache while it
    decodes (default: the model's ``context``); ``prompt_tokens``: the prompt TTFT is for
    (default: ``context``); ``link``: slowest path of the group (default: :func:`nominal_link`);
    ``engine``: overrides ``model.engine``; ``input_per_output``: in ``mixed``, the prompt
    tokens prefilled per output token (:func:`mixed_prefill_tokens`). Units: tokens/s and
    seconds at full clock.

    Hand-worked example: a 70.6 B AWQ model (4 bits: 35.3 GB) at TP=2 on two RTX 4090s
    (1008 GB/s) under vLLM (efficiency 0.70), one sequence, empty context: each card reads
    17.65 GB per step, 17.65e9 / (1008e9 · 0.70) = 25.0 ms; 80 layers × 2 all-reduces of
    16 KiB staged through host memory (14 µs per hop: two driver copies) cost
    160 × (45 + 2·14) µs ≈ 12 ms; host 1.5 ms → ≈ 26 tok/s.
    """
    if tp < 1 or pp < 1:
        raise ValueError(f"tp and pp must be >= 1, got tp={tp} pp={pp}")
    if len(gpus) != tp * pp:
        raise ValueError(f"{len(gpus)} GPU(s) given for tp={tp} × pp={pp}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    params = load_serving_params()
    name = engine or model.engine
    if name not in params.engines:
        raise ConfigError(f"no serving parameters for engine {name!r} in {PARAMS_FILE.name}")
    eng = params.engines[name]
    ctx = float(context if context is not None else getattr(model, "context", 0))
    the_link = link if link is not None else nominal_link()
    the_host = host if host is not None else HostShare()
    dtype = compute_dtype(model, gpus[0])

    # Decode: micro-batches of m sequences; min(concurrency, pp) of them in flight.
    m = max(1, math.ceil(concurrency / pp))
    stage = _stage(model, gpus, tp, pp, m, m, ctx, the_link, the_host, eng, params, name)
    in_flight = min(concurrency, pp)
    host_step = _host_step_s(model, tp * pp, m, the_host, eng, params)
    decode = _round(stage, host_step, pp, in_flight, concurrency)
    per_seq = 1.0 / decode.total_s
    busy = in_flight / pp

    # Prefill: chunks of the prompt, each through every stage; chunks pipeline over stages.
    prompt = int(prompt_tokens if prompt_tokens is not None else max(ctx, 1))
    chunk = min(eng.prefill_chunk_tokens, prompt)
    chunks = math.ceil(prompt / chunk)
    pstage = _stage(
        model, gpus, tp, pp, chunk, 1, prompt / 2, the_link, the_host, eng, params, name
    )
    prefill_s = (chunks + pp - 1) * pstage.total_s
    one = _stage(model, gpus, tp, pp, 1, 1, float(prompt), the_link, the_host, eng, params, name)
    first = _round(one, _host_step_s(model, tp * pp, 1, the_host, eng, params), pp, 1, 1)
    ttft = prefill_s + first.total_s
    mixed = None
    if phase == "mixed":
        # a ratio's prompt tokens fill up to the engine's token budget; without one, each
        # step carries the prompt's next chunk
        budget = chunk if input_per_output is None else eng.prefill_chunk_tokens
        mixed_tokens = m + mixed_prefill_tokens(m, budget, input_per_output)
        mstage = _stage(
            model, gpus, tp, pp, mixed_tokens, m, ctx, the_link, the_host, eng, params, name
        )
        mixed = _round(mstage, host_step, pp, in_flight, concurrency)
    return Prediction(
        phase=phase,
        tokens_per_s=concurrency * per_seq,
        tokens_per_s_per_seq=per_seq,
        prefill_tokens_per_s=chunk / pstage.total_s,
        ttft_s=ttft,
        decode_step=decode,
        prefill_step=_scaled(pstage, pp, chunk),
        busy_frac=busy,
        dtype=dtype,
        mixed_step=mixed,
    )
