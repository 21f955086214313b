"""``rigforge plan``: table, --json shape, --out plan YAML, and the reference scenario."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from test_placement_rigs import make_rig

from tests.conftest import REPO_ROOT
from tuning.cli import cli
from tuning.core.power import Circuit, Psu
from tuning.placement import load_plan

REFERENCE_MODELS = REPO_ROOT / "inventory" / "examples" / "models-reference.yaml"


def reference_like_rig():
    """The shape of sim:reference: 24/48/24 GB on PSU A, 48/48/24 GB on PSU B, GPU 5 on a riser."""
    links = [["X" if a == b else "NODE" for b in range(6)] for a in range(6)]
    links[1][2] = links[2][1] = links[4][5] = links[5][4] = "PHB"
    return make_rig(
        [24576, 49140, 24564, 49140, 49140, 24576],
        links,
        degraded=[5],
        power_w=300,
        psus=[
            Psu(name="psu-a", rating_w=1600, circuit="a", efficiency=0.92, platform_w=330),
            Psu(name="psu-b", rating_w=1600, circuit="b", efficiency=0.92, platform_w=60),
        ],
        circuits=[
            Circuit(name="a", voltage_v=120, breaker_a=15),
            Circuit(name="b", voltage_v=120, breaker_a=15),
        ],
        psu_of=["psu-a"] * 3 + ["psu-b"] * 3,
        name="reference-like",
    )


@pytest.fixture
def fake_rig(monkeypatch):
    rig = reference_like_rig()
    monkeypatch.setattr("tuning.commands.plan.load_snapshot", lambda spec: rig)
    return rig


def test_json_has_the_documented_keys(fake_rig) -> None:
    result = CliRunner().invoke(cli, ["plan", "--models", str(REFERENCE_MODELS), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) >= {"placements", "score", "unplaced"}
    assert doc["unplaced"] == []
    assert {p["model"] for p in doc["placements"]} == {
        "r1-distill-llama-70b",
        "qwq-32b",
        "r1-distill-qwen-14b",
    }
    for entry in doc["placements"]:
        assert set(entry) >= {"model", "gpus", "tp", "pp", "numa_node", "vram_mib"}
        assert entry["tp"] * entry["pp"] == len(entry["gpus"])
        assert all(uuid.startswith("GPU-") for uuid in entry["gpus"])
    used = [uuid for entry in doc["placements"] for uuid in entry["gpus"]]
    assert len(used) == len(set(used))
    # issue 12: tok/s per model and their sum, each GPU's limit and clock beside them
    assert doc["tokens_per_s_total"] == pytest.approx(
        sum(entry["tokens_per_s"] for entry in doc["placements"]), abs=0.01
    )
    for entry in doc["placements"]:
        assert len(entry["caps_w"]) == len(entry["clock_mhz"]) == len(entry["gpus"])


def test_the_table_prints_tok_s_per_model_their_sum_and_the_clocks_under_caps(fake_rig) -> None:
    result = CliRunner().invoke(cli, ["plan", "--models", str(REFERENCE_MODELS)])
    assert result.exit_code == 0, result.output
    doc = json.loads(
        CliRunner().invoke(cli, ["plan", "--models", str(REFERENCE_MODELS), "--json"]).output
    )
    text = " ".join(result.output.split())
    assert f"predicted decode total: {doc['tokens_per_s_total']:.1f} tok/s over 3" in text
    assert "the GPUs decode at" in text
    assert "heat is not in the prediction" in text


def test_out_writes_a_plan_the_deploy_can_read(fake_rig, tmp_path) -> None:
    out = tmp_path / "plan.yaml"
    result = CliRunner().invoke(cli, ["plan", "--models", str(REFERENCE_MODELS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["schema_version"] == 1
    assert doc["rig"] == {"name": "reference-like", "fingerprint": fake_rig.fingerprint()}
    first = doc["placements"][0]
    for key in ("model", "engine", "weights", "gpus", "gpu_indices", "tp", "pp", "numa_node"):
        assert key in first
    for key in ("cpu_list", "vram_mib", "port", "p2p", "extra_args"):
        assert key in first
    assert "alternative_score" in doc
    assert "score" in doc
    assert load_plan(out).placements[0].model == first["model"]
    assert "r1-distill-llama-70b" in result.output  # the table


def test_table_lists_unplaced_models_with_reason(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(
        "tuning.commands.plan.load_snapshot", lambda spec: make_rig([8192], None, name="tiny")
    )
    result = CliRunner().invoke(cli, ["plan", "--models", str(REFERENCE_MODELS)])
    assert result.exit_code == 1, result.output  # scripts see an incomplete plan
    assert result.output.count("not placed") == 3
    assert "fits no GPU set" in result.output


def test_models_is_required_outside_the_repo(fake_rig, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["plan"])
    assert result.exit_code != 0
    assert "--models FILE is required" in result.output


def test_reference_scenario_on_sim_reference() -> None:
    """The real simulated reference rig, once tuning/backends/sim.py is in the checkout."""
    pytest.importorskip("tuning.backends.sim")
    from inventory.models import load_models
    from tuning.commands.plan import load_snapshot
    from tuning.placement import plan

    result = plan(load_snapshot("sim:reference"), load_models(REFERENCE_MODELS))
    assert result.unplaced == ()
    assert len(result.placements) == 3
