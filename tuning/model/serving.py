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
                 / (tensor_tflops[dtype] · mfu)   [mfu: matvec_mfu for steps of few tokens]
    allreduce  = overhead[link kind] + 2(tp−1) · latency + 2(tp−1)/tp · bytes / (bw · bw_frac)
    interconnect_s = 2 · layers/pp · allreduce(m · hidden · 2 B)  [tp > 1]
                     + handoff(m · hidden · 2 B)                   [pp > 1]
    host_s     = (host_step_s + host_per_seq_s · m) · max(1, cores_needed / cores_effective)
                 · (remote_numa_factor if the cores are on another NUMA node)

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
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from inventory.fields import StrictModel
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
    #: Steps of at most ``matvec_max_tokens`` tokens run the engine's matrix-vector kernels
    #: (no tensor cores) at ``matvec_mfu_frac`` of the dense tensor throughput; None: every
    #: step runs at ``mfu_frac``.
    matvec_mfu_frac: float | None = Field(default=None, gt=0, le=1)
    matvec_max_tokens: int | None = Field(default=None, ge=1, le=1024)
    #: A mixture of experts' matrix-vector steps (at most ``matvec_max_tokens`` tokens) read
    #: many small expert matrices (one grouped matrix-vector product per layer) at
    #: ``moe_bw_efficiency_frac`` of the datasheet bandwidth instead of ``bw_efficiency_frac``;
    #: None: as a dense model.
    moe_bw_efficiency_frac: float | None = Field(default=None, gt=0, le=1)

    def bw_efficiency_for(self, moe: bool, tokens: int) -> float:
        """The share of datasheet bandwidth the reads of a step of ``tokens`` new tokens
        achieve (``moe``: the model reads only some of its experts per token)."""
        matvec = tokens <= (self.matvec_max_tokens or 0)
        if moe and matvec and self.moe_bw_efficiency_frac is not None:
            return self.moe_bw_efficiency_frac
        return self.bw_efficiency_frac

    def mfu_for(self, tokens: int) -> float:
        """The share of tensor throughput a step of ``tokens`` new tokens achieves."""
        if self.matvec_mfu_frac is not None and tokens <= (self.matvec_max_tokens or 0):
            return self.matvec_mfu_frac
        return self.mfu_frac


class Collectives(StrictModel):
    allreduce_overhead_us: dict[LinkKind, float]
    allreduce_bw_frac: float = Field(gt=0, le=1)
    handoff_overhead_us: float = Field(ge=0)
    nvlink_bridge_link_gbps: float = Field(gt=0)
    nvlink_datacenter_link_gbps: float = Field(gt=0)
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
    """One GPU's throughput figures. Units: GB/s (10^9 B/s), dense tensor TFLOPS per dtype.

    ``preset``: the ``presets.yaml`` key the figures come from (its power split and clocks
    are what :mod:`tuning.model.split` puts under a cap); ``None`` when built by hand."""

    name: str
    memory_bw_gbps: float
    tensor_tflops: dict[str, float] = field(default_factory=dict)
    preset: str | None = None

    def tflops(self, dtype: str) -> float:
        """Dense tensor TFLOPS for ``dtype``; FP16 where the GPU has no faster path for it."""
        return self.tensor_tflops.get(dtype, self.tensor_tflops["fp16"])


def gpu_from_preset(key: str) -> GpuHardware:
    """The :class:`GpuHardware` of a ``presets.yaml`` preset (its cited figures)."""
    from tuning.backends.sim_config import load_presets

    presets = load_presets().presets
    if key not in presets:
        raise ConfigError(f"unknown GPU preset {key!r}; known: {', '.join(sorted(presets))}")
    p = presets[key]
    tflops = {"fp16": p.fp16_tensor_tflops}
    extra = getattr(p, "tensor_tflops", None)
    if extra:
        tflops.update({k: float(v) for k, v in extra.items() if v})
    return GpuHardware(
        name=p.name, memory_bw_gbps=p.memory_bw_gbps, tensor_tflops=tflops, preset=key
    )


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


def compute_dtype(model: ModelLike, gpu: GpuHardware) -> str:
    """The tensor path the matmuls take: FP8 for 8-bit weights on vLLM/SGLang where the GPU has
    FP8 tensor cores; FP16 otherwise (4-bit AWQ/GPTQ and GGUF kernels dequantise to FP16)."""
    if model.quant_bits == 8 and model.engine != "llama.cpp" and "fp8" in gpu.tensor_tflops:
        return "fp8"
    return "fp16"


@dataclass(frozen=True)
class LinkTraffic:
    """What one stage step of ``tokens`` new tokens puts on the GPU-to-GPU links. Units: bytes.

    ``message_bytes``: one activation tensor (``tokens · hidden · ACTIVATION_BYTES``), the size
    of each tensor-parallel all-reduce and of each pipeline hand-off; ``allreduces``: how many
    the stage runs (two per layer it holds: after attention and after the MLP; 0 at tp = 1);
    ``allreduce_sent_bytes``: what each member sends for them (a ring all-reduce sends
    ``2(tp−1)/tp`` of the message); ``handoff_bytes``: sent to the next stage (0 at pp = 1).
    """

    message_bytes: float
    allreduces: float
    allreduce_sent_bytes: float
    handoff_bytes: float


