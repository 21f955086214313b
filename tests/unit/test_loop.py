"""``rigforge loop`` and :mod:`tuning.loop`: sustained runs, the reference story, rendering."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from tuning.backends.sim import SimRig
from tuning.cli import cli
from tuning.commands.loop import render_summary
from tuning.core.profile import load_profile
from tuning.errors import ConfigError
from tuning.loop import (
    LoopConfig,
    LoopObserver,
    LoopResult,
    measure,
    render_deploy_files,
    run_loop,
    serving_unit_paths,
)
from tuning.placement import load_plan
from tuning.sustained import sustained_run
from tuning.workloads import SimWorkload

#: Short sustained runs and heat-soak: long enough for sim:reference's middle cards to reach
#: thermal slowdown at stock caps (the first within ~4 simulated minutes) and for the tuned
#: caps to settle at their steady temperature; ``rigforge loop`` itself runs 30 minutes.
SHORT_S = 400.0


class Recorder(LoopObserver):
    def __init__(self) -> None:
        self.stages: list[tuple[int, str]] = []
        self.sweep_events: list[str] = []

    def stage(self, number: int, title: str) -> None:
        self.stages.append((number, title))

    def sweep_event(self, uuid: str, event: str, details: Any) -> None:
        self.sweep_events.append(event)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopResult, Recorder]]:
    """One loop on sim:reference with short runs, shared by the tests that read its results."""
    root = tmp_path_factory.mktemp("loop-reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RIGFORGE_STATE_DIR", str(root / "state"))
        recorder = Recorder()
        config = LoopConfig(out=root / "out", sustained_s=SHORT_S, heat_soak_s=SHORT_S, plots=False)
        yield run_loop(config, recorder), recorder


def one_psu_rig_doc(*, breaker_a: float = 15.0, ambient_c: float = 25.0) -> dict[str, Any]:
    """A rig document: one RTX 3090 on one PSU (50 W platform, 90 %) on one 120 V circuit."""
    return {
        "name": "loop-test",
        "rack": {"ambient_c": ambient_c},
        "circuits": [{"name": "c1", "voltage_v": 120, "breaker_a": breaker_a}],
        "psus": [
            {"name": "p1", "rating_w": 1600, "circuit": "c1", "efficiency": 0.9, "platform_w": 50}
        ],
        "gpus": [{"preset": "rtx3090", "slot": 1, "bus_id": "00000000:01:00.0", "psu": "p1"}],
    }


def one_psu_rig(*, breaker_a: float = 15.0, ambient_c: float = 25.0) -> SimRig:
    return SimRig.from_dict(one_psu_rig_doc(breaker_a=breaker_a, ambient_c=ambient_c))


# -- the reference story ---------------------------------------------------------------------


def test_tuned_reference_run_has_no_throttle_event(reference: tuple[LoopResult, Recorder]) -> None:
    result, _ = reference
    assert result.tuned.throttle_events == 0
    assert result.tuned.throttle_samples == 0


def test_tuned_reference_run_keeps_every_circuit_within_its_budget(
    reference: tuple[LoopResult, Recorder],
) -> None:
    result, _ = reference
    for circuit in result.tuned.circuits:
        assert circuit.peak_w <= circuit.budget_w, circuit
        assert circuit.at_caps_w <= circuit.budget_w, circuit
    assert result.tuned_ok


def test_stock_reference_run_throttles_and_its_caps_overload_circuit_a(
    reference: tuple[LoopResult, Recorder],
) -> None:
    result, _ = reference
    assert result.stock.throttle_events > 0
    throttled = {g.index for g in result.stock.gpus if g.throttle_events}
    assert throttled <= {1, 2, 3, 4}, "only the hot middle slots throttle"
    circuit_a = next(c for c in result.stock.circuits if c.name == "circuit-a")
    assert circuit_a.at_caps_w > circuit_a.budget_w
    assert result.stock_problem


def test_tuned_reference_trades_little_throughput_for_tokens_per_joule(
    reference: tuple[LoopResult, Recorder],
) -> None:
    result, _ = reference
    assert result.tuned.tokens_per_joule > 1.15 * result.stock.tokens_per_joule
    assert result.tuned.throughput_tps >= 0.93 * result.stock.throughput_tps
    assert result.tuned.power_w < result.stock.power_w


def test_stock_and_tuned_runs_differ_only_in_caps(reference: tuple[LoopResult, Recorder]) -> None:
    result, _ = reference
    assert [g.uuid for g in result.stock.gpus] == [g.uuid for g in result.tuned.gpus]
    assert result.stock.caps_w == {g.uuid: g.power_default_w for g in result.snapshot.gpus}
    assert result.tuned.caps_w == load_profile(result.files.profile).caps_w()
    assert result.stock.seconds == result.tuned.seconds == SHORT_S


def test_stages_run_in_order_and_the_sweep_reports_progress(
    reference: tuple[LoopResult, Recorder],
) -> None:
    _, recorder = reference
    assert [n for n, _ in recorder.stages] == [1, 2, 3, 4, 5, 6, 7]
    assert "probe" in recorder.sweep_events
    assert "soak_done" in recorder.sweep_events


def test_inspect_reads_the_riser_link_under_load(reference: tuple[LoopResult, Recorder]) -> None:
    result, _ = reference
    degraded = [g.index for g in result.snapshot.gpus if g.pcie.degraded]
    assert degraded == [5], "idle downtraining must not read as degraded; the riser must"


def test_gpu_settings_unit_carries_the_profile_caps_per_uuid(
    reference: tuple[LoopResult, Recorder],
) -> None:
    result, _ = reference
    unit = result.files.rendered["/etc/systemd/system/rigforge-gpu-settings.service"].read_text()
    match = re.search(r'RIGFORGE_CAPS_W=([^"]*)"', unit)
    assert match is not None
    caps = {k: float(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    assert caps == load_profile(result.files.profile).caps_w()
    # systemd accepts the paths quoted or bare
    assert re.search(
        r'^ExecStart="?/opt/rigforge/venv/bin/rigforge"? apply "?/etc/rigforge/profile.yaml"?$',
        unit,
        flags=re.M,
    ), unit


def test_one_serving_unit_per_placement_with_its_gpus(
    reference: tuple[LoopResult, Recorder],
) -> None:
    result, _ = reference
    units = serving_unit_paths(result.files)
    assert len(units) == len(result.plan.placements) == 3
    for placement in result.plan.placements:
        text = next(u for u in units if placement.model in u.name).read_text()
        assert f"CUDA_VISIBLE_DEVICES={','.join(placement.gpus)}" in text
        assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in text
        # the profile's caps exist: no serving at stock caps if they failed to apply
        assert "Requires=rigforge-gpu-settings.service" in text


def test_rendered_tree_mirrors_every_target_path(reference: tuple[LoopResult, Recorder]) -> None:
    result, _ = reference
    root = result.files.rendered_root
    for target in (
        "/etc/default/grub.d/rigforge-pcie.cfg",
        "/etc/default/irqbalance-rigforge",
        "/etc/systemd/system/rigforge-irq-affinity.service",
        "/etc/systemd/system/irqbalance.service.d/rigforge.conf",
        "/etc/rigforge/profile.yaml",
        "/etc/rigforge/plan.yaml",
    ):
        assert result.files.rendered[target] == root / target.lstrip("/")
        assert (root / target.lstrip("/")).is_file()
    grub = (root / "etc/default/grub.d/rigforge-pcie.cfg").read_text()
    assert "pcie_aspm.policy=performance" in grub
    assert (root / "etc/rigforge/profile.yaml").read_text() == result.files.profile.read_text()
    assert yaml.safe_load((root / "etc/rigforge/plan.yaml").read_text()) == result.plan.to_yaml()
    assert len(load_plan(root / "etc/rigforge/plan.yaml").placements) == 3


# -- sustained runs on a small rig -----------------------------------------------------------


def test_sustained_run_measures_tokens_energy_and_a_quiet_card() -> None:
    rig = one_psu_rig()
    uuid = rig.gpus[0].uuid
    calls: list[tuple[str, float, float]] = []
    run = sustained_run(
        rig,
        SimWorkload(rig, "decode"),
        {uuid: 250.0},
        label="x",
        duration_s=120.0,
        progress=lambda *args: calls.append(args),
    )
    assert calls == [("x", 60.0, 120.0), ("x", 120.0, 120.0)], "once a minute, the end once"
    gpu = run.gpus[0]
    assert gpu.cap_w == 250.0
    assert gpu.throughput_tps == pytest.approx(rig.tokens_total(uuid) / 120.0, rel=1e-6)
    assert gpu.power_w == pytest.approx(rig.gpus[0].total_energy_j() / 120.0, rel=1e-6)
    assert gpu.tokens_per_joule == pytest.approx(gpu.throughput_tps / gpu.power_w, rel=1e-6)
    assert gpu.throttle_events == gpu.throttle_samples == 0
    assert rig.workload(uuid) is None, "the load stops when the run ends"


def test_a_continuous_throttle_is_one_event_of_many_samples() -> None:
    rig = one_psu_rig(ambient_c=50.0)
    rig.reset_thermals(temp_c=88.0)
    uuid = rig.gpus[0].uuid
    run = sustained_run(rig, SimWorkload(rig, "decode"), {uuid: 350.0}, label="hot", duration_s=60)
    gpu = run.gpus[0]
    assert gpu.throttle_samples >= 50
    assert 1 <= gpu.throttle_events < gpu.throttle_samples
    assert "sw_thermal_slowdown" in gpu.throttle_reasons
    assert run.peak_temp_c is not None
    assert run.peak_temp_c >= 83


def test_a_small_circuit_is_reported_over_budget() -> None:
    rig = one_psu_rig(breaker_a=2.5)  # 120 V × 2.5 A × 0.8 = 240 W continuous
    uuid = rig.gpus[0].uuid
    run = sustained_run(rig, SimWorkload(rig, "decode"), {uuid: 350.0}, label="s", duration_s=30)
    circuit = run.circuits[0]
    assert circuit.budget_w == pytest.approx(240.0)
    assert circuit.peak_w > circuit.budget_w
    assert not circuit.within_budget
    assert circuit.peak_pct > 100.0
    assert circuit.at_caps_w == pytest.approx((350.0 + 50.0) / 0.9)
    assert not run.circuits_within_budget


def test_a_small_psu_is_reported_over_its_rating() -> None:
    """One RTX 3090 capped at 350 W plus 50 W platform on a 300 W PSU: 400 W DC at full caps
    (hand-worked), 133 % of the rating; the circuit (1440 W) is fine, so only the PSU tells."""
    doc = one_psu_rig_doc()
    doc["psus"][0]["rating_w"] = 300
    rig = SimRig.from_dict(doc)
    uuid = rig.gpus[0].uuid
    run = sustained_run(rig, SimWorkload(rig, "decode"), {uuid: 350.0}, label="s", duration_s=30)
    (psu,) = run.psus
    assert psu.at_caps_w == pytest.approx(350.0 + 50.0)
    assert psu.peak_w > psu.rating_w
    assert not psu.within_rating
    assert not run.psus_within_rating
    assert run.circuits_within_budget


def test_measure_runs_stock_caps_on_a_fresh_rig() -> None:
    stock = measure("sim:4x3090", None, label="stock", workload="decode", seed=0, duration_s=20)
    assert all(g.cap_w == 350.0 for g in stock.gpus)
    again = measure("sim:4x3090", None, label="stock", workload="decode", seed=0, duration_s=20)
    assert again.to_json() == stock.to_json(), "same seed, fresh rig: the same figures"
    uuid = stock.gpus[0].uuid
    capped = measure(
        "sim:4x3090",
        {g.uuid: 200.0 for g in stock.gpus},
        label="t",
        workload="decode",
        seed=0,
        duration_s=20,
    )
    assert capped.caps_w[uuid] == 200.0
    assert capped.gpus[0].power_w < stock.gpus[0].power_w


def test_nvml_is_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError, match="rigforge sweep --rig nvml"):
        LoopConfig(rig_spec="nvml").check()


def test_rendering_again_drops_files_of_the_previous_plan(
    reference: tuple[LoopResult, Recorder], tmp_path: Path
) -> None:
    result, _ = reference
    root = tmp_path / "rendered"
    stale = root / "etc/systemd/system/rigforge-serve-gone.service"
    stale.parent.mkdir(parents=True)
    stale.write_text("[Service]\n")
    written = render_deploy_files(result.files.profile, result.plan, root)
    assert not stale.exists()
    assert set(written) == set(result.files.rendered)


# -- the command -----------------------------------------------------------------------------


def test_loop_command_json_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "out"
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(yaml.safe_dump(one_psu_rig_doc()))
    models = tmp_path / "models.yaml"
    models.write_text(SMALL_MODEL)
    args = ["loop", "--rig", str(rig_file), "--out", str(out), "--json", "--models", str(models)]
    args += ["--sustained-s", "60", "--heat-soak-s", "60"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"stock", "tuned", "circuits", "plan", "files"} <= set(doc)
    assert doc["tuned"]["throttle_events"] == 0
    assert [c["name"] for c in doc["circuits"]] == ["c1"]
    assert doc["stock"]["gpus"][0]["cap_w"] == 350.0
    assert "▶ 3/8 sweep" in result.stderr
    (served,) = doc["serving_run"]["models"]
    assert served["model"] == "small"
    assert served["measured_tokens_per_s"] > 0
    for key in ("profile", "plan"):
        assert Path(doc["files"][key]).is_file()
    for key in ("curves_png", "heat_soak_png"):
        assert Path(doc["files"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert yaml.safe_load((out / "plan.yaml").read_text())["schema_version"] == 1


#: One 8B model at 4 bits (Llama 3.1 8B config.json: 32 layers, 32 heads, 8 KV heads, head_dim
#: 128): ~4 GB of weights, fits a 24 GB card.
SMALL_MODEL = """
models:
  - {name: small, engine: vllm, weights: org/small, params_b: 8, quant_bits: 4, layers: 32,
     attention_heads: 32, kv_heads: 8, head_dim: 128, context: 4096}
