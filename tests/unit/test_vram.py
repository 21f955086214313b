"""VRAM estimator: the documented formula, its worked example, and vLLM's utilisation flag."""

from __future__ import annotations

import pytest
from test_placement_rigs import model

from tuning.vram import (
    ENGINE_OVERHEAD_MIB,
    MULTI_GPU_OVERHEAD_MIB,
    estimate,
    gpu_memory_utilization,
    kv_bytes_per_token,
)


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
    est = estimate(llama70b_awq(), tp=2, pp=1)
    weights = 70.6e9 * 0.5 / 2 / 2**20  # 16 832 MiB per GPU
    kv = 80 * 4 * 128 * 2 * 2 * 32768 * 4 / 2**20  # 4 KV heads per GPU: 20 480 MiB
    assert est.weights_mib == pytest.approx(weights)
    assert est.kv_cache_mib == pytest.approx(kv)
    assert est.overhead_mib == ENGINE_OVERHEAD_MIB["vllm"] + MULTI_GPU_OVERHEAD_MIB
    assert est.need_mib_int == 39_617


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