def link_traffic(model: ModelLike, tp: int, pp: int, tokens: float) -> LinkTraffic:
    """The bytes a stage step moves between GPUs (see :class:`LinkTraffic`).

    Hand-worked example: a 40-layer model with hidden 2048 at tp = 2, one token: each
    all-reduce is 2048 · 2 B = 4 KiB, 80 of them per step, each member sends 80 · 4 KiB =
    320 KiB; at pp = 2 (tp = 1) one 4 KiB hand-off per token per boundary.
    """
    message = tokens * model.attention_heads * model.head_dim * ACTIVATION_BYTES
    allreduces = 2 * model.layers / pp if tp > 1 else 0.0
    return LinkTraffic(
        message_bytes=message,
        allreduces=allreduces,
        allreduce_sent_bytes=allreduces * 2 * (tp - 1) / tp * message,
        handoff_bytes=message if pp > 1 else 0.0,
    )


def _allreduce_s(nbytes: float, tp: int, link: Link, overhead_us: float, bw_frac: float) -> float:
    """Ring all-reduce of ``nbytes`` over ``tp`` GPUs (s)."""
    if tp <= 1:
        return 0.0
    hops = 2 * (tp - 1)
    wire = 2 * (tp - 1) / tp * nbytes / (link.bandwidth_gbps * 1e9 * bw_frac)
    return (overhead_us + hops * link.latency_us) * 1e-6 + wire


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
) -> StepTime:
    """One stage step on ``tokens`` new tokens of ``seqs`` sequences at ``context`` (s)."""
    n = tp * pp
    gpu_bw = min(g.memory_bw_gbps for g in gpus) * 1e9
    dtype = compute_dtype(model, gpus[0])
    tflops = min(g.tflops(dtype) for g in gpus) * 1e12
    active = active_params_b(model) * 1e9
    hidden = model.attention_heads * model.head_dim
    weights = active * model.quant_bits / 8 / n
    kv = seqs * context * kv_bytes_per_token(model) / n
    moe = active < model.params_b * 1e9
    memory_s = (weights + kv) / (gpu_bw * engine.bw_efficiency_for(moe, tokens))
    flops = (2 * active * tokens + 4 * model.layers * tokens * context * hidden) / n
    compute_s = flops / (tflops * engine.mfu_for(tokens))
    col = params.collectives
    numa = params.host.remote_numa_factor if host.remote_numa else 1.0
    overhead = col.allreduce_overhead_us[link.kind] * (numa if link.kind == "staged" else 1.0)
    traffic = link_traffic(model, tp, pp, tokens)
    inter = 0.0
    if tp > 1:
        inter += traffic.allreduces * _allreduce_s(
            traffic.message_bytes, tp, link, overhead, col.allreduce_bw_frac
        )
    if pp > 1:
        inter += (col.handoff_overhead_us + link.latency_us) * 1e-6 + traffic.handoff_bytes / (
            link.bandwidth_gbps * 1e9
        )
    host_s = _host_step_s(model, n, seqs, host, engine, params)
    if host.pcie_gbps:
        host_s += seqs * params.host.io_bytes_per_seq / (host.pcie_gbps * 1e9)
    return StepTime(
        memory_s=memory_s, compute_s=compute_s, interconnect_s=inter, host_s=host_s, tokens=tokens
    )


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
) -> Prediction:
    """Predict one model's serving on ``gpus`` (``tp · pp`` of them, stage-major).

    ``concurrency``: sequences in flight; ``context``: tokens each has in its KV cache while it
    decodes (default: the model's ``context``); ``prompt_tokens``: the prompt TTFT is for
    (default: ``context``); ``link``: slowest path of the group (default: :func:`nominal_link`);
    ``engine``: overrides ``model.engine``. Units: tokens/s and seconds at full clock.

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
    stage = _stage(model, gpus, tp, pp, m, m, ctx, the_link, the_host, eng, params)
    in_flight = min(concurrency, pp)
    host_step = _host_step_s(model, tp * pp, m, the_host, eng, params)
    decode = _round(stage, host_step, pp, in_flight, concurrency)
    per_seq = 1.0 / decode.total_s
    busy = in_flight / pp

    # Prefill: chunks of the prompt, each through every stage; chunks pipeline over stages.
    prompt = int(prompt_tokens if prompt_tokens is not None else max(ctx, 1))
    chunk = min(eng.prefill_chunk_tokens, prompt)
    chunks = math.ceil(prompt / chunk)
    pstage = _stage(model, gpus, tp, pp, chunk, 1, prompt / 2, the_link, the_host, eng, params)
    prefill_s = (chunks + pp - 1) * pstage.total_s
    one = _stage(model, gpus, tp, pp, 1, 1, float(prompt), the_link, the_host, eng, params)
    first = _round(one, _host_step_s(model, tp * pp, 1, the_host, eng, params), pp, 1, 1)
    ttft = prefill_s + first.total_s
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
    )
