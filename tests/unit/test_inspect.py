"""``rigforge inspect``: tables, ``--json``, option errors, on a fake rig, captures and sim."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuning.backends.base import Clock, Gpu, Rig
from tuning.commands import inspect as inspect_command
from tuning.core.pcie import PcieLink, TopologyLink
from tuning.core.power import Circuit, Psu
from tuning.core.rig import GpuInfo, RigSnapshot, Thresholds
from tuning.errors import ConfigError

SNAPSHOT = RigSnapshot(
    name="fake",
    gpus=(
        GpuInfo(
            index=0,
            uuid="GPU-11111111-2222-3333-4444-555555555555",
            name="NVIDIA RTX A6000",
            pci_bus_id="00000000:21:00.0",
            memory_total_mib=49140,
            power_min_w=100,
            power_max_w=300,
            power_default_w=300,
            power_limit_w=300,
            thresholds=Thresholds(slowdown_c=95, shutdown_c=98, max_operating_c=93, target_c=84),
            pcie=PcieLink(1, 4, 16, 16, under_load=False),
            numa_node=0,
            cpu_list=(*range(0, 16), *range(32, 48)),
            psu="psu-a",
        ),
        GpuInfo(
            index=1,
            uuid="GPU-66666666-7777-8888-9999-000000000000",
            name="NVIDIA GeForce RTX 3090",
            pci_bus_id="00000000:62:00.0",
            memory_total_mib=24576,
            power_limit_w=350,
            pcie=PcieLink(3, 4, 8, 16, under_load=True),
            psu="psu-a",
        ),
    ),
    topology=(TopologyLink(0, 1, "PHB"),),
    psus=(Psu(name="psu-a", rating_w=1600, circuit="circuit-a"),),
    circuits=(Circuit(name="circuit-a", voltage_v=120, breaker_a=15),),
)


class FakeRig(Rig):
    """A rig that only knows its snapshot (the command needs nothing else)."""

    name = "fake"

    def __init__(self) -> None:
        self.closed = False

    @property
    def gpus(self) -> Sequence[Gpu]:
        return ()

    @property
    def clock(self) -> Clock:
        raise NotImplementedError

    def topology(self) -> tuple[TopologyLink, ...]:
        return SNAPSHOT.topology

    def snapshot(self) -> RigSnapshot:
        return SNAPSHOT

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_rig(monkeypatch: pytest.MonkeyPatch) -> FakeRig:
    rig = FakeRig()
    opened: list[str] = []

    def fake_open(spec: str) -> tuple[Rig, None]:
        opened.append(spec)
        return rig, None

    monkeypatch.setattr(inspect_command, "open_tuning_rig", fake_open)
    rig.opened = opened  # type: ignore[attr-defined]
    return rig


def test_json_is_the_snapshot_document(fake_rig: FakeRig) -> None:
    result = CliRunner().invoke(inspect_command.command, ["--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert fake_rig.opened == ["sim:reference"]  # type: ignore[attr-defined]
    assert fake_rig.closed
    assert [g["uuid"] for g in document["gpus"]] == [g.uuid for g in SNAPSHOT.gpus]
    first, second = document["gpus"]
    assert first["power"] == {
        "min_w": 100,
        "max_w": 300,
        "default_w": 300,
        "limit_w": 300,
        "draw_w": None,
    }
    assert second["power"]["min_w"] is None  # unknown stays null
    assert [g["pcie"]["degraded"] for g in document["gpus"]] == [False, True]
    assert first["pcie"]["status"] == "recheck_under_load"
    assert document["topology"] == [{"a": 0, "b": 1, "link": "PHB"}]
    assert document["psus"][0]["circuit_budget_w"] == pytest.approx(1440)
    assert second["numa_node"] is None


def test_tables_name_the_degraded_link_and_the_budget(fake_rig: FakeRig) -> None:
    result = CliRunner().invoke(inspect_command.command, ["--rig", "sim:whatever"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert fake_rig.opened == ["sim:whatever"]  # type: ignore[attr-defined]
    assert (
        "GPU 1 (NVIDIA GeForce RTX 3090, 00000000:62:00.0): PCIe gen 3 x8 of gen 4 x16 — "
        "degraded; check the riser/slot" in out
    )
    assert (
        "GPU 0 (NVIDIA RTX A6000, 00000000:21:00.0): PCIe gen 1 x16 of gen 4 x16 while idle" in out
    )
    assert "0-15,32-47" in out  # compact CPU ranges
    assert "GPU-11111111-2222-3333-4444-555555555555" in out  # never folded
    assert "1440" in out  # 120 V × 15 A × 0.8
    assert "650" in out  # GPU limits on psu-a: 300 + 350
    assert "100/300/300" in out
    assert "95/98/93/84" in out


def test_rig_and_captures_together_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        inspect_command.command, ["--rig", "sim:reference", "--from-captures", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "alternatives" in result.output


def test_rigforge_errors_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(spec: str) -> tuple[Rig, None]:
        raise ConfigError(f"unknown simulated rig {spec!r}")

    monkeypatch.setattr(inspect_command, "open_tuning_rig", broken)
    result = CliRunner().invoke(inspect_command.command, ["--rig", "sim:nope"])
    assert isinstance(result.exception, ConfigError)


def test_from_captures_json(tmp_path: Path, real_fixtures: Path) -> None:
    folder = tmp_path / "captures"
    folder.mkdir()
    shutil.copyfile(real_fixtures / "smi-q/2x-rtx3090-drv560.txt", folder / "one")
    shutil.copyfile(real_fixtures / "topo/2x-rtx3090-nvlink-nv4-lxc-cpuset.txt", folder / "two")
    (folder / "three").write_text("not a capture\n")
    result = CliRunner().invoke(inspect_command.command, ["--from-captures", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["name"] == "captures"
    assert len(document["gpus"]) == 2
    assert document["topology"] == [{"a": 0, "b": 1, "link": "NV4"}]
    assert [g["power"]["default_w"] for g in document["gpus"]] == [350, 350]
    assert [g["cpu_list"] for g in document["gpus"]] == [list(range(6))] * 2
    assert "three" in result.stderr


def test_from_captures_tables(tmp_path: Path, real_fixtures: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    shutil.copyfile(
        real_fixtures / "query-gpu/2x-rtx5060ti-gen3-x4-idle-gen1.txt", folder / "q.csv"
    )
    result = CliRunner().invoke(inspect_command.command, ["--from-captures", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.count("degraded; check the riser/slot") == 2
    assert "PCIe gen 1 x4 of gen 3 x16" in result.output


@pytest.mark.skipif(
    importlib.util.find_spec("tuning.backends.sim") is None,
    reason="the simulated rig (tuning/backends/sim.py) has not landed yet",
)
def test_reference_sim_rig_end_to_end() -> None:
    result = CliRunner().invoke(inspect_command.command, ["--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert len(document["gpus"]) == 6
    assert document["memory_total_mib"] * 2**20 >= 200e9  # "200+ GB of VRAM"
    assert sum(g["pcie"]["degraded"] for g in document["gpus"]) == 1
    assert len(document["psus"]) == 2
