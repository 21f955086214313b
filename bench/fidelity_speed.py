"""Speeds and ratios of the serving step-time model against published figures.

Each figure runs :func:`tuning.model.serving.predict` on the published setup; the model's
fitted parameters (``tuning/model/serving.yaml``: bandwidth efficiency, all-reduce overhead per
link kind) are the only knobs, and each cites the figure it was fitted to.

    .venv/bin/python bench/fidelity.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fidelity_common import Figure

from tuning.model.serving import (
    GpuHardware,
    gpu_from_preset,
    link_for_topology,
    link_traffic,
    predict,
)

CLUB_3090 = (
    "noonghunna/club-3090 docs/HARDWARE.md@0d51e74335d2 line 134: 'If you have NVLink installed "
    "and working, single-stream TPS on dual-card will be ~1.6-1.8x single-card (vs ~1.05x "
    "without)'"
)
#: club-3090 docs/PCIE_P2P.md as of commit e8581033cd07a77c023fa880808a7edaabeec311 (its last
#: change in the stored snapshot, 2026-08-21), section 0a, first written in 4ecdfb17 (#893);
#: commit 11fcc9cd (#887): "~7 MB/s measured on decode, vs ~1400 MB/s on row/tensor". Measured
#: with nvidia-smi dmon PCIe rx/tx counters (scripts/lib/capture.sh cap_dmon_start) on the
#: maintainer's 2x RTX 3090 (ROMED8-2T, PCIe gen4, P2P off) under llama.cpp.
CLUB_P2P = "noonghunna/club-3090 docs/PCIE_P2P.md@e8581033cd07 section 0a"
CLUB_MOE = (
    "noonghunna/club-3090 docs/HARDWARE.md@0d51e74335d2 line 239: '3090 | air | llama.cpp default "
    "| Qwen3.6 35B-A3B (MoE) Q4_K_XL | 370W (stock) | 136.84'"
)
CLUB_PP_TRAFFIC = (
    CLUB_P2P + ": 'PP (`layer`) | activations at the boundary - **~7 MB/s measured**' "
    "(GPU0: layers 0-19 -> GPU1: layers 20-39; 1 GPU 128.72 -> 2 GPU `layer` 144.29 TPS)"
)
CLUB_PP_SPEED = (
    CLUB_P2P + ": 'PP is not parallelism at `-np 1` ... Measured: 1 GPU **128.72** -> 2 GPU "
    "`layer` **144.29** TPS, just **+12%**. The second card is buying capacity, not speed'"
)
CLUB_TP_TRAFFIC = (
    CLUB_P2P + ": 'TP (`row`/`tensor`) | all-reduce every layer - **~1400 MB/s**, many small "
    "serialized transfers'"
)
IK_ROW = (
    "ikawrakow/ik_llama.cpp PR #1106 (2026-01-05, Qwen3-14B Q4_0, 2x RTX 3090, llama-sweep-bench): "
    "'At 40k tokens split mode graph ... outperforms the default split mode layer by ... 53% (TG). "
    "Comparing to mainline's attempt at tensor parallel [split mode row], this PR is ... 2X (TG) "
    "faster' -> row / layer = 1.53 / 2 = 0.765 at 40k"
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
    #: The GGUF's weight type (ggml's name), where the figure's file names one.
    quant_type: str | None = None


#: club-3090's Qwen3.6-27B AutoRound INT4 on vLLM. 27 B at ~4 bits; 64 layers, 40 heads × 128
#: (hidden 5120), 8 KV heads as in the Qwen 27-32B dense family - estimate (the repo does not
#: list the architecture; its hybrid attention is not modelled).
QWEN_27B_INT4 = Arch("vllm", 27.0, 4.0, 64, 40, 8, 128, kv_cache_bits=8)

#: jeanfbrito's 27B dense GGUF: 16.5 GB of weights -> 4.89 bits per weight over 27 B;
#: architecture as above - estimate.
DENSE_27B_GGUF = Arch("llama.cpp", 27.0, 16.5e9 * 8 / 27e9, 64, 40, 8, 128)


@dataclass(frozen=True)
class MoeArch(Arch):
    """A mixture-of-experts model: ``active_params_b`` of ``params_b`` read per token."""

    active_params_b: float = 0.0


#: The 40-layer model of PCIE_P2P.md's diagram (layers 0-19 / 20-39) at ~129-144 tok/s on 3090s:
#: club-3090's llama.cpp Qwen3.6-35B-A3B (3 B active, Q4_K_XL ~4.6 bits, hidden 2048 = 16 x 128;
#: HARDWARE.md lists it at 114-137 tok/s on one 3090). The doc does not name the model -
#: estimate.
QWEN_35B_A3B_GGUF = MoeArch("llama.cpp", 35.0, 4.6, 40, 16, 2, 128, active_params_b=3.0)


#: ik_llama.cpp PR #1106's model: Qwen3-14B (config.json: 40 layers, 40 heads x 128, 8 KV
#: heads; 14.8 B) at Q4_0 (4.5 bits per weight: 18 B per 32 values).
QWEN3_14B_Q4_0 = Arch("llama.cpp", 14.8, 4.5, 40, 40, 8, 128)


#: Llama-2-7B Q4_0 as llama.cpp's CUDA scoreboard runs it (config.json: 32 layers, 32 heads x
#: 128, no GQA; llama-bench prints 3.56 GiB over 6.74 B: 4.54 bits per weight). tg128 decodes
#: 128 tokens from an empty prompt: ~64 tokens of KV on average.
LLAMA2_7B_Q4_0 = Arch("llama.cpp", 6.74, 4.54, 32, 32, 32, 128, quant_type="Q4_0")

#: ggml-org/llama.cpp discussion #15013 ("Performance of llama.cpp on NVIDIA CUDA"): the
#: scoreboard's llama-2-7b.Q4_0.gguf, `llama-bench -m llama-2-7b.Q4_0.gguf -ngl 99 -fa 0`,
#: row 'llama 7B Q4_0 | 3.56 GiB | 6.74 B | CUDA | 99 | tg128'. The comment rows are as quoted
#: (verbatim, comment id, build) in Sahil170595/Chimeraforge scripts/validation_sources.json;
#: the two summary-table figures as scraped (chip, value, commit) in smoothyy3/willitrun
#: data/normalized/llama_cpp_cuda.jsonl (2026-04-05).
SCOREBOARD = "https://github.com/ggml-org/llama.cpp/discussions/15013"
#: (preset, published tok/s (one value or the range over two builds), where).
SCOREBOARD_TG128: tuple[tuple[str, float | tuple[float, float], str], ...] = (
    (
        "rtx3090", 158.16,
        "comment 13960712, build c76b420e (2025-08-01): "
        "'RTX 3090 | 5174.69 ± 21.83 | 158.16 ± 0.21 | c76b420e'",
    ),
    (
        "rtx4090", 186.21,
        "comment 14016393, build 224145325 (6098, 2025-08-06): '| tg128 | 186.21 ± 0.13 |'",
    ),
    (
        "rtx5090", 290.02,
        "comment 14761847, build 8cf6b42d4 (6824, 2025-10-23), a Zotac card at 450 W: "
        "'| 0 | tg128 | 290.02 ± 1.10 |'",
    ),
    ("rtx_a6000", 138.73, "summary table, FA off, commit 4795c91: RTX A6000 138.73 ± 2.75"),
    ("rtx6000_ada", 176.07, "summary table, FA off, commit b8e09f0: RTX 6000 Ada 176.07 ± 0.26"),
    (
        "a100_80gb_pcie", 185.91,
        "comment 14322852, build 5143fa89 (6392, 2025-09-05): '| 0 | tg128 | 185.91 ± 7.07 |'",
    ),
    (
        "h100_pcie", 219.23,
        "comment 14322934, build 5143fa89 (6392, 2025-09-05): '| 0 | tg128 | 219.23 ± 0.55 |'",
    ),
    (
        "h100_sxm", (267.81, 303.08),
        "comments 14322969 (build 5143fa89, 2025-09-05: 267.81 ± 1.54) and 14978771 "
        "(build 1411d9275, 2025-11-15: 303.08 ± 0.80), the range over the two builds",
    ),
    (
        "h200_sxm", 307.79,
        "comment 14978771, build 1411d9275 (7073, 2025-11-15): '| 0 | tg128 | 307.79 ± 0.26 |' "
        "(SXM or NVL not stated)",
    ),
)  # fmt: skip


def llama_bench_tg128(preset: str) -> float:
    """One card of ``preset`` decoding Llama-2-7B Q4_0 as llama-bench's tg128 does."""
    gpu = gpu_from_preset(preset)
    return predict(LLAMA2_7B_Q4_0, [gpu], concurrency=1, context=64).tokens_per_s


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


