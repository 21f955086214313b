"""Write-back: ``rigforge sweep/plan --host NAME`` write the host's data where the inventory
looks by default (``host_data/NAME/profile.yaml`` / ``plan.yaml``), and the next load of the
inventory picks them up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from inventory.validate import load_inventory
from tests.conftest import REPO_ROOT
from tuning.cli import cli
from tuning.core.profile import load_profile

EXAMPLES = REPO_ROOT / "inventory" / "examples"
CI_RIG = EXAMPLES / "rigs" / "ci-2x3090.yaml"
MODELS = EXAMPLES / "models-reference.yaml"
CI_UUIDS = {
    "GPU-c1000000-0000-4000-8000-000000000001",
    "GPU-c1000000-0000-4000-8000-000000000002",
}


@pytest.fixture
def inventory_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the two-host CI inventory without any host data (journals kept in tmp)."""
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))
    inv = tmp_path / "inv"
    inv.mkdir()
    shutil.copy(EXAMPLES / "ci-two.yaml", inv / "ci-two.yaml")
    shutil.copytree(EXAMPLES / "rigs", inv / "rigs")
    (inv / "secrets").mkdir()
    shutil.copy(EXAMPLES / "secrets" / "ci-hf-token", inv / "secrets" / "ci-hf-token")
    return inv


def _sweep(*args: str) -> object:
    return CliRunner().invoke(
        cli,
        ["sweep", "--rig", str(CI_RIG), "--heat-soak-s", "60", "--seed", "1", *args],
    )


def _hosts(inv: Path) -> dict:
    return load_inventory(inv / "ci-two.yaml", check_ssh_files=False).hosts


def test_inventory_without_host_data_has_no_profile(inventory_dir: Path) -> None:
    assert _hosts(inventory_dir)["ws-a"].power.profile is None


def test_sweep_host_writes_profile_under_host_data(inventory_dir: Path) -> None:
    result = _sweep("--host", "ws-a", "--inventory-dir", str(inventory_dir))
    assert result.exit_code == 0, result.output
    written = inventory_dir / "host_data" / "ws-a" / "profile.yaml"
    assert {g.uuid for g in load_profile(written).gpus} == CI_UUIDS


def test_next_inventory_load_points_power_profile_at_it(inventory_dir: Path) -> None:
    _sweep("--host", "ws-a", "--inventory-dir", str(inventory_dir))
    # The validator also checks the profile's fingerprint against the listed GPUs: it passes.
    host = _hosts(inventory_dir)["ws-a"]
    assert host.power.profile == str(inventory_dir / "host_data" / "ws-a" / "profile.yaml")


def test_profile_out_writes_only_the_profile(tmp_path: Path, inventory_dir: Path) -> None:
    out = tmp_path / "remote" / "etc" / "profile.yaml"
    result = _sweep("--profile-out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["profile.yaml"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "-dash"])
def test_sweep_refuses_a_host_name_that_is_not_a_folder_name(
    inventory_dir: Path, name: str
) -> None:
    result = _sweep("--host", name, "--inventory-dir", str(inventory_dir))
    assert result.exit_code != 0
    assert not (inventory_dir / "host_data").exists()


def test_plan_host_writes_plan_and_reads_the_hosts_profile(
    inventory_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sweep("--host", "ws-a", "--inventory-dir", str(inventory_dir))
    seen: list[Path] = []
    import tuning.commands.plan as plan_cmd

    real = plan_cmd.load_profile_hints
    monkeypatch.setattr(plan_cmd, "load_profile_hints", lambda p: seen.append(p) or real(p))
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            "--rig",
            str(CI_RIG),
            "--models",
            str(MODELS),
            "--host",
            "ws-a",
            "--inventory-dir",
            str(inventory_dir),
        ],
    )
    host_dir = inventory_dir / "host_data" / "ws-a"
    assert seen == [host_dir / "profile.yaml"]
    plan = yaml.safe_load((host_dir / "plan.yaml").read_text())
    assert isinstance(plan["placements"], list)
    # the plan is written either way; the exit status says whether every model was placed
    assert result.exit_code == (1 if plan["unplaced"] else 0), result.output


