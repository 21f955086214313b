"""Cap curves of the power model (:mod:`tuning.model.power`) against published sweeps.

Every figure is relative throughput at a cap, judged in percentage points. The two RTX 3090
sweeps that disagree (a dense 27B decode falls to 0.64 at 200 W; a six-card MoE pipeline keeps
0.94) come from the SAME power parameters (``tuning/model/power.yaml``) and differ only in the
workload: the dense decode keeps one card busy the whole step, a pipeline stage runs one
sixth of it and waits for its neighbours the rest.

The dense decode's sweep (jeanfbrito) is a curve file
(``bench/curves/rtx3090-qwen36-27b-dense-llamacpp-jeanfbrito.yaml``, through the step-time
model and the simulator: ``fidelity_curves.py``), so it is not repeated here.

The six-card pipeline's figures are the simulator's (``bench/sim_pipeline.py``'s rig and
workload files: each stage's step from the step-time model, every card at its own clock under
its cap, the pipeline paced by its slowest stage). The other step shapes (``StepTime`` at full
clock) are hand-made here until the step-time model predicts them; each states where its times
come from.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import sim_pipeline
from fidelity_common import Figure

from tuning.model.power import PowerParams, power_params, under_cap
from tuning.model.step import StepTime

#: SM max clocks of the presets (presets.yaml sm_clock_mhz.max). Units: MHz.
RTX3090_MAX_MHZ = 2100.0
RTX4090_MAX_MHZ = 3105.0

GARAGE = (
    "llmgarage.ai/power-limit-tokens-per-second-benchmark "
    "(6x RTX 3090, MiniMax M2.5 IQ2_M, llama.cpp, decode 72.6/68.3/62.6/12.1 tok/s at "
    "350/200/150/100 W)"
)
#: club-3090's docs/HARDWARE.md as of commit 0d51e74335d20f46af4d95ac1d71fc63eeb7abcf (its last
#: change in the stored snapshot, 2026-08-17; the cross-rig power-cap table is lines 224-257).
CLUB_COMMIT = "0d51e74335d20f46af4d95ac1d71fc63eeb7abcf"
CLUB = f"noonghunna/club-3090 docs/HARDWARE.md@{CLUB_COMMIT[:12]} (cross-rig power-cap table"
CLUB_3090_DECODE = (
    CLUB + ": 3090 air llama.cpp Qwen3.6 27B Q3_K_XL '**290W** ⭐ | 32.26' vs '370W (stock) | "
    "34.66'; -7 % tok/s for -22 % power)"
)
CLUB_3090_PREFILL = (
    CLUB + ": 3090 prefill-heavy Qwen3.6-27B '**250W** ⭐ | 906.79' vs '370W (stock) | 1051.07')"
)
CLUB_4090 = (
    CLUB + ": 4090 decode-single Qwen3.6 27B Q3_K_XL '**260W** ⭐ | 48.26' vs '450W (stock) | "
    "51.96')"
)
#: HARDWARE.md line 294 ("Dual-card TP=2 anchor - no decode knee above 220W/card").
CLUB_TP2 = (
    f"noonghunna/club-3090 docs/HARDWARE.md@{CLUB_COMMIT[:12]} line 294: @alesha-pro's 4x 3090 "
    "rig 'swept the two cards serving `dual-fast` TP=2 from **220 to 330W/card**. Decode TPS "
    "stayed flat within noise while combined draw rose **44%**, SM clock rose **24%**'"
)

#: 27B dense decode on one 3090, one sequence: 28.5 ms of weight reads (a ~16 GB quant at
#: ~60 % of 936 GB/s), dequant and GDN math at 59 % of that (club-3090: "the
#: chunked_gated_delta_rule kernel is genuinely compute-bound"), 1.5 ms host. estimate.
DENSE_DECODE = StepTime(
    memory_s=0.0285, compute_s=0.0168, interconnect_s=0.0, host_s=0.0015, tokens=1.0
)
#: 27B dense prefill: matmul-bound, weights re-read per chunk (a quarter of the math). estimate.
DENSE_PREFILL = StepTime(
    memory_s=0.25, compute_s=1.0, interconnect_s=0.0, host_s=0.01, tokens=1000.0
)
#: The same decode on a 4090: same bandwidth class (1008 vs 936 GB/s), 2.3x the tensor math
#: (165 vs 71 TFLOPS dense FP16, presets.yaml), so the math share shrinks by 71/165. estimate.
DENSE_DECODE_4090 = StepTime(
    memory_s=0.0285, compute_s=0.0168 * 71.0 / 165.0, interconnect_s=0.0, host_s=0.0015, tokens=1.0
)
#: Two 3090s TP=2 over PCIe: half the reads and math per card, an all-reduce per layer
#: (~6 ms per token over PCIe without P2P). estimate.
TP2_DECODE = StepTime(
    memory_s=0.01425, compute_s=0.0084, interconnect_s=0.006, host_s=0.0015, tokens=1.0
)


def relative(
    p: PowerParams,
    step: StepTime,
    cap_w: float,
    ref_w: float,
    max_mhz: float,
    *,
    busy_scale: float = 1.0,
) -> float:
    """Tokens/s at ``cap_w`` over tokens/s at ``ref_w`` (every card of the set at that cap)."""
    at = under_cap(p, step, cap_w, max_mhz, busy_scale=busy_scale).tokens_per_s
    ref = under_cap(p, step, ref_w, max_mhz, busy_scale=busy_scale).tokens_per_s
    return at / ref


@cache
def _pipeline_tps(cap_w: float) -> float:
    """The simulated six-card pipeline's tokens/s with every card at ``cap_w`` (W): the rig and
    workload files of bench/sim_pipeline.py, each stage's step from the step-time model."""
    return sim_pipeline.measure(cap_w)


