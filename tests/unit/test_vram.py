"""VRAM estimator: the documented formula, its worked example, and vLLM's utilisation flag."""

from __future__ import annotations

import pytest
from test_placement_rigs import model

from tuning.vram import estimate, gpu_memory_utilization, kv_bytes_per_token, usable_mib


def llama70b_awq():
    # DeepSeek-R1-Distill-Llama-70B config.json: 80 layers, 64 heads, 8 KV heads, head_dim 128
    return model(
        "r1-70b",
        params_b=70.6,
        quant_bits=4,
        layers=80,
        attention_heads=64,
        kv_heads=8,
        context=32768,
        max_sequences=4,
    )


def test_kv_bytes_per_token_matches_hand_computation() -> None:
    # 80 layers × 8 KV heads × 128 × 2 (K, V) × 2 bytes = 327 680 bytes = 320 KiB per token
    assert kv_bytes_per_token(llama70b_awq()) == 327_680


def test_worked_example_70b_awq_tp2() -> None:
    """DeepSeek-R1-Distill-Llama-70B, AWQ 4-bit, 32 768 context × 4 sequences, vLLM TP=2.

    Sizes from the checkpoint's config.json (huggingface.co/casperhansen/
    deepseek-r1-distill-llama-70b-awq, as inventory/examples/models-reference.yaml cites it):
    80 layers, 64 attention heads, 8 KV heads, hidden 8192 → head_dim 128; 70.6 B parameters
    (the model card). Per GPU, by hand:

    - weights: 70.6e9 × 0.5 B / 2 GPUs = 17.65e9 B = 16 832.4 MiB
    - KV cache: 80 layers × 4 KV heads (8 / TP 2) × 128 × 2 (K, V) × 2 B (fp16)
      = 163 840 B per token; × 32 768 × 4 = 21 474 836 480 B = 20 480.0 MiB
    - overhead: 2 048 MiB for a vLLM process (CUDA context, graphs, activation peak;
      the estimate documented in tuning/vram.py) + 256 MiB NCCL buffers for a 2-GPU group

    need = 16 832.4 + 20 480.0 + 2 304 = 39 616.4 → 39 617 MiB, which fits a 48 GB card
    (RTX A6000: 49 140 MiB × 0.9 headroom = 44 226 MiB) and not a 24 GB one (24 576 MiB).
    """
    est = estimate(llama70b_awq(), tp=2, pp=1)
    assert est.weights_mib == pytest.approx(16_832.4, abs=0.1)
    assert est.kv_cache_mib == pytest.approx(20_480.0)
    assert est.overhead_mib == 2_304
    assert est.need_mib_int == 39_617
    assert est.need_mib <= usable_mib(49_140, headroom_pct=10)
    assert est.need_mib > 24_576


def test_pipeline_split_uses_the_largest_stage() -> None:
    spec = model("odd", layers=30)
    est = estimate(spec, tp=1, pp=4)  # stages of 8,8,7,7 layers: the 8-layer stage counts
    full = estimate(spec)
    assert est.weights_mib == pytest.approx(full.weights_mib * 8 / 30)
    assert est.kv_cache_mib == pytest.approx(full.kv_cache_mib * 8 / 30)


def test_kv_heads_are_replicated_when_tp_exceeds_them() -> None:
    spec = model("gqa", kv_heads=2, attention_heads=32)
    assert estimate(spec, tp=8).kv_cache_mib == pytest.approx(estimate(spec, tp=2).kv_cache_mib)


def test_fp8_kv_cache_halves_it() -> None:
    assert estimate(model("a", kv_cache_bits=8)).kv_cache_mib == pytest.approx(
        estimate(model("b")).kv_cache_mib / 2
    )


def test_llama_cpp_has_smaller_overhead() -> None:
    assert estimate(model("c", engine="llama.cpp")).overhead_mib < estimate(model("d")).overhead_mib


def test_utilisation_exclusive_is_total_minus_headroom() -> None:
    assert gpu_memory_utilization(1000, 24576, headroom_pct=10, exclusive=True) == 0.9


def test_utilisation_shared_rounds_the_estimate_up() -> None:
    assert gpu_memory_utilization(10_000, 24_576, headroom_pct=10, exclusive=False) == 0.41
