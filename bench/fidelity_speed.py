"""Speeds and ratios of the serving step-time model against published figures.

Each figure runs :func:`tuning.model.serving.predict` on the published setup; the model's
fitted parameters (``tuning/model/serving.yaml``: bandwidth efficiency, all-reduce overhead per
link kind) are the only knobs, and each cites the figure it was fitted to.

    .venv/bin/python bench/fidelity.py
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fidelity_common import Figure

from tuning.model.serving import GpuHardware, gpu_from_preset, link_for_topology, predict

CLUB_3090 = (
    "noonghunna/club-3090 docs/HARDWARE.md, 'NVLink': single-stream TPS on dual-card "
    "~1.6-1.8x single-card with NVLink (vs ~1.05x without)"
)
VLLM_PCIE = (
    "vLLM docs, tensor/pipeline parallelism (mintlify.com/vllm-project/vllm/features/"
    "tensor-parallelism: TP wants 'fast interconnect (NVLink)', PP when 'GPUs lack NVLink "
    "(e.g., L40S)'; docs.vllm.ai/en/latest/serving/parallelism_scaling)"
)
JEANFBRITO = (
    "jeanfbrito.github.io rtx-3090-power-limit-sweet-spot: 27B dense GGUF (16.5 GB) on "
    "llama.cpp, 32.0 tok/s at 350 W (the decode sweep in tuning/backends/presets.yaml)"
)


@dataclass(frozen=True)
class Arch:
    """A model as the step-time model reads it (``inventory.models.ModelSpec``'s fields)."""

    engine: str
    params_b: float
    quant_bits: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    kv_cache_bits: int = 16
    context: int = 0


#: club-3090's Qwen3.6-27B AutoRound INT4 on vLLM. 27 B at ~4 bits; 64 layers, 40 heads × 128
#: (hidden 5120), 8 KV heads as in the Qwen 27-32B dense family - estimate (the repo does not
#: list the architecture; its hybrid attention is not modelled).
QWEN_27B_INT4 = Arch("vllm", 27.0, 4.0, 64, 40, 8, 128, kv_cache_bits=8)

#: jeanfbrito's 27B dense GGUF: 16.5 GB of weights -> 4.89 bits per weight over 27 B;
#: architecture as above - estimate.
DENSE_27B_GGUF = Arch("llama.cpp", 27.0, 16.5e9 * 8 / 27e9, 64, 40, 8, 128)


def _3090() -> GpuHardware:
    return gpu_from_preset("rtx3090")


def _single_stream(arch: Arch, tp: int, topo: str) -> float:
    gpus = [_3090()] * tp
    link = link_for_topology(topo) if tp > 1 else None
    return predict(arch, gpus, tp=tp, concurrency=1, context=2048, link=link).tokens_per_s


def dual_3090_pcie_ratio() -> float:
    """Two 3090s TP=2 over PCIe without P2P (PHB: NCCL_P2P_DISABLE=1, staged) vs one card."""
    return _single_stream(QWEN_27B_INT4, 2, "PHB") / _single_stream(QWEN_27B_INT4, 1, "X")


def dual_3090_nvlink_ratio() -> float:
    """The same with a 4-link NVLink bridge (NV4)."""
    return _single_stream(QWEN_27B_INT4, 2, "NV4") / _single_stream(QWEN_27B_INT4, 1, "X")


def _serving(topo: str) -> float:
    """Aggregate tok/s of 2 replicas at TP=2 over TP=4, four 3090s, 16 sequences in all."""
    gpus = [_3090()]
    link = link_for_topology(topo)
    tp4 = predict(QWEN_27B_INT4, gpus * 4, tp=4, concurrency=16, context=4096, link=link)
    tp2 = predict(QWEN_27B_INT4, gpus * 2, tp=2, concurrency=8, context=4096, link=link)
    return 2 * tp2.tokens_per_s / tp4.tokens_per_s


def pcie_replicas_over_tp4() -> float:
    return _serving("PHB")


def single_3090_gguf_speed() -> float:
    return predict(DENSE_27B_GGUF, [_3090()], concurrency=1, context=512).tokens_per_s


FIGURES: list[Figure] = [
    Figure(
        label="club-3090 two 3090s TP=2 over PCIe vs one card (single stream)",
        kind="ratio",
        model=dual_3090_pcie_ratio,
        low=1.05,
        high=1.05,
        unit="x",
        source=CLUB_3090,
    ),
    Figure(
        label="club-3090 two 3090s TP=2 over NVLink vs one card (single stream)",
        kind="ratio",
        model=dual_3090_nvlink_ratio,
        low=1.6,
        high=1.8,
        unit="x",
        source=CLUB_3090,
    ),
    Figure(
        label="vLLM: PCIe-only 4-GPU box, 2 replicas of TP=2 over TP=4 (prefer PP/replicas)",
        kind="ratio",
        model=pcie_replicas_over_tp4,
        low=1.0,
        high=4.0,
        unit="x",
        source=VLLM_PCIE + "; qualitative: any gain (>= 1x) meets it",
    ),
    Figure(
        label="RTX 3090 27B dense GGUF decode at the default limit",
        kind="ratio",
        model=single_3090_gguf_speed,
        low=32.0,
        high=32.0,
        unit="tok/s",
        source=JEANFBRITO,
    ),
]