def _pipeline(cap_w: float) -> float:
    """The simulated pipeline's tokens/s at ``cap_w`` over its tokens/s at 350 W."""
    return _pipeline_tps(cap_w) / _pipeline_tps(350.0)


def _draw_w(step: StepTime, cap_w: float) -> float:
    """One 3090's board power running ``step`` under ``cap_w`` (W)."""
    return under_cap(power_params("rtx3090"), step, cap_w, RTX3090_MAX_MHZ).power_w


def _tp2_ratio(field: str) -> float:
    """One TP=2 member's ``field`` (board power or clock) at a 330 W cap over a 220 W cap."""
    p = power_params("rtx3090")
    hi = under_cap(p, TP2_DECODE, 330.0, RTX3090_MAX_MHZ)
    lo = under_cap(p, TP2_DECODE, 220.0, RTX3090_MAX_MHZ)
    return float(getattr(hi, field) / getattr(lo, field))


def _point(label: str, value: float, fn: Callable[[], float], source: str) -> Figure:
    return Figure(
        label=label, kind="curve", model=fn, low=value, high=value, unit="x", source=source
    )


FIGURES: list[Figure] = [
    _point("6x3090 MoE pipeline 200 W / 350 W", 68.3 / 72.6, lambda: _pipeline(200.0), GARAGE),
    _point("6x3090 MoE pipeline 150 W / 350 W", 62.6 / 72.6, lambda: _pipeline(150.0), GARAGE),
    _point("6x3090 MoE pipeline 100 W / 350 W", 12.1 / 72.6, lambda: _pipeline(100.0), GARAGE),
    Figure(
        label="6x3090 MoE pipeline decode at 350 W per card",
        kind="ratio",
        model=lambda: _pipeline_tps(350.0),
        low=72.6,
        high=72.6,
        unit="tok/s",
        source=GARAGE,
    ),
    _point(
        "3090 decode knee 290 W / 370 W stock",
        32.26 / 34.66,
        lambda: relative(power_params("rtx3090"), DENSE_DECODE, 290.0, 370.0, RTX3090_MAX_MHZ),
        CLUB_3090_DECODE,
    ),
    _point(
        "3090 prefill knee 250 W / 370 W stock",
        906.79 / 1051.07,
        lambda: relative(power_params("rtx3090"), DENSE_PREFILL, 250.0, 370.0, RTX3090_MAX_MHZ),
        CLUB_3090_PREFILL,
    ),
    _point(
        "4090 decode knee 260 W / 450 W stock",
        48.26 / 51.96,
        lambda: relative(power_params("rtx4090"), DENSE_DECODE_4090, 260.0, 450.0, RTX4090_MAX_MHZ),
        CLUB_4090,
    ),
    _point(
        "2x3090 TP=2 decode 220 W / 330 W per card (flat)",
        1.0,
        lambda: relative(power_params("rtx3090"), TP2_DECODE, 220.0, 330.0, RTX3090_MAX_MHZ),
        CLUB_TP2 + " (flat = 1.0)",
    ),
    Figure(
        label="3090 prefill board draw under a 390 W cap",
        kind="ratio",
        model=lambda: _draw_w(DENSE_PREFILL, 390.0),
        low=381.0,
        high=381.0,
        unit="W",
        source=CLUB + ": 3090 prefill-heavy '390W (max) | 1104.81 | ... SM 1710 MHz at 381W draw')",
    ),
    Figure(
        label="3090 decode board draw under a 390 W cap",
        kind="ratio",
        model=lambda: _draw_w(DENSE_DECODE, 390.0),
        low=388.0,
        high=388.0,
        unit="W",
        source=CLUB + ": 3090 llama.cpp default '390W (max) | 36.26 | ... SM 1680 MHz at 388W')",
    ),
    Figure(
        label="2x3090 TP=2 decode: board draw at 330 W / at 220 W per card",
        kind="ratio",
        model=lambda: _tp2_ratio("power_w"),
        low=1.44,
        high=1.44,
        unit="x",
        source=CLUB_TP2 + " (draw +44 %)",
    ),
    Figure(
        label="2x3090 TP=2 decode: SM clock at 330 W / at 220 W per card",
        kind="ratio",
        model=lambda: _tp2_ratio("clock_frac"),
        low=1.24,
        high=1.24,
        unit="x",
        source=CLUB_TP2 + " (SM clock +24 %)",
    ),
]
