"""llama.cpp's ``row`` split without CUDA graphs (tuning/model/serving.py ``row_launches``).

ggml-cuda turns CUDA graphs off when a node reads a split buffer (ggml-cuda.cu: "Split buffers
are not supported by CUDA graph capture"); ``ggml_cuda_op_mul_mat`` then issues, per split
matmul and 128-column chunk (``MUL_MAT_SRC1_COL_STRIDE``), the q8_1 quantisation, one matmul
kernel per device and the events that order them: 4·tp operations besides the copies. The
gap per operation (0.75 µs) is derived in serving.yaml from llama.cpp PR #6766's RTX 3090
measurement with and without graphs; the counts below are worked by hand from those rules.
"""

from __future__ import annotations

import pytest

from tests.archs import GPU, STAGED, Dense40
from tuning.model.serving import (
    load_serving_params,
    predict,
    row_launches,
)


def test_a_single_token_row_step_launches_every_kernel_and_event() -> None:
    """TP=2, one token: 7 split matmuls a layer x 40 = 280, each 4·2 = 8 operations
    (quantise, 2 matmul kernels, the main's event, the other's wait and event, the main's 2
    waits): 2240; plus 40 layers x 12 other kernels a graph would have launched: 2720."""
    assert row_launches(Dense40(), 2, 1, 1) == 2720


def test_four_members_issue_sixteen_operations_per_split_matmul() -> None:
    """TP=4, one token: 280 x 16 + 480 = 4960."""
    assert row_launches(Dense40(), 4, 1, 1) == 4960


def test_a_prefill_chunk_repeats_the_split_matmul_per_128_columns() -> None:
    """2048 tokens at TP=2: 16 chunks x 280 x 8 = 35 840; no extra for the other kernels,
    which run without graphs in every split mode at batch > 1."""
    assert row_launches(Dense40(), 2, 1, 2048) == 35_840
    assert row_launches(Dense40(), 2, 1, 129) == 280 * 8 * 2


def test_no_row_split_no_launches() -> None:
    assert row_launches(Dense40(), 1, 2, 1) == 0


def test_the_gaps_add_to_the_row_steps_host_time() -> None:
    """One token at TP=2: 2720 operations x 0.75 µs = 2.04 ms more host time than the same
    step would have with graphs on; the layer split's host time carries none of it."""
    gap_s = load_serving_params().collectives.ggml_launch_gap_us * 1e-6
    assert gap_s == pytest.approx(0.75e-6)
    row = predict(Dense40(), [GPU, GPU], tp=2, link=STAGED, context=1000)
    one = predict(Dense40(), [GPU], link=STAGED, context=1000)
    assert row.decode_step.host_s - one.decode_step.host_s == pytest.approx(2.04e-3)
    layer = predict(Dense40(), [GPU, GPU], pp=2, link=STAGED, context=1000)
    assert layer.decode_step.host_s == pytest.approx(one.decode_step.host_s)