def pcie_pp_over_tp4() -> float:
    """Aggregate tok/s of TP=2 x PP=2 over TP=4, four 3090s over PCIe, 16 sequences."""
    gpus = [_3090()] * 4
    link = link_for_topology("PHB")
    tp4 = predict(QWEN_27B_INT4, gpus, tp=4, concurrency=16, context=4096, link=link)
    pp2 = predict(QWEN_27B_INT4, gpus, tp=2, pp=2, concurrency=16, context=4096, link=link)
    return pp2.tokens_per_s / tp4.tokens_per_s


def pcie_replicas_over_tp4() -> float:
    return _serving("PHB")


def single_3090_moe_speed() -> float:
    """One 3090 decoding the 35B-A3B MoE under llama.cpp, one sequence."""
    return predict(QWEN_35B_A3B_GGUF, [_3090()], concurrency=1, context=2048).tokens_per_s


def pp2_over_one_card() -> float:
    """One sequence of the 35B-A3B over two 3090s by layers (PP=2) over one 3090."""
    one = single_3090_moe_speed()
    pp2 = predict(
        QWEN_35B_A3B_GGUF, [_3090()] * 2, pp=2, concurrency=1, context=2048,
        link=link_for_topology("PHB"),
    )  # fmt: skip
    return pp2.tokens_per_s / one


