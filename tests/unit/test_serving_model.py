"""The serving step-time model (tuning/model/serving.py) against hand-worked examples.

The GPUs here are built inline with round numbers (1000 GB/s, 100 dense TFLOPS) so each
expectation can be worked on paper; the engine's physical parameters (bandwidth efficiency,
host time per step) are read from ``serving.yaml`` — they are inputs, not what is tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from inventory.models import load_models
from tuning.backends import open_rig
from tuning.errors import ConfigError
from tuning.model.serving import (
    GpuHardware,
    HostShare,
    Link,
    gpu_from_preset,
    kv_bytes_per_token,
    link_from_fabric,
    load_serving_params,
    mixed_prefill_tokens,
    predict,
)
from tuning.rig_fabric import fabric_of_rig

GPU = GpuHardware(name="round", memory_bw_gbps=1000.0, tensor_tflops={"fp16": 100.0})
NVLINK = Link(kind="nvlink", bandwidth_gbps=50.0, latency_us=1.0)
STAGED = Link(kind="staged", bandwidth_gbps=10.0, latency_us=15.0)


@dataclass(frozen=True)
class Toy:
    """A 10 B dense model at 8 bits: 10 GB of weights; 40 layers, 8 KV heads × 128."""

    engine: str = "vllm"
    params_b: float = 10.0
    quant_bits: float = 8
    layers: int = 40
    attention_heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    kv_cache_bits: int = 16
    context: int = 0
    active_params_b: float | None = None
    experts: int | None = None
    experts_per_token: int | None = None
    quant_type: str | None = None


def vllm() -> tuple[float, float, float]:
    e = load_serving_params().engines["vllm"]
    return e.bw_efficiency_frac, e.host_step_s, e.host_per_seq_s


def test_single_card_decode_is_weights_over_bandwidth() -> None:
    """10e9 B / (1000e9 B/s × eff) of reads, plus host_step + 1 × host_per_seq; FLOPs
    2 × 10e9 / (100e12 × 0.45) = 0.44 ms stay under the reads, so memory is the bottleneck."""
    eff, host, per_seq = vllm()
    p = predict(Toy(), [GPU], concurrency=1, context=0)
    expected_s = 10e9 / (1000e9 * eff) + host + per_seq
    assert p.tokens_per_s_per_seq == pytest.approx(1 / expected_s, rel=1e-6)
    assert p.bottleneck == "memory"
    assert sum(p.breakdown().values()) == pytest.approx(1.0)


def test_kv_reads_add_to_the_step() -> None:
    """KV per token: 2 (K, V) × 40 layers × 8 heads × 128 × 2 B = 163 840 B. Two sequences at
    8192 tokens read 2 × 8192 × 163 840 = 2.684e9 B more per step than at no context."""
    assert kv_bytes_per_token(Toy()) == 163_840
    eff, _, _ = vllm()
    short = predict(Toy(), [GPU], concurrency=2, context=0)
    long = predict(Toy(), [GPU], concurrency=2, context=8192)
    extra_s = long.decode_step.memory_s - short.decode_step.memory_s
    assert extra_s == pytest.approx(2 * 8192 * 163_840 / (1000e9 * eff), rel=1e-6)


def test_moe_reads_only_active_parameters() -> None:
    """A 10 B-total, 2.5 B-active MoE reads a quarter of the weights per step."""
    dense = predict(Toy(), [GPU], context=0)
    moe = predict(Toy(active_params_b=2.5), [GPU], context=0)
    assert moe.decode_step.memory_s == pytest.approx(dense.decode_step.memory_s / 4)


def test_a_moe_batch_reads_every_expert_its_tokens_route_to() -> None:
    """GLM-4.5-Air's shape (106 B, 12 B active, 128 routed experts, 8 per token), as Toy
    at 8 bits: each expert holds e = (106 − 12) / (128 − 8) = 0.7833 B and the shared part
    is 12 − 8e = 5.733 B. One token reads its 12 B. 32 tokens under uniform routing miss an
    expert with probability (120/128)^32 = 0.1268, so they read 128 × 0.8732 = 111.77
    experts: 5.733 + 111.77 × 0.7833 = 93.28 B, 93.28 GB at 8 bits. A 2048-token chunk reads
    every expert: all 106 B. Without ``experts`` the MoE reads its 12 B at any batch."""
    eff, _, _ = vllm()
    glm = Toy(params_b=106.0, active_params_b=12.0, experts=128, experts_per_token=8)
    one = predict(glm, [GPU], concurrency=1, context=0)
    many = predict(glm, [GPU], concurrency=32, context=0, prompt_tokens=2048)
    assert one.decode_step.memory_s == pytest.approx(12e9 / (1000e9 * eff), rel=1e-6)
    assert many.decode_step.memory_s == pytest.approx(93.28e9 / (1000e9 * eff), rel=1e-3)
    chunk_bytes = 106e9 + 1024 * 163_840
    assert many.prefill_step.memory_s == pytest.approx(chunk_bytes / (1000e9 * eff), rel=1e-6)
    blind = predict(Toy(params_b=106.0, active_params_b=12.0), [GPU], concurrency=32, context=0)
    assert blind.decode_step.memory_s == pytest.approx(12e9 / (1000e9 * eff), rel=1e-6)


def test_mixed_step_prefills_the_prompt_tokens_its_outputs_need() -> None:
    """vLLM, Toy (10 B dense, 8 bits), 32 sequences, phase mixed, 2 prompt tokens per output
    token: each step is one forward pass of 32 decode and 64 prompt tokens, 96 tokens of
    math, 2 · 10e9 · 96 / (100e12 · 0.45) = 42.67 ms, over the 10 GB read once (14.3 ms at
    0.70), plus host_step + 32 · host_per_seq: 32 output tokens a step. Without the ratio a
    step carries a whole 2048-token chunk: 2080 tokens of math, 924 ms."""
    eff, host, per_seq = vllm()
    mfu = load_serving_params().engines["vllm"].mfu_frac
    p = predict(Toy(), [GPU], concurrency=32, context=0, phase="mixed", input_per_output=2.0)
    assert p.mixed_step is not None
    assert p.mixed_step.tokens == 32
    assert p.mixed_step.memory_s == pytest.approx(10e9 / (1000e9 * eff), rel=1e-6)
    math_s = 2 * 10e9 * 96 / (100e12 * mfu)
    assert p.mixed_step.compute_s == pytest.approx(math_s, rel=1e-6)
    assert p.mixed_step.total_s == pytest.approx(math_s + host + 32 * per_seq, rel=1e-6)
    full = predict(Toy(), [GPU], concurrency=32, context=0, phase="mixed", prompt_tokens=2048)
    assert full.mixed_step is not None
    assert full.mixed_step.compute_s == pytest.approx(2 * 10e9 * 2080 / (100e12 * mfu), rel=1e-6)
    assert predict(Toy(), [GPU], concurrency=32, context=0).mixed_step is None


def test_mixed_prefill_tokens_follow_the_input_output_ratio_up_to_a_chunk() -> None:
    """32 sequences at 2.04 prompt tokens per output token carry ceil(65.28) = 66; at 100,
    the 2048-token chunk; no ratio: a chunk every step; at least one prompt token."""
    assert mixed_prefill_tokens(32, 2048, 2.04) == 66
    assert mixed_prefill_tokens(32, 2048, 100.0) == 2048
    assert mixed_prefill_tokens(32, 2048, None) == 2048
    assert mixed_prefill_tokens(1, 2048, 0.001) == 1


def test_llamacpp_matvec_integer_work_follows_the_weight_type() -> None:
    """llama.cpp, one sequence, Toy's 10 B weights on a card of 20 INT32 TOPS: the default
    type costs matvec_int_ops_per_weight operations per weight, 10e9 · 11.4 / 20e12 = 5.7 ms
    of CUDA-core work; Q3_K, whose values and scales are assembled from split bit fields,
    costs its own figure (serving.yaml matvec_int_ops_by_quant), 10e9 · 15 / 20e12 = 7.5 ms;
    a type with no figure of its own (Q8_0) takes the default."""
    e = load_serving_params().engines["llama.cpp"]
    default, q3 = e.matvec_int_ops_per_weight, (e.matvec_int_ops_by_quant or {})["Q3_K"]
    assert default is not None
    assert q3 != default
    card = GpuHardware(
        name="round", memory_bw_gbps=1000.0, tensor_tflops={"fp16": 100.0}, int32_tops=20.0
    )

    def math_s(quant: str | None) -> float:
        toy = Toy(engine="llama.cpp", quant_type=quant)
        return predict(toy, [card], context=0).decode_step.compute_s

    assert math_s(None) == pytest.approx(10e9 * default / 20e12, rel=1e-9)
    assert math_s("Q3_K") == pytest.approx(10e9 * q3 / 20e12, rel=1e-9)
    assert math_s("Q8_0") == pytest.approx(math_s(None), rel=1e-12)


def test_llamacpp_moe_matvec_reads_at_the_moe_bandwidth_share() -> None:
    """llama.cpp, one sequence: a 2.5 B-active MoE at 8 bits reads 2.5 GB per token, at
    ``moe_bw_efficiency_frac`` of 1000 GB/s (its small expert matrices), where the dense 10 B
    model's 10 GB go at ``bw_efficiency_frac``; a 2048-token prefill chunk (tensor-core path,
    no matrix-vector kernel) reads the MoE's weights at the dense share."""
    e = load_serving_params().engines["llama.cpp"]
    assert e.moe_bw_efficiency_frac is not None
    dense = predict(Toy(engine="llama.cpp"), [GPU], context=0)
    moe = predict(Toy(engine="llama.cpp", active_params_b=2.5), [GPU], context=0)
    assert dense.decode_step.memory_s == pytest.approx(10e9 / (1000e9 * e.bw_efficiency_frac))
    assert moe.decode_step.memory_s == pytest.approx(2.5e9 / (1000e9 * e.moe_bw_efficiency_frac))
    chunk = predict(Toy(engine="llama.cpp", active_params_b=2.5), [GPU], context=2048)
    assert chunk.prefill_step.memory_s >= 2.5e9 / (1000e9 * e.bw_efficiency_frac)
    assert chunk.prefill_step.memory_s < 2.5e9 / (1000e9 * e.moe_bw_efficiency_frac)


