"""After kill -9 or a power loss, the next rigforge command (any of them) restores the GPUs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.unit.sim_caps import caps_now, stock_caps
from tuning.apply.actuator import open_tuning_rig
from tuning.apply.journal import Journal, journal_path
from tuning.cli import cli


@pytest.fixture
def crashed_sweep(rig_file: str) -> str:
    """A rig whose caps a sweep lowered before it died without restoring them."""
    spec = rig_file
    rig, actuator = open_tuning_rig(spec)
    original = actuator.settings()
    # pid -1 never belongs to a live process: the journal's writer is gone
    Journal(path=journal_path(spec), rig_spec=spec, original=original, pid=-1).save()
    for gpu in rig.gpus:
        actuator.set_cap(gpu.uuid, gpu.power_constraints().min_w)
    return spec


def test_crashed_sweep_left_the_caps_lowered(crashed_sweep: str) -> None:
    assert caps_now(crashed_sweep) != stock_caps(crashed_sweep)


def test_next_inspect_restores_the_caps_and_says_so(crashed_sweep: str) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--rig", crashed_sweep, "--json"])
    assert result.exit_code == 0, result.output
    assert "restored original settings" in result.output
    assert caps_now(crashed_sweep) == stock_caps(crashed_sweep)
    assert not journal_path(crashed_sweep).exists()


def test_help_touches_nothing(crashed_sweep: str) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--help"])
    assert result.exit_code == 0
    assert journal_path(crashed_sweep).exists()


def test_inspect_shows_the_caps_apply_left_on_a_simulated_rig(rig_file: str) -> None:
    spec = rig_file
    rig, actuator = open_tuning_rig(spec)
    first = rig.gpus[0]
    actuator.set_cap(first.uuid, first.power_constraints().min_w)
    result = CliRunner().invoke(cli, ["inspect", "--rig", spec, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["gpus"][0]["power"]["limit_w"] == first.power_constraints().min_w