def _dmon_rx_mean_mb_per_s(tp: int, pp: int) -> float:
    """What club-3090's capture prints as ``decode all rx_mean`` for the 35B-A3B on two 3090s
    (MB/s): nvidia-smi dmon ``-s t``'s ``rxpci`` (bytes a card receives over PCIe, from the host
    or a peer), averaged over both cards' 1 Hz samples (scripts/lib/capture.sh cap_dmon_phase,
    the figure scripts/lib/card.sh renders as "decode rx <mean>"), at the model's decode speed.

    Per token, from :func:`link_traffic` (P2P off: a GPU-to-GPU copy is staged through host
    memory, so it is one card's tx and the other's rx; ``txpci`` is not summed — the logits
    leaving the last card, ~1 MB a token, would dwarf every figure here, and the published
    ones do not show them):

    * ``layer`` (PP=2): card 0 receives the f32 embedding row and the graph inputs (KQ mask,
      positions, KV indices), card 1 the f32 residual at the boundary and the same inputs;
    * ``row`` (TP=2): the main card receives the other's output shares, the graph inputs and
      the embedding row; the other card the q8_1 inputs of every split matmul.
    """
    context = 2048
    pred = predict(
        QWEN_35B_A3B_GGUF, [_3090()] * 2, tp=tp, pp=pp, concurrency=1, context=context,
        link=link_for_topology("PHB"),
    )  # fmt: skip
    t = link_traffic(QWEN_35B_A3B_GGUF, tp, pp, 1, context)
    per_stage_inputs = t.input_bytes * pp
    rx_bytes = t.embedding_bytes + per_stage_inputs + t.handoff_bytes * (pp - 1)
    rx_bytes += (t.row_sent_bytes + t.row_received_bytes) * pp
    return pred.tokens_per_s * rx_bytes / (tp * pp) / 1e6


