"""After kill -9 or a power loss, the next rigforge command (any of them) restores the GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuning.apply import Journal, journal_path, open_tuning_rig
from tuning.cli import cli

RIG_YAML = """
name: recovery-test
seed: 0
circuits: [{name: c1, voltage_v: 120, breaker_a: 15}]
psus: [{name: p1, rating_w: 1200, circuit: c1, platform_w: 150}]
gpus:
  - {preset: rtx3090, slot: 1, bus_id: "00000000:01:00.0", psu: p1}
  - {preset: rtx_a6000, slot: 3, bus_id: "00000000:21:00.0", psu: p1}
"""


@pytest.fixture
def crashed_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A rig whose caps a sweep lowered before it died without restoring them."""
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    spec = str(tmp_path / "rig.yaml")
    Path(spec).write_text(RIG_YAML)
    rig, actuator = open_tuning_rig(spec)
    original = actuator.settings()
    # pid -1 never belongs to a live process: the journal's writer is gone
    Journal(path=journal_path(spec), rig_spec=spec, original=original, pid=-1).save()
    for gpu in rig.gpus:
        actuator.set_cap(gpu.uuid, gpu.power_constraints().min_w)
    return spec


def caps_seen_by_a_new_process(spec: str) -> dict[str, float]:
    rig, _ = open_tuning_rig(spec)
    return {gpu.uuid: gpu.power_limit_w() for gpu in rig.gpus}


def stock_caps(spec: str) -> dict[str, float]:
    rig, _ = open_tuning_rig(spec)
    return {gpu.uuid: gpu.power_constraints().default_w for gpu in rig.gpus}


def test_crashed_sweep_left_the_caps_lowered(crashed_sweep: str) -> None:
    assert caps_seen_by_a_new_process(crashed_sweep) != stock_caps(crashed_sweep)


def test_next_inspect_restores_the_caps_and_says_so(crashed_sweep: str) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--rig", crashed_sweep, "--json"])
    assert result.exit_code == 0, result.output
    assert "restored original settings" in result.output
    assert caps_seen_by_a_new_process(crashed_sweep) == stock_caps(crashed_sweep)
    assert not journal_path(crashed_sweep).exists()


def test_help_touches_nothing(crashed_sweep: str) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--help"])
    assert result.exit_code == 0
    assert journal_path(crashed_sweep).exists()


def test_inspect_shows_the_caps_apply_left_on_a_simulated_rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    spec = str(tmp_path / "rig.yaml")
    Path(spec).write_text(RIG_YAML)
    rig, actuator = open_tuning_rig(spec)
    first = rig.gpus[0]
    actuator.set_cap(first.uuid, first.power_constraints().min_w)
    result = CliRunner().invoke(cli, ["inspect", "--rig", spec, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["gpus"][0]["power"]["limit_w"] == first.power_constraints().min_w
