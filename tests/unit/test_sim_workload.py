"""Described workloads on the simulated rig (:mod:`tuning.backends.sim_workload`): a replica
per GPU from the step-time model, and a six-card pipeline paced by its slowest stage.

Expectations: the pipeline's shape is hand-worked in ``pipeline_passes_per_s``'s docstring;
the cap points are llmgarage.ai's 6 × RTX 3090 MiniMax M2.5 sweep (72.6/68.3/62.6/12.1 tok/s at
350/200/150/100 W per card), within the issue's 5 pp bar.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning.backends.sim import SimRig
from tuning.model.split import pipeline_passes_per_s
from tuning.workloads.spec import load_workload_file

BENCH = Path(__file__).resolve().parents[2] / "bench"
RIG = BENCH / "rigs" / "6x3090-pipeline.yaml"
SIX_CARD = BENCH / "workloads" / "6x3090-minimax-m2.5.yaml"


def test_pipeline_pace_hand_worked() -> None:
    """Six stages of 2 ms: one micro-batch completes 1 / 12 ms = 83.3 passes/s; six in flight
    keep every stage busy: 1 / 2 ms = 500; one slow stage of 4 ms caps six at 250."""
    assert pipeline_passes_per_s([0.002] * 6, 1) == pytest.approx(1 / 0.012)
    assert pipeline_passes_per_s([0.002] * 6, 6) == pytest.approx(500.0)
    assert pipeline_passes_per_s([0.002] * 5 + [0.004], 6) == pytest.approx(250.0)


def _measure(cap_w: float) -> tuple[SimRig, float]:
    rig = SimRig.from_file(RIG, seed=0)
    handle = rig.run_workload(load_workload_file(SIX_CARD))
    for gpu in rig.gpus:
        gpu.set_power_limit_w(cap_w)
    rig.clock.sleep(60.0)
    start = rig.workload_tokens_total(handle)
    rig.clock.sleep(120.0)
    return rig, (rig.workload_tokens_total(handle) - start) / 120.0


def test_six_card_pipeline_keeps_its_tokens_at_200_w_and_collapses_at_100_w() -> None:
    """llmgarage.ai: 68.3 / 72.6 = 0.94 at 200 W, 62.6 / 72.6 = 0.86 at 150 W and
    12.1 / 72.6 = 0.17 at 100 W per card, each within the issue's 5 pp."""
    _, uncapped = _measure(350.0)
    _, at_200 = _measure(200.0)
    _, at_150 = _measure(150.0)
    _, at_100 = _measure(100.0)
    assert at_200 / uncapped == pytest.approx(68.3 / 72.6, abs=0.05)
    assert at_150 / uncapped == pytest.approx(62.6 / 72.6, abs=0.05)
    assert at_100 / uncapped == pytest.approx(12.1 / 72.6, abs=0.05)


def test_stages_wait_so_each_card_draws_less_than_a_busy_card() -> None:
    """A stage runs one sixth of each token's round: uncapped, every 3090 of the pipeline
    draws well under the ~340 W a card decoding a dense model alone draws (club-3090: 334 W)."""
    rig, _ = _measure(350.0)
    for gpu in rig.gpus:
        assert gpu.instant_power_w() < 260.0
        util = gpu.utilization_pct()
        assert util is not None
        assert util < 50.0
    rig.set_workload(rig.gpus[0].uuid, "decode")  # leaving the split stops it on every card
    assert [rig.workload(g.uuid) for g in rig.gpus] == ["decode", *[None] * 5]


def test_handle_counts_the_pipeline_tokens_once() -> None:
    rig = SimRig.from_file(RIG, seed=0)
    handle = rig.run_workload(load_workload_file(SIX_CARD))
    rig.clock.sleep(30.0)
    per_gpu = sum(rig.tokens_total(g.uuid) for g in rig.gpus)
    assert rig.workload_tokens_total(handle) == pytest.approx(per_gpu)
    rig.stop_workload(handle)
    assert all(rig.workload(g.uuid) is None for g in rig.gpus)


def test_group_sweep_caps_every_gpu_of_the_pipeline_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rigforge sweep --workload`` a six-card pipeline on the six-card rig: one cap is
    searched for the split and every GPU gets it; the JSON names the GPUs swept together.
    llmgarage.ai's pipeline keeps 0.94 of its tokens at 200 W of 350 W, so the efficiency
    policy (floor 0.95 of uncapped) lands far below stock: under 250 W."""
    import json
    import sys

    import tuning.cli

    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    argv = ["sweep", "--rig", str(RIG), "--workload", str(SIX_CARD), "--json"]
    monkeypatch.setattr(sys, "argv", ["rigforge", *argv])
    tuning.cli.main()
    doc = json.loads(capsys.readouterr().out)
    uuids = [g["uuid"] for g in doc["gpus"]]
    assert doc["swept_together"] == [uuids]
    caps = {g["cap_w"] for g in doc["gpus"]}
    assert len(caps) == 1
    assert caps.pop() < 250.0
    assert all(g["throughput_rel"] >= 0.95 for g in doc["gpus"])
    assert doc["totals"]["probes"] <= 5
    assert doc["totals"]["validation_passed"] is True


def test_mixed_phase_carries_a_prefill_chunk_in_every_decode_step(tmp_path: Path) -> None:
    """models-reference.yaml's r1-distill-qwen-14b (14.8 B, 8.5 bits, llama.cpp, 48 layers,
    h 5120) on an RTX 3090, 4 sequences at 512 tokens, phase mixed: each step is one forward
    pass of the 4 decode tokens and a 512-token prefill chunk, 516 tokens on the tensor
    path: (2 · 14.8e9 · 516 + 4 · 48 · 516 · 512 · 5120) / (71e12 · 0.30) = 729 ms
    (serving.yaml: llama.cpp mfu 0.30; the 15.7 GB of weights, 27 ms, are read once and hide
    under the math), plus 1.5 + 4 · 0.05 ms of host: 0.731 s per step for 4 output tokens,
    5.47 tok/s."""
    models = (
        Path(__file__).resolve().parents[2] / "inventory" / "examples" / "models-reference.yaml"
    )
    path = tmp_path / "mixed.yaml"
    path.write_text(
        f"models: {models}\nmodel: r1-distill-qwen-14b\nconcurrency: 4\ncontext: 512\n"
        "phase: mixed\n"
    )
    rig = SimRig.from_file(BENCH / "rigs" / "6x3090-pipeline.yaml", seed=0)
    uuid = rig.gpus[0].uuid
    rig.set_workload(uuid, load_workload_file(path))
    rig.clock.sleep(10.0)
    before = rig.tokens_total(uuid)
    rig.clock.sleep(60.0)
    assert (rig.tokens_total(uuid) - before) / 60.0 == pytest.approx(5.47, rel=0.02)
