"""VRAM per member under llama.cpp's splits (tuning/vram.py), against hand-worked byte counts.

Where llama.cpp puts memory, from its source (cited in tuning/vram.py and
tuning/model/serving.py ``ggml_device_layers``): every layer is assigned to one device by
``--tensor-split`` in every split mode, the output layer counted, so with ``-ngl 999`` the first
of ``k`` devices holds ``ceil((layers + 1) / k)`` layers; a layer's KV cache and the tensors a
split buffer cannot hold (a MoE's experts) sit on its device; ``--split-mode row`` in addition
divides every ``MUL_MAT`` weight by rows over all the devices.
"""

from __future__ import annotations

import pytest
from test_placement_rigs import make_rig, model, models_file

from tuning.model.serving import ggml_device_layers
from tuning.placement import plan
from tuning.vram import MIB, estimate, usable_mib


def moe_35b_a3b(**overrides: object):
    """35 B total, 3 B active, 4-bit, 40 layers, 16 heads x 128 (h 2048), 2 KV heads x 128,
    32 768 tokens of context, one sequence, llama.cpp."""
    fields: dict[str, object] = {
        "engine": "llama.cpp",
        "params_b": 35.0,
        "active_params_b": 3.0,
        "quant_bits": 4,
        "layers": 40,
        "attention_heads": 16,
        "kv_heads": 2,
        "context": 32768,
    }
    fields.update(overrides)
    return model("moe", **fields)


def test_the_first_device_takes_the_extra_layer() -> None:
    """load_tensors puts layer il on the first device whose cumulative split exceeds
    il / (layers + 1): 40 layers, 2 devices: il/41 < 0.5 for il = 0..20, 21 layers on the
    first, 19 and the output layer on the second; 30 layers, 4 devices: il/31 < 0.25 for
    il = 0..7, 8 layers on the first (8, 8, 8, 6); one device holds them all."""
    assert ggml_device_layers(40, 2) == 21
    assert ggml_device_layers(30, 4) == 8
    assert ggml_device_layers(40, 1) == 40


def test_row_split_of_a_moe_keeps_the_experts_of_its_layers_on_each_device() -> None:
    """The MoE at TP=2 ``row``. Split (attention q, k, v, o): 40 · (2·2048² + 2·2048·256) =
    377 487 360 parameters, 188 743 680 B at 4 bits, half on each card: 94 371 840 B.
    Unsplit (experts and the rest): 17.5e9 − 188 743 680 = 17 311 256 320 B, the first card
    holding 21 of 40 layers of it: 9 088 409 568 B. Weights on the first card: 9 182 781 408 B
    = 8757.38 MiB (an even half would be 8 750 000 000 B = 8344.65 MiB).
    KV on the first card: 21 layers x 2 heads x 128 x 2 (K, V) x 2 B x 32 768 = 704 643 072 B
    = 672 MiB, whole heads (no replication as vLLM does for tp > kv_heads)."""
    est = estimate(moe_35b_a3b(), tp=2)
    assert est.weights_mib * MIB == pytest.approx(9_182_781_408, abs=1)
    assert est.kv_cache_mib == pytest.approx(672.0)
    assert est.overhead_mib == 768 + 256


def test_layer_split_gives_the_first_stage_the_extra_layer() -> None:
    """The MoE at PP=2 ``layer``: 21 of 40 layers on the first card, all of their weights:
    17.5e9 · 21/40 = 9 187 500 000 B = 8761.88 MiB, and the same 672 MiB of KV."""
    est = estimate(moe_35b_a3b(), tp=1, pp=2)
    assert est.weights_mib * MIB == pytest.approx(9_187_500_000, abs=1)
    assert est.kv_cache_mib == pytest.approx(672.0)


def test_row_split_of_a_dense_model_with_fewer_kv_heads_than_gpus() -> None:
    """An 8 B dense bf16 model, 32 layers, 2 KV heads x 128, 8192 context, on 4 GPUs.
    llama.cpp ``row``: all weights split, 16e9 / 4 = 4e9 B = 3814.70 MiB; KV of
    ceil(33/4) = 9 layers x 2 heads x 128 x 2 x 2 B x 8192 = 75 497 472 B = 72 MiB.
    vLLM TP=4 replicates the 2 KV heads (one per GPU): 32 layers x 1 head x 4 MiB = 128 MiB."""
    row = estimate(model("d", engine="llama.cpp", kv_heads=2), tp=4)
    assert row.weights_mib * MIB == pytest.approx(4e9)
    assert row.kv_cache_mib == pytest.approx(72.0)
    assert estimate(model("v", kv_heads=2), tp=4).kv_cache_mib == pytest.approx(128.0)


def test_the_placement_refuses_a_split_whose_first_card_overflows() -> None:
    """19 sequences of the MoE on two 24 GiB cards (22 118.4 MiB usable each at 10 %
    headroom). An even half would fit: 8344.65 MiB of weights + 40 layers x 1 head x 16 MiB x
    19 = 12 160 MiB of KV + 1024 MiB = 21 528.65 MiB. The first card really holds 21 layers:
    8757.38 (row) + 21 x 2 x 16 x 19 = 12 768 + 1024 = 22 549.38 MiB under ``row`` and
    8761.88 + 12 768 + 1024 = 22 553.88 MiB under ``layer``: neither split fits, so the model
    stays unplaced and the reason gives the need."""
    spec = moe_35b_a3b(max_sequences=19)
    assert estimate(spec, tp=2).need_mib == pytest.approx(22_549.38, abs=0.01)
    assert estimate(spec, tp=1, pp=2).need_mib == pytest.approx(22_553.88, abs=0.01)
    assert estimate(spec, tp=2).need_mib > usable_mib(24576, 10.0) > 21_528.65
    result = plan(make_rig([24576, 24576]), models_file(spec))
    assert result.placements == ()
    (entry,) = result.unplaced
    assert "fits no GPU set" in entry.reason
    assert "22549 MiB each (tp=2, pp=1)" in entry.reason


def test_the_same_moe_with_18_sequences_is_placed_on_the_pair() -> None:
    """18 sequences: 8757.38 + 21 x 2 x 16 x 18 = 12 096 + 1024 = 21 877.38 MiB under ``row``
    (8761.88 + 12 096 + 1024 = 21 881.88 under ``layer``), both inside 22 118.4 MiB."""
    spec = moe_35b_a3b(max_sequences=18)
    assert estimate(spec, tp=2).need_mib == pytest.approx(21_877.38, abs=0.01)
    result = plan(make_rig([24576, 24576]), models_file(spec))
    (placed,) = result.placements
    assert placed.gpu_indices == (0, 1)
    assert placed.vram_mib in (21_878, 21_882)
