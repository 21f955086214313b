"""What each engine's split moves between GPUs (tuning/model/serving.py ``link_traffic``) and
what the links cost for it, against hand-worked examples.

The model is the 40-layer, hidden-2048 one of ``link_traffic``'s docstring: 16 heads x 128,
8 KV heads x 128 (kv width 1024). The ggml byte sizes (f32 residual, f16 mask, q8_1 inputs,
KV padding to 256 cells) are llama.cpp's, cited in ``serving.yaml``; the byte counts below are
worked from them by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.archs import GPU, STAGED, Dense40
from tuning.errors import ConfigError
from tuning.model.serving import (
    ffn_dim,
    interconnect_s,
    link_traffic,
    load_serving_params,
    predict,
    row_split_params,
)


def test_the_ffn_width_comes_back_from_the_parameter_count() -> None:
    """62 914 560 per layer − 2·2048² − 2·2048·1024 = 50 331 648 = 3·2048·8192."""
    assert ffn_dim(Dense40()) == pytest.approx(8192)


def test_layer_split_copies_the_f32_residual_and_the_graph_inputs() -> None:
    """llama.cpp PP=2, one token at 1000 tokens of context: the boundary copies the f32
    residual, 2048 x 4 B = 8192 B, one transfer; every stage's GPU receives the KQ mask of
    ceil(1001/256)·256 = 1024 cells x 2 B = 2048 B plus 20 B of positions and KV indices
    (2068 B); the first stage the 8192 B f32 embedding row (the input layer stays on the CPU)."""
    t = link_traffic(Dense40(), 1, 2, 1, context=1000)
    assert (t.tp_mode, t.pp_mode) == ("none", "layer")
    assert t.handoff_bytes == 8192
    assert t.transfers == 1
    assert t.input_bytes == 2068
    assert t.embedding_bytes == 8192
    assert (t.allreduces, t.row_matmuls) == (0, 0)


def test_vllm_keeps_nccl_all_reduces_and_a_bf16_hand_off() -> None:
    """The same model under vLLM: TP=2 is 80 all-reduces of 2048 x 2 B = 4096 B (each member
    sends 80 x 4096 = 327 680 B); PP=2 one 4096 B hand-off; no host-side ggml inputs."""
    from dataclasses import replace

    model = replace(Dense40(), engine="vllm")
    tp2 = link_traffic(model, 2, 1, 1)
    assert (tp2.tp_mode, tp2.allreduces, tp2.allreduce_sent_bytes) == ("allreduce", 80, 327_680)
    assert tp2.transfers == 80
    pp2 = link_traffic(model, 1, 2, 1)
    assert (pp2.pp_mode, pp2.handoff_bytes, pp2.input_bytes) == ("handoff", 4096, 0)


def test_row_split_moves_every_split_matmuls_input_and_output_shares() -> None:
    """llama.cpp TP=2, one token: 7 split matmuls a layer (q, k, v, o, gate, up, down), 280 a
    step, two copies each (input out, the other card's output rows back): 560 transfers.
    Inputs in q8_1 (36 B per 32 values, padded to 512): six read 2048 values → 2304 B, down
    8192 → 9216 B: (6·2304 + 9216)·40 = 921 600 B sent. Outputs in f32, half from the other
    card: (2048 + 1024 + 1024 + 2048 + 8192 + 8192 + 2048)·4/2·40 = 1 966 080 B received."""
    t = link_traffic(Dense40(), 2, 1, 1)
    assert t.tp_mode == "row"
    assert t.row_matmuls == 280
    assert t.transfers == 560
    assert t.row_sent_bytes == pytest.approx(921_600)
    assert t.row_received_bytes == pytest.approx(1_966_080)


def test_row_split_leaves_a_moes_experts_whole_on_the_main_gpu() -> None:
    """A MoE's expert tensors are MUL_MAT_ID, which cannot read a split buffer: only q, k, v
    and o are split, 4 x 40 = 160 matmuls, 320 transfers. The 35B-A3B shape (3 B active,
    40 layers, hidden 2048, 2 KV heads x 128 = 256): 40·(2·2048² + 2·2048·256) = 377 487 360
    split parameters; a dense model's are all of them."""
    from dataclasses import replace

    moe = replace(Dense40(), params_b=35.0, active_params_b=3.0, kv_heads=2)
    t = link_traffic(moe, 2, 1, 1)
    assert (t.row_matmuls, t.transfers) == (160, 320)
    assert row_split_params(moe) == pytest.approx(377_487_360)
    assert row_split_params(Dense40()) == Dense40().params_b * 1e9


def test_row_transfers_are_latency_bound_on_a_staged_link() -> None:
    """560 copies x 15.23 µs (club-3090's P2P-off copy latency) = 8.529 ms, plus
    (921 600 + 1 966 080) B / 15.2 GB/s = 0.190 ms: 8.719 ms — the bytes are 2 % of it."""
    params = load_serving_params()
    assert params.collectives.copy_latency_us["staged"] == 15.23
    t = link_traffic(Dense40(), 2, 1, 1)
    expected = 560 * 15.23e-6 + (921_600 + 1_966_080) / 15.2e9
    assert interconnect_s(t, 2, STAGED, params) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(8.719e-3, rel=1e-3)


def test_row_tp2_of_a_moe_reads_nearly_everything_on_the_main_gpu() -> None:
    """At no context the main GPU of a row split reads the split share over 2 and all the
    rest: (1 − 0.1258/2) = 0.937 of one card's weights, so TP=2 gains no bandwidth and pays
    the copies: slower than one card over a staged link."""
    from dataclasses import replace

    moe = replace(Dense40(), params_b=35.0, active_params_b=3.0, kv_heads=2)
    one = predict(moe, [GPU], context=0)
    row = predict(moe, [GPU, GPU], tp=2, context=0, link=STAGED)
    share = 1 - 377_487_360 / 3e9 / 2
    assert row.decode_step.memory_s == pytest.approx(one.decode_step.memory_s * share, rel=1e-9)
    assert row.tokens_per_s < one.tokens_per_s


def test_an_engine_without_split_modes_is_refused(tmp_path: Path) -> None:
    """serving.yaml must say how every engine splits a model; the error names the file, the
    YAML path and the fix."""
    text = Path("tuning/model/serving.yaml").read_text()
    bad = tmp_path / "serving.yaml"
    bad.write_text(text.replace("    sglang: {tp: allreduce, pp: handoff}\n", "", 1))
    with pytest.raises(ConfigError, match=r"serving\.yaml: collectives\.split_modes\.sglang"):
        load_serving_params(bad)


def test_an_unknown_split_mode_is_refused(tmp_path: Path) -> None:
    text = Path("tuning/model/serving.yaml").read_text()
    bad = tmp_path / "serving.yaml"
    bad.write_text(
        text.replace("llama.cpp: {tp: row, pp: layer}", "llama.cpp: {tp: tensor, pp: layer}")
    )
    with pytest.raises(ConfigError, match="split_modes"):
        load_serving_params(bad)
