"""VRAM estimator: how much memory one replica of a model needs on each of its GPUs.

Per GPU of a group split ``tp`` (tensor parallel) × ``pp`` (pipeline parallel)::

    layers_per_stage = ceil(layers / pp)           # llama.cpp layer: ceil((layers+1)/pp)
    weights_mib      = params_b·1e9 · quant_bits/8 · layers_per_stage/layers / tp   / 2^20
    kv_heads_per_gpu = max(1, kv_heads / tp)        # vLLM replicates KV heads when tp > kv_heads
    kv_mib           = layers_per_stage · kv_heads_per_gpu · head_dim · 2 (K and V)
                       · kv_cache_bits/8 · context · max_sequences                  / 2^20
    need_mib         = weights_mib + kv_mib + overhead_mib[engine]

The engine's split modes (``serving.yaml`` ``collectives.split_modes``,
:func:`tuning.model.serving.split_modes`, the step model's definition) decide where llama.cpp's
memory goes. llama.cpp assigns every layer to one device by ``--tensor-split`` in every split
mode (src/llama-model.cpp ``load_tensors``: ``dev_layer[il]`` from ``splits``, counting the
output layer, so with ``-ngl`` covering it the first device takes ``ceil((layers+1)/k)`` of the
layers over ``k`` devices: :func:`tuning.model.serving.ggml_device_layers`). Under ``layer``
that is the stage. Under ``row`` (its tensor parallelism) the
layer's KV cache and the tensors a split buffer cannot hold (a MoE's experts, ``MUL_MAT_ID``)
live on that device; under ``row`` each ``MUL_MAT`` weight of the layer is in addition split by
rows over all the devices (``make_gpu_buft_list``: the device's split buffer type first). So
per member, with ``layers_here = ggml_device_layers(layers, tp)`` (the busiest, the first)::

    weights_mib = (split · weights / tp + (1 − split) · weights · layers_here/layers) / 2^20
    kv_mib      = layers_here · kv_heads · head_dim · 2 · kv_cache_bits/8 · context
                  · max_sequences                                               / 2^20

with ``split`` the share of the parameters row divides (:func:`tuning.model.serving.
row_split_params`: all of a dense model, a MoE's attention projections). KV heads are never
replicated: each layer's cache sits whole on one device.

A GPU fits when ``need_mib <= memory_total_mib · (1 − headroom_pct/100)``; plans that do not
fit are refused. ``overhead_mib`` covers what is neither weights nor KV cache: the CUDA context
(≈ 0.3–0.6 GiB per process on Ampere/Ada), the activation peak of vLLM's profiling forward
pass and its captured CUDA graphs (vLLM counts all of these inside ``--gpu-memory-utilization``,
"the fraction of GPU memory used for the model executor": weights + activations + KV cache),
and NCCL buffers for multi-GPU groups. llama.cpp has no CUDA graphs pool and a smaller compute
buffer. The numbers are deliberately round and conservative; the headroom absorbs the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inventory.models import ModelSpec
from tuning.model.serving import ggml_device_layers, row_split_params, split_modes

MIB = 1 << 20

#: Per-GPU runtime overhead by engine. Units: MiB. See the module docstring.
ENGINE_OVERHEAD_MIB: dict[str, int] = {"vllm": 2048, "sglang": 2048, "llama.cpp": 768}
#: Extra per-GPU overhead of a multi-GPU group (NCCL communicators, custom all-reduce buffers).
MULTI_GPU_OVERHEAD_MIB = 256


@dataclass(frozen=True)
class VramEstimate:
    """Memory one replica needs on each GPU of its group. Units: MiB."""

    tp: int
    pp: int
    weights_mib: float
    kv_cache_mib: float
    overhead_mib: float

    @property
    def need_mib(self) -> float:
        """Total per GPU: weights + KV cache + overhead. Units: MiB."""
        return self.weights_mib + self.kv_cache_mib + self.overhead_mib

    @property
    def need_mib_int(self) -> int:
        """``need_mib`` rounded up to a whole MiB."""
        return math.ceil(self.need_mib)


def kv_bytes_per_token(model: ModelSpec) -> float:
    """KV cache of one token over the whole model (all layers, K and V). Units: bytes."""
    return model.layers * model.kv_heads * model.head_dim * 2 * model.kv_cache_bits / 8


def estimate(model: ModelSpec, tp: int = 1, pp: int = 1) -> VramEstimate:
    """Per-GPU VRAM of one replica of ``model`` split ``tp`` × ``pp`` (formula: module doc):
    the busiest member's, which every member of the group is checked against."""
    if tp < 1 or pp < 1:
        raise ValueError("tp and pp must be at least 1")
    modes = split_modes(model.engine)
    if pp > 1 and modes.pp == "layer":
        layers_per_stage = ggml_device_layers(model.layers, pp)
    else:
        layers_per_stage = math.ceil(model.layers / pp)
    stage_share = layers_per_stage / model.layers
    kv_per_layer_head = (
        model.head_dim * 2 * model.kv_cache_bits / 8 * model.context * model.max_sequences
    )
    if tp > 1 and modes.tp == "row":
        layers_here = ggml_device_layers(layers_per_stage, tp)
        split = row_split_params(model) / (model.params_b * 1e9)
        stage_bytes = model.weights_bytes * stage_share
        weights_mib = (
            split * stage_bytes / tp + (1 - split) * stage_bytes * layers_here / layers_per_stage
        ) / MIB
        kv_mib = layers_here * model.kv_heads * kv_per_layer_head / MIB
    else:
        weights_mib = model.weights_bytes * stage_share / tp / MIB
        kv_heads_per_gpu = max(1.0, model.kv_heads / tp)
        kv_mib = layers_per_stage * kv_heads_per_gpu * kv_per_layer_head / MIB
    overhead = ENGINE_OVERHEAD_MIB.get(model.engine, ENGINE_OVERHEAD_MIB["vllm"])
    if tp * pp > 1:
        overhead += MULTI_GPU_OVERHEAD_MIB
    return VramEstimate(
        tp=tp, pp=pp, weights_mib=weights_mib, kv_cache_mib=kv_mib, overhead_mib=overhead
    )


def usable_mib(memory_total_mib: int, headroom_pct: float) -> float:
    """VRAM a plan may fill on a GPU of ``memory_total_mib``, keeping ``headroom_pct`` free."""
    return memory_total_mib * (1 - headroom_pct / 100)


def gpu_memory_utilization(
    need_mib: float, memory_total_mib: int, *, headroom_pct: float, exclusive: bool
) -> float:
    """vLLM's ``--gpu-memory-utilization`` for a GPU (a fraction of its total memory).

    An exclusive GPU gives the engine everything but the headroom (more KV cache than the
    estimate asked for is free throughput). A shared GPU gives exactly the estimate, rounded
    up to 0.01, so the engines sharing it cannot starve each other.
    """
    cap = 1 - headroom_pct / 100
    if exclusive:
        return round(math.floor(cap * 100) / 100, 2)
    return round(min(cap, math.ceil(need_mib / memory_total_mib * 100) / 100), 2)