def row_over_layer_40k() -> float:
    """Qwen3-14B Q4_0 on two 3090s (P2P off: GeForce drivers refuse peer access), one
    sequence at 40 960 tokens of context: ``row`` TP=2 over ``layer`` PP=2."""
    gpus = [_3090()] * 2
    link = link_for_topology("PHB")
    row = predict(QWEN3_14B_Q4_0, gpus, tp=2, concurrency=1, context=40_960, link=link)
    layer = predict(QWEN3_14B_Q4_0, gpus, pp=2, concurrency=1, context=40_960, link=link)
    return row.tokens_per_s / layer.tokens_per_s


def single_3090_gguf_speed() -> float:
    return predict(DENSE_27B_GGUF, [_3090()], concurrency=1, context=512).tokens_per_s


def _ratio(
    label: str,
    model: Callable[[], float],
    published: float | tuple[float, float],
    unit: str,
    source: str,
) -> Figure:
    """A ratio or speed figure (the 20 % bar): one published value or a (low, high) range."""
    low, high = published if isinstance(published, tuple) else (published, published)
    return Figure(
        label=label, kind="ratio", model=model, low=low, high=high, unit=unit, source=source
    )


FIGURES: list[Figure] = [
    _ratio(
        "club-3090 two 3090s TP=2 over PCIe vs one card (single stream)",
        dual_3090_pcie_ratio,
        1.05,
        "x",
        CLUB_3090,
    ),
    _ratio(
        "club-3090 two 3090s TP=2 over NVLink vs one card (single stream)",
        dual_3090_nvlink_ratio,
        (1.6, 1.8),
        "x",
        CLUB_3090,
    ),
    _ratio(
        "vLLM: PCIe-only 4-GPU box, 2 replicas of TP=2 over TP=4 (prefer PP/replicas)",
        pcie_replicas_over_tp4,
        (1.0, 4.0),
        "x",
        VLLM_PCIE + "; qualitative: any gain (>= 1x) meets it",
    ),
    _ratio(
        "vLLM: PCIe-only 4-GPU box, TP=2 x PP=2 over TP=4, 16 sequences (prefer PP)",
        pcie_pp_over_tp4,
        (1.0, 4.0),
        "x",
        VLLM_PCIE + "; qualitative: any gain (>= 1x) meets it",
    ),
    _ratio(
        "RTX 3090 27B dense GGUF decode at the default limit",
        single_3090_gguf_speed,
        32.0,
        "tok/s",
        JEANFBRITO,
    ),
    _ratio(
        "club-3090 one 3090 Qwen3.6-35B-A3B (MoE) llama.cpp decode at 370 W",
        single_3090_moe_speed,
        136.84,
        "tok/s",
        CLUB_MOE,
    ),
    _ratio(
        "club-3090 PP=2 (llama.cpp layer split) over one 3090, one sequence",
        pp2_over_one_card,
        144.29 / 128.72,
        "x",
        CLUB_PP_SPEED,
    ),
    _ratio(
        "llama.cpp 2x3090 row split (TP=2) over layer split (PP=2), decode at 40k tokens",
        row_over_layer_40k,
        1.53 / 2,
        "x",
        IK_ROW,
    ),
    _ratio(
        "club-3090 PP=2 (llama.cpp layer split) traffic between two 3090s, decode",
        lambda: _dmon_rx_mean_mb_per_s(1, 2),
        7.0,
        "MB/s",
        CLUB_PP_TRAFFIC,
    ),
    _ratio(
        "club-3090 TP=2 (llama.cpp row/tensor split) all-reduce traffic, decode",
        lambda: _dmon_rx_mean_mb_per_s(2, 1),
        1400.0,
        "MB/s",
        CLUB_TP_TRAFFIC,
    ),
    *(
        _ratio(
            f"llama.cpp scoreboard: {preset} Llama-2-7B Q4_0 llama-bench tg128",
            partial(llama_bench_tg128, preset),
            published,
            "tok/s",
            f"{SCOREBOARD} {where}",
        )
        for preset, published, where in SCOREBOARD_TG128
    ),
]