def test_pipeline_adds_capacity_not_single_stream_speed() -> None:
    """PP=2, one sequence: each token still passes both halves one after the other (5 GB
    + 5 GB of reads) plus a hand-off, so it is no faster than one card; the CPU's step
    (h = host_step + 1 x host_per_seq) runs once per token, not once per stage (llama.cpp's
    one graph over both GPUs, vLLM's one scheduler step per micro-batch). Two sequences fill
    both stages, each micro-batch with its own CPU step. Hand-worked with s = one stage's
    reads and hand-off: one sequence takes 2s + h per token, two take 2(s + h) per round of
    two tokens, so 2 / aggregate(2) - 1 / aggregate(1) = h exactly. The single sequence
    leaves each GPU idle half the time."""
    _, host, per_seq = vllm()
    one_card = predict(Toy(), [GPU], concurrency=1, context=0)
    pp_one = predict(Toy(), [GPU, GPU], pp=2, concurrency=1, context=0, link=NVLINK)
    pp_two = predict(Toy(), [GPU, GPU], pp=2, concurrency=2, context=0, link=NVLINK)
    assert pp_one.tokens_per_s_per_seq <= one_card.tokens_per_s_per_seq
    assert pp_one.decode_step.host_s == pytest.approx(host + per_seq)
    assert pp_two.decode_step.host_s == pytest.approx(2 * (host + per_seq))
    assert pp_one.busy_frac == pytest.approx(0.5)
    assert pp_two.busy_frac == pytest.approx(1.0)
    assert 2 / pp_two.tokens_per_s - 1 / pp_one.tokens_per_s == pytest.approx(host + per_seq)