"""


def test_loop_exits_1_when_a_model_is_not_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference's three models (a 70B among them) cannot all fit one 24 GB card."""
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(yaml.safe_dump(one_psu_rig_doc()))
    models = Path(__file__).resolve().parents[2] / "inventory/examples/models-reference.yaml"
    args = ["loop", "--rig", str(rig_file), "--out", str(tmp_path / "out"), "--json"]
    args += ["--models", str(models), "--sustained-s", "60", "--heat-soak-s", "60"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["tuned"]["throttle_events"] == 0
    assert doc["plan"]["unplaced"], "the exit status is the unplaced model's"


def test_summary_shows_stock_vs_tuned_placement_and_files(
    reference: tuple[LoopResult, Recorder],
) -> None:
    result, _ = reference
    console = Console(file=io.StringIO(), width=160, no_color=True)
    render_summary(result, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for needle in ("stock vs tuned", "tokens/J", "circuit-a at full caps", "placement"):
        assert needle in text
    assert str(result.files.plan) in text
    assert "/etc/systemd/system/rigforge-gpu-settings.service" in text
    assert "tuned: 0 throttle events, every circuit within its continuous budget" in text


def test_loop_command_refuses_nvml_before_touching_anything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["loop", "--rig", "nvml", "--out", str(out)])
    assert isinstance(result.exception, ConfigError)
    assert "rigforge sweep" in str(result.exception)
    assert not out.exists()


def test_the_loop_carries_the_cpu_plan_and_each_units_cores_shared_vs_partitioned(
    reference: tuple[LoopResult, Recorder],
) -> None:
    """sim:reference is a 5995WX in NPS1: node 0 holds all 64 cores and every GPU, so before
    the CPU plan each of the three units had those 64 cores shared with 2 other engines. The
    plan gives the two vLLM TP/PP-2 units 1 + 1 + 1×2 = 4 cores and the llama.cpp unit
    1 + 4 = 5 (tuning/cpuplan/engines.yaml)."""
    result, _ = reference
    assert result.cpu_plan is not None
    shares = {c.unit: c for c in result.core_shares}
    assert sorted(shares) == sorted(u.name for u in result.cpu_plan.units)
    for placement in result.plan.placements:
        share = shares[placement.model]
        assert (share.shared_cores, share.shared_with) == (64, 2)
        assert share.partitioned_cores == (5 if placement.engine == "llama.cpp" else 4)
        assert share.shared_tok_s > 0
        # on its own planned cores (its engine's full allotment) a unit is what the plan says
        assert share.partitioned_tok_s == pytest.approx(placement.tokens_per_s)
    document = result.to_json()
    assert document["cpu_plan"]["housekeeping_cpus"] == "0-1,64-65"
    assert len(document["core_shares"]) == len(result.plan.placements)


# -- the plan served (issue 12's bar) ----------------------------------------------------------


def test_the_plans_total_matches_its_serving_run_on_the_reference_rig_within_10_pct(
    reference: tuple[LoopResult, Recorder],
) -> None:
    """Issue 12's bar: on sim:reference with the example models file, the sum of the plan's
    tok/s per model matches what the loop's simulated serving run measures within 10 %, for
    the 30 simulated minutes ``rigforge loop`` serves (the cards warm up as after a deploy)."""
    from inventory.models import load_models
    from tuning.loop import default_models_path
    from tuning.serving_run import serving_run

    result, _ = reference
    assert result.serving is not None
    assert [p.model for p in result.serving.placements] == [p.model for p in result.plan.placements]
    run = serving_run(
        result.config.rig_spec,
        load_profile(result.files.profile).caps_w(),
        result.plan,
        load_models(default_models_path()),
        seed=0,
        duration_s=1800.0,
    )
    planned = {p.model: p.tokens_per_s for p in result.plan.placements}
    assert {p.model for p in run.placements} == {
        "r1-distill-llama-70b",
        "qwq-32b",
        "r1-distill-qwen-14b",
    }
    for served in run.placements:
        assert served.predicted_tokens_per_s == planned[served.model]
        assert served.measured_tokens_per_s > 0
    assert run.measured_total == pytest.approx(run.predicted_total, rel=0.10)
    doc = result.to_json()["serving_run"]
    assert {m["model"] for m in doc["models"]} == set(planned)
    assert doc["predicted_total"] == pytest.approx(sum(planned.values()), abs=0.01)


def test_no_model_that_fits_one_free_gpu_is_split_without_showing_the_gain(
    reference: tuple[LoopResult, Recorder],
) -> None:
    """Issue 12's bar on the loop's plan (tuned caps): a model on several GPUs although one
    GPU of the rig would hold it names the best such GPU alone as its alternative, with fewer
    predicted tokens/s than its split."""
    from inventory.models import load_models
    from tuning.loop import default_models_path
    from tuning.placement import build_problem, load_profile_hints
    from tuning.placement.build import candidate_ok

    result, _ = reference
    models = load_models(default_models_path())
    by_name = {m.name: m for m in models.models}
    problem = build_problem(result.snapshot, models, load_profile_hints(result.files.profile))
    for placed in result.plan.placements:
        spec = by_name[placed.model]
        fits_one = [
            g.index for g in problem.gpus if candidate_ok(spec, 1 << g.position, 1, 1, problem.gpus)
        ]
        if len(placed.gpus) > 1 and fits_one:
            assert "alone" in placed.alternative, placed.alternative
            assert placed.alternative_tokens_per_s is not None
            assert placed.tokens_per_s > placed.alternative_tokens_per_s, placed.alternative
