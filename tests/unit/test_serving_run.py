"""The loop's simulated serving run (tuning/serving_run.py): the plan served, and measured.

A one-GPU rig checks the run against a hand-worked figure (the preset's bandwidth and the
model's bytes per token); the same rig in a hot room checks that heat shows up in the report
rather than being hidden. The reference rig's bar (issue 12) is in tests/unit/test_loop.py,
on the loop's own plan.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from inventory.models import ModelsFile, ModelSpec
from tuning.backends.sim_config import load_presets
from tuning.commands.loop import serving_lines, serving_table
from tuning.errors import ConfigError
from tuning.model.serving import load_serving_params
from tuning.placement import plan
from tuning.serving_run import ServingRun, serving_run

#: DeepSeek-R1-Distill-Qwen-14B, GGUF Q8_0 (inventory/examples/models-reference.yaml), with
#: a short context so the KV cache read is small beside the weights.
QWEN_14B = ModelSpec.model_validate(
    {
        "name": "r1-distill-qwen-14b",
        "engine": "llama.cpp",
        "weights": "/srv/models/DeepSeek-R1-Distill-Qwen-14B-Q8_0.gguf",
        "params_b": 14.8,
        "quant_bits": 8.5,
        "layers": 48,
        "attention_heads": 40,
        "kv_heads": 8,
        "head_dim": 128,
        "context": 1024,
        "max_sequences": 1,
    }
)
MODELS = ModelsFile(models=(QWEN_14B,), headroom_pct=10)
RUN_S = 600.0


def one_3090_rig(tmp_path: Path, *, ambient_c: float = 25.0, r_c_per_w: float | None = None) -> str:
    """A rig file: one RTX 3090 on one PSU on one 120 V / 15 A circuit; its path."""
    gpu: dict[str, Any] = {
        "preset": "rtx3090",
        "slot": 1,
        "bus_id": "00000000:01:00.0",
        "psu": "p1",
    }
    if r_c_per_w is not None:
        gpu["r_c_per_w"] = r_c_per_w
    doc = {
        "name": "one-3090",
        "rack": {"ambient_c": ambient_c},
        "circuits": [{"name": "c1", "voltage_v": 120, "breaker_a": 15}],
        "psus": [
            {"name": "p1", "rating_w": 1600, "circuit": "c1", "efficiency": 0.9, "platform_w": 50}
        ],
        "gpus": [gpu],
    }
    path = tmp_path / f"one-3090-{ambient_c:g}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


def stock(rig_spec: str) -> tuple[Any, dict[str, float]]:
    """The rig's snapshot and every GPU's stock power limit (W, by UUID)."""
    from tuning.backends import open_rig

    rig = open_rig(rig_spec)
    try:
        return rig.snapshot(), {g.uuid: g.power_constraints().default_w for g in rig.gpus}
    finally:
        rig.close()


def served(rig_spec: str) -> ServingRun:
    snapshot, caps = stock(rig_spec)
    placed = plan(snapshot, MODELS)
    return serving_run(rig_spec, caps, placed, MODELS, seed=0, duration_s=RUN_S)


def hand_worked_tokens_per_s() -> float:
    """One sequence of the 14.8 B Q8_0 model (8.5 bits per weight) decoding on one RTX 3090.

    Bytes per token: weights 14.8e9 × 8.5 / 8 = 15.725 GB, plus the KV cache of half the
    1024-token context: 512 tokens × (2 · 48 layers · 8 KV heads · 128 · 2 B = 196 608 B) =
    0.10 GB; 15.826 GB in all. The 3090 reads 936 GB/s (presets.yaml, TechPowerUp), llama.cpp
    reaches 0.62 of it (serving.yaml): 15.826e9 / (936e9 · 0.62) = 27.27 ms. Math, 2 · 14.8e9
    FLOPs / (71e12 · 0.30) = 1.4 ms, hides under the reads. Host time per step 1.5 ms +
    0.05 ms for the one sequence: 28.82 ms a token → 34.7 tok/s. (The PCIe copy of 8 KiB per
    step, 0.3 µs, is left out.) The engine figures are read from serving.yaml, the bandwidth
    from presets.yaml (the figures above are today's): they are inputs here, not what is tested.
    """
    engine = load_serving_params().engines["llama.cpp"]
    bw_gbps = load_presets().presets["rtx3090"].memory_bw_gbps
    weights_b = 14.8e9 * 8.5 / 8
    kv_b = 512 * 2 * 48 * 8 * 128 * 2
    memory_s = (weights_b + kv_b) / (bw_gbps * 1e9 * engine.bw_efficiency_frac)
    return 1.0 / (memory_s + engine.host_step_s + engine.host_per_seq_s)


def test_one_card_serves_what_its_bandwidth_and_the_models_bytes_allow(tmp_path: Path) -> None:
    run = served(one_3090_rig(tmp_path))
    expected = hand_worked_tokens_per_s()
    (one,) = run.placements
    assert one.predicted_tokens_per_s == pytest.approx(expected, rel=0.01)
    assert one.measured_tokens_per_s == pytest.approx(expected, rel=0.03)
    assert one.throttle_events == 0
    assert run.within_bar
    assert run.seconds == pytest.approx(RUN_S)


def test_a_hot_card_serves_less_than_predicted_and_the_report_says_so(tmp_path: Path) -> None:
    """A 48 °C room and a cooler with twice the 3090's thermal resistance: the card passes its
    83 °C target within minutes and the driver slows it down; the plan, which has no heat in
    it, predicts what the card does cold."""
    cool = served(one_3090_rig(tmp_path))
    hot = served(one_3090_rig(tmp_path, ambient_c=48.0, r_c_per_w=0.23))
    assert hot.predicted_total == pytest.approx(cool.predicted_total)
    assert hot.throttle_events >= 1
    assert hot.measured_total < 0.97 * hot.predicted_total
    assert hot.diff_pct < -3.0
    doc = hot.to_json()
    assert doc["throttle_events"] == hot.throttle_events
    assert doc["measured_total"] < doc["predicted_total"]
    assert "thermal slowdown" in doc["heat"]
    console = Console(file=io.StringIO(), width=140, no_color=True)
    console.print(serving_table(hot))
    for line in serving_lines(hot):
        console.print(line)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "throttle" in text
    assert f"{hot.diff_pct:+.2f} %" in text
    assert "thermal slowdown" in text


def test_the_serving_run_refuses_real_gpus() -> None:
    with pytest.raises(ConfigError, match="simulated"):
        serving_run("nvml", {}, plan_of_nothing(), MODELS, seed=0, duration_s=10.0)


def plan_of_nothing() -> Any:
    from tuning.core.plan import Plan

    return Plan("r", "sha256:0", 10.0, (), (), 0.0, None, "nothing placed")


def test_replicas_sharing_a_gpu_are_named_not_measured(tmp_path: Path) -> None:
    """Two 1 B models that share the one card (``allow_sharing``): the simulator runs one
    workload per GPU, so the run says it did not serve them instead of counting one of them
    evicted by the other as a shortfall, and claims no agreement."""
    small = {
        "engine": "vllm",
        "params_b": 1.0,
        "quant_bits": 16,
        "layers": 16,
        "attention_heads": 32,
        "kv_heads": 8,
        "head_dim": 64,
        "context": 4096,
        "allow_sharing": True,
    }
    models = ModelsFile(
        models=tuple(
            ModelSpec.model_validate({"name": n, "weights": f"org/{n}", **small}) for n in "ab"
        ),
        headroom_pct=10,
    )
    rig_spec = one_3090_rig(tmp_path)
    snapshot, caps = stock(rig_spec)
    placed = plan(snapshot, models)
    assert [p.shared for p in placed.placements] == [True, True]
    run = serving_run(rig_spec, caps, placed, models, seed=0, duration_s=60.0)
    assert run.placements == ()
    assert [label for label, _ in run.not_served] == ["a", "b"]
    assert "shares GPUs with b" in run.not_served[0][1]
    assert not run.within_bar
    assert any(line.startswith("not served: a shares GPUs") for line in serving_lines(run))
    assert run.to_json()["not_served"][1]["model"] == "b"