def test_tp_all_reduces_cost_latency_per_layer() -> None:
    """TP=2 halves the reads per card; each of 2 × 40 all-reduces of 32 × 128 × 2 B = 8 KiB
    over the staged link costs overhead + 2 hops × 15 µs + 8192 / (10e9 × frac) s. Over
    NVLink the same step is cheaper, so it is faster."""
    params = load_serving_params()
    col = params.collectives
    staged = predict(Toy(), [GPU, GPU], tp=2, context=0, link=STAGED)
    nv = predict(Toy(), [GPU, GPU], tp=2, context=0, link=NVLINK)
    per = (col.allreduce_overhead_us["staged"] + 2 * 15.0) * 1e-6 + 8192 / (
        10e9 * col.allreduce_bw_frac
    )
    assert staged.decode_step.interconnect_s == pytest.approx(80 * per, rel=1e-6)
    assert nv.tokens_per_s > staged.tokens_per_s
    one = predict(Toy(), [GPU], context=0)
    assert staged.decode_step.memory_s == pytest.approx(one.decode_step.memory_s / 2)


def test_fewer_or_shared_cores_lengthen_the_host_time() -> None:
    """vLLM on one GPU needs 1 API + 1 engine + 1 worker = 3 cores (engines.yaml). With one
    core the host time triples; sharing the 3 with another engine doubles it; cores on another
    NUMA node multiply it by remote_numa_factor."""
    full = predict(Toy(), [GPU], context=0).decode_step.host_s
    one_core = predict(Toy(), [GPU], context=0, host=HostShare(cores=1)).decode_step.host_s
    shared = predict(Toy(), [GPU], context=0, host=HostShare(other_engines=1)).decode_step.host_s
    remote = predict(Toy(), [GPU], context=0, host=HostShare(remote_numa=True)).decode_step.host_s
    assert one_core == pytest.approx(3 * full)
    assert shared == pytest.approx(2 * full)
    assert remote == pytest.approx(full * load_serving_params().host.remote_numa_factor)