def _plan(*args: str) -> Result:
    return CliRunner().invoke(cli, ["plan", "--models", str(MODELS), *args])


def test_plan_host_needs_an_explicit_rig(inventory_dir: Path) -> None:
    result = _plan("--host", "ws-a", "--inventory-dir", str(inventory_dir))
    assert result.exit_code == 2
    assert "say which rig with --rig" in result.output
    assert not (inventory_dir / "host_data").exists()


def test_plan_host_must_be_declared_by_an_inventory(inventory_dir: Path) -> None:
    result = _plan("--rig", str(CI_RIG), "--host", "ws-x", "--inventory-dir", str(inventory_dir))
    assert result.exit_code != 0
    assert "no inventory in" in str(result.exception) + result.output
    assert not (inventory_dir / "host_data" / "ws-x").exists()


def test_plan_refuses_a_profile_tuned_on_other_gpus(inventory_dir: Path, tmp_path: Path) -> None:
    _sweep("--host", "ws-a", "--inventory-dir", str(inventory_dir))
    profile = inventory_dir / "host_data" / "ws-a" / "profile.yaml"
    result = _plan("--rig", "sim:reference", "--profile", str(profile))
    assert result.exit_code != 0
    assert "rig.fingerprint" in str(result.exception) + result.output


def test_next_inventory_load_points_serving_plan_at_it(inventory_dir: Path) -> None:
    host_dir = inventory_dir / "host_data" / "ws-b"
    host_dir.mkdir(parents=True)
    shutil.copy(EXAMPLES / "host_data" / "ws-b" / "plan.yaml", host_dir / "plan.yaml")
    assert _hosts(inventory_dir)["ws-b"].serving.plan == str(host_dir / "plan.yaml")


def test_hand_caps_keep_the_written_back_profile_out(inventory_dir: Path) -> None:
    text = (inventory_dir / "ci-two.yaml").read_text()
    text = text.replace("max_w: 350, psu: psu-a}", "max_w: 350, power_cap_w: 250, psu: psu-a}")
    (inventory_dir / "ci-two.yaml").write_text(text)
    _sweep("--host", "ws-a", "--inventory-dir", str(inventory_dir))
    assert _hosts(inventory_dir)["ws-a"].power.profile is None


def test_an_explicit_profile_wins_over_host_data(inventory_dir: Path, tmp_path: Path) -> None:
    _sweep("--host", "ws-a", "--inventory-dir", str(inventory_dir))
    own = inventory_dir / "mine.yaml"
    shutil.copy(inventory_dir / "host_data" / "ws-a" / "profile.yaml", own)
    text = (inventory_dir / "ci-two.yaml").read_text()
    text = text.replace("  ws-a:\n", "  ws-a:\n    power: {profile: mine.yaml}\n", 1)
    (inventory_dir / "ci-two.yaml").write_text(text)
    assert _hosts(inventory_dir)["ws-a"].power.profile == str(own)


def test_sweep_refuses_a_host_no_inventory_declares_before_sweeping(
    inventory_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuning.commands.sweep as sweep_cmd

    monkeypatch.setattr(sweep_cmd, "Sweep", None)  # a sweep that starts fails another way
    result = _sweep("--host", "ws-x", "--inventory-dir", str(inventory_dir))
    assert result.exit_code != 0
    assert "no inventory in" in str(result.exception)
    assert "ws-a" in str(result.exception)  # the hosts it does declare
    assert not (inventory_dir / "host_data").exists()


def test_inventory_file_host_writes_beside_the_inventory(
    inventory_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run from elsewhere: the ./inventory default must not be what is used
    monkeypatch.chdir(inventory_dir.parent)
    result = _sweep("--inventory", str(inventory_dir / "ci-two.yaml"), "--host", "ws-a")
    assert result.exit_code == 0, result.output
    written = inventory_dir / "host_data" / "ws-a" / "profile.yaml"
    assert {g.uuid for g in load_profile(written).gpus} == CI_UUIDS
