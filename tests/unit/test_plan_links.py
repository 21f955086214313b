"""rigforge plan reads what rigforge links measured (issue 11: "a links.yaml the placement reads").

The expectation comes from the links file the test writes, not from the planner: a GPU pair
measured at a tenth of a GB/s cannot carry a tensor-parallel all-reduce per layer, so a plan
that used the measurement must not predict a TP split over that pair faster than over the
nominal link, and must say the set is slower than with the nominal figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from tuning.cli import cli
from tuning.errors import ConfigError

MODELS = Path(__file__).resolve().parents[2] / "inventory" / "examples" / "models-reference.yaml"


def _plan(*extra: str) -> dict:
    result = CliRunner().invoke(
        cli, ["plan", "--rig", "sim:reference", "--models", str(MODELS), "--json", *extra]
    )
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _measure(tmp_path: Path) -> Path:
    out = tmp_path / "links"
    result = CliRunner().invoke(cli, ["links", "--rig", "sim:reference", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    return out / "links.yaml"


def test_a_pair_measured_slow_is_predicted_slow(tmp_path: Path) -> None:
    """Every measured pair slowed to 0.1 GB/s, 50 µs: every split's all-reduce crawls, so
    each multi-GPU placement predicts fewer tokens/s than it does over the nominal links."""
    path = _measure(tmp_path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for pair in doc["p2p"]:
        pair["gbps"], pair["latency_us"], pair["mode"] = 0.1, 50.0, "staged"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    nominal = _plan()
    slowed = _plan("--links", str(path))
    assert slowed["score"] < nominal["score"]
    split = [p for p in nominal["placements"] if len(p["gpus"]) > 1]
    assert split, "the reference plan splits at least one model"
    for p in slowed["placements"]:
        if len(p["gpus"]) > 1:
            same = [q for q in split if q["gpus"] == p["gpus"] and q["tp"] == p["tp"]]
            for q in same:
                assert p["tokens_per_s"] < q["tokens_per_s"], p["model"]


def test_links_of_another_rig_are_refused(tmp_path: Path) -> None:
    path = _measure(tmp_path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["rig"]["fingerprint"] = "sha256:0000000000000000"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["plan", "--rig", "sim:reference", "--models", str(MODELS), "--links", str(path)]
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert "rig.fingerprint" in str(result.exception)
    assert "re-run rigforge links" in str(result.exception)