def test_prefill_is_compute_bound_and_ttft_covers_the_prompt() -> None:
    """A 2048-token chunk: 2 × 10e9 × 2048 = 4.1e13 FLOPs / (100e12 × mfu) ≈ 0.9 s ≫ 14 ms of
    reads, so compute is the bottleneck and TTFT for 4096 tokens is at least two chunks."""
    p = predict(Toy(), [GPU], context=4096, phase="prefill")
    assert p.bottleneck == "compute"
    mfu = load_serving_params().engines["vllm"].mfu_frac
    assert p.ttft_s >= 2 * 2 * 10e9 * 2048 / (100e12 * mfu)


def test_70b_awq_on_two_4090s_by_hand() -> None:
    """r1-distill-llama-70b (70.6 B at 4 bits = 35.3 GB) TP=2 on two RTX 4090s (1008 GB/s,
    TechPowerUp): each card reads 17.65 GB per step → 17.65e9 / (1008e9 × eff) s; the step
    cannot be shorter than that, and with 160 all-reduces over NVLink-free PCIe it is longer."""
    models = {m.name: m for m in load_models("inventory/examples/models-reference.yaml").models}
    eff, _, _ = vllm()
    g = gpu_from_preset("rtx4090")
    p = predict(models["r1-distill-llama-70b"], [g, g], tp=2, context=0, link=STAGED)
    floor_s = 17.65e9 / (1008e9 * eff)
    assert p.decode_step.memory_s == pytest.approx(floor_s, rel=1e-3)
    assert p.decode_step.interconnect_s > 0
    assert 1 / p.tokens_per_s_per_seq > floor_s


def test_link_from_the_reference_fabric() -> None:
    """sim:reference's GPUs are PCIe cards: the worst pair of a group is a peer or staged
    path, never NVLink, with a positive rate and latency."""
    rig = open_rig("sim:reference")
    link = link_from_fabric(fabric_of_rig(rig), [0, 1])
    assert link.kind in ("peer", "staged")
    assert link.bandwidth_gbps > 0
    assert link.latency_us > 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="tp=2"):
        predict(Toy(), [GPU], tp=2)
    with pytest.raises(ConfigError, match="engine 'tgi'"):
        predict(Toy(), [GPU], engine="tgi")


def test_a_number_without_a_source_is_refused(tmp_path: Path) -> None:
    text = Path("tuning/model/serving.yaml").read_text()
    bad = tmp_path / "serving.yaml"
    bad.write_text(text.replace('      mfu_frac: "estimate: as vLLM"\n', "", 1))
    with pytest.raises(ConfigError, match=r"engines\.sglang\.sources\.mfu_frac"):
        load_serving_params(bad)


def test_llamacpp_decode_math_runs_at_the_cuda_cores_integer_rate() -> None:
    """llama.cpp's matrix-vector decode (MMVQ) runs on the CUDA cores, so two GA102 cards do its
    math at their INT32 rates, not their tensor rates: the GA102 whitepaper gives 17.8 INT32
    TIPS for the RTX 3090 (82 SMs × 64 lanes × 1695 MHz × 2) and 19.4 for the RTX A6000 (84 ×
    64 × 1800 MHz × 2), while their dense FP16 tensor figures differ 2.2× (71 vs 154.8 TFLOPS:
    GeForce accumulates FP32 at half rate). The same decode on each: math time in the ratio
    19.4 / 17.8, reads in the ratio of the bandwidths (768 vs 936 GB/s, datasheets)."""
    model = Toy(engine="llama.cpp", quant_bits=4.5)
    r3090 = predict(model, [gpu_from_preset("rtx3090")], concurrency=1, context=0)
    a6000 = predict(model, [gpu_from_preset("rtx_a6000")], concurrency=1, context=0)
    assert r3090.decode_step.compute_s / a6000.decode_step.compute_s == pytest.approx(
        19.4 / 17.8, rel=1e-3
    )
    assert a6000.decode_step.memory_s / r3090.decode_step.memory_s == pytest.approx(
        936 / 768, rel=1e-3
    )
    # a 2048-token prefill chunk takes the tensor-core path, where the A6000 is 2.2x faster
    r3090_p = predict(model, [gpu_from_preset("rtx3090")], concurrency=1, context=2048)
    a6000_p = predict(model, [gpu_from_preset("rtx_a6000")], concurrency=1, context=2048)
    assert r3090_p.prefill_step.compute_s / a6000_p.prefill_step.compute_s == pytest.approx(
        154.8 / 71, rel=1e-3
    )


def test_a_gpu_without_an_integer_rate_prices_matvec_decode_as_memory_bound() -> None:
    """A hand-built GPU (or a rig file's own preset) with no ``int32_tops``: the step-time model
    has nothing to price llama.cpp's CUDA-core work with, so the decode is its reads alone."""
    p = predict(Toy(engine="llama.cpp"), [GPU], concurrency=1, context=0)
    assert p.decode_step.compute_s == 0.0
    assert p.bottleneck == "memory"


def test_the_presets_cover_the_gpus_people_build_with_and_cite_their_figures() -> None:
    """Issue 12's list (RTX 3090, 4090, 5090, A6000, 6000 Ada, RTX PRO 6000 Blackwell, L40S,
    A100, H100, H200) each has a preset, and every figure the step-time model reads carries a
    source in the preset's ``source`` map."""
    from tuning.backends.sim_config import load_presets

    presets = load_presets().presets
    names = " | ".join(p.name for p in presets.values())
    for wanted in (
        "RTX 3090", "RTX 4090", "RTX 5090", "RTX A6000", "RTX 6000 Ada",
        "RTX PRO 6000 Blackwell", "L40S", "A100", "H100", "H200",
    ):  # fmt: skip
        assert wanted in names, wanted
    for key, preset in presets.items():
        for field_name in (
            "memory_bw_gbps", "fp16_tensor_tflops", "int32_tops", "sm_clock_mhz", "power",
        ):  # fmt: skip
            assert field_name in preset.source, (key, field_name)
        if preset.tensor_tflops:
            assert "tensor_tflops" in preset.source, key
        hw = gpu_from_preset(key)
        assert hw.tflops("fp8") >= hw.tflops("fp16")


def test_link_traffic_counts_the_textbook_bytes() -> None:
    """Hand-worked (docstring of ``link_traffic``): 40 layers, hidden 2048 = 16 x 128, one token.
    TP=2: 80 all-reduces of 2048 x 2 B = 4096 B, each member sends 2(2-1)/2 = 1 of each, 327,680 B;
    PP=2: one 4096 B hand-off and no all-reduce; TP=4 x PP=2: 40 per stage, 3/2 of each sent."""
    from dataclasses import replace

    from tuning.model.serving import link_traffic

    model = replace(Toy(), layers=40, attention_heads=16, head_dim=128)
    tp2 = link_traffic(model, 2, 1, 1)
    assert (tp2.message_bytes, tp2.allreduces, tp2.handoff_bytes) == (4096, 80, 0)
    assert tp2.allreduce_sent_bytes == 327_680
    pp2 = link_traffic(model, 1, 2, 1)
    assert (pp2.allreduces, pp2.allreduce_sent_bytes, pp2.handoff_bytes) == (0, 0, 4096)
    mixed = link_traffic(model, 4, 2, 1)
    assert mixed.allreduces == 40
    assert mixed.allreduce_sent_bytes == 40 * 1.5 * 4096
