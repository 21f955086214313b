"""The ``fabric:`` section of rig files: validated with YAML paths; the lane budget; inspect."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from click.testing import CliRunner

from tuning.backends import open_rig
from tuning.backends.sim import SimRig
from tuning.cli import cli
from tuning.errors import ConfigError
from tuning.links import fabric_of_rig

#: Two cards behind one switch on one x16 port, a third on a riser, an NVMe drive.
FABRIC_RIG: dict[str, Any] = {
    "name": "fabric-test",
    "gpus": [
        {"preset": "rtx_a6000", "slot": 1, "bus_id": "00000000:01:00.0"},
        {"preset": "rtx_a6000", "slot": 2, "bus_id": "00000000:02:00.0"},
        {
            "preset": "rtx3090",
            "slot": 3,
            "bus_id": "00000000:03:00.0",
            "riser": True,
            "pcie": {"gen": 3, "width": 16},
        },
    ],
    "fabric": {
        "sockets": [
            {
                "name": "cpu0",
                "pcie_lanes": 48,
                "memory_bw_gbps": 100,
                "root_ports": [
                    {"name": "P1", "gen": 4, "width": 16},
                    {"name": "P2", "gen": 4, "width": 16},
                    {"name": "M2", "gen": 4, "width": 4},
                ],
            }
        ],
        "switches": [{"name": "sw0", "uplink": "P1", "gen": 4, "width": 16, "downstream_ports": 2}],
        "risers": [{"name": "r1", "gen": 3}],
        "gpus": [
            {"gpu": 0, "at": "sw0"},
            {"gpu": 1, "at": "sw0"},
            {"gpu": 2, "at": "P2", "riser": "r1"},
        ],
        "devices": [{"name": "nvme0", "kind": "nvme", "at": "M2", "gen": 4, "width": 4}],
    },
}


def edited(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(FABRIC_RIG)
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return data


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        SimRig.from_dict(data, source="rigs/x.yaml")
    return str(info.value)


def test_lane_budget_of_a_small_fabric() -> None:
    """Hand count: switch uplink x16 + riser GPU x16 (its Gen3 riser holds the gen, not the
    width) + NVMe x4 = 36 of 48 lanes; two GPUs share sw0's uplink."""
    fabric = fabric_of_rig(SimRig.from_dict(FABRIC_RIG, source="x"))
    budget = fabric.lane_budget()
    assert (budget.total, budget.used, budget.free) == (48, 36, 12)
    assert budget.shared_uplinks == (("sw0", ("gpu0", "gpu1")),)
    riser_gpu = fabric.gpu_node(2)
    assert (riser_gpu.gen, riser_gpu.width) == (3, 16)


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (
            "fabric.gpus.0.at",
            "sw1",
            "fabric.gpus[0].at: 'sw1' is not a known root port, switch or chipset "
            "(did you mean 'sw0'?)",
        ),
        (
            "fabric.switches.0.uplink",
            "P9",
            "fabric.switches[0].uplink: 'P9' is not a known root port or switch",
        ),
        (
            "fabric.sockets.0.pcie_lanes",
            32,
            "fabric.sockets[0].root_ports: 36 lanes wired to root ports but the socket has 32",
        ),
        (
            "fabric.switches.0.downstream_ports",
            1,
            "fabric.switches[0].downstream_ports: 2 things hang off switch 'sw0' but it has 1",
        ),
        (
            "fabric.gpus.2.riser",
            None,
            "fabric.gpus[2].riser: gpus[2].riser is true but the fabric puts no riser there",
        ),
        ("fabric.gpus.1.gpu", 0, "fabric.gpus[1].gpu: GPU 0 is already attached at fabric.gpus[0]"),
        ("fabric.devices.0.at", "P2", "root port 'P2' carries 2 things"),
        ("fabric.devices.0.width", 8, "fabric.devices[0].width: x8 does not fit port M2 (x4)"),
        (
            "fabric.sockets.0.root_ports.1.gen",
            7,
            "fabric.sockets[0].root_ports[1].gen: Input should be less than or equal to 6",
        ),
    ],
)
def test_bad_fabric_names_the_yaml_path(path: str, value: Any, fragment: str) -> None:
    assert fragment in error_of(edited(path, value))


def test_every_problem_is_reported_at_once() -> None:
    data = edited("fabric.gpus.0.at", "nowhere")
    data["fabric"]["gpus"].pop()  # GPU 2 unattached too
    message = error_of(data)
    assert "fabric.gpus[0].at" in message
    assert "fabric.gpus: GPU 2 is not attached anywhere" in message


def test_two_sockets_need_an_inter_socket_link() -> None:
    data = copy.deepcopy(FABRIC_RIG)
    data["fabric"]["sockets"].append(
        {
            "name": "cpu1",
            "pcie_lanes": 16,
            "memory_bw_gbps": 100,
            "root_ports": [{"name": "Q1", "gen": 4, "width": 16}],
        }
    )
    assert "fabric.inter_socket: is required with more than one socket" in error_of(data)


def test_reference_rig_lane_budget() -> None:
    """The article's board: 128 CPU lanes. Five GPUs at x16 (80) + the riser GPU trained at
    x8 (8) + NVMe x4 (4) + chipset uplink x8 (8) = 100 used, 28 free; the riser strands 8."""
    rig = open_rig("sim:reference")
    fabric = fabric_of_rig(rig)
    budget = fabric.lane_budget()
    assert (budget.total, budget.used, budget.free, budget.stranded) == (128, 100, 28, 8)
    assert fabric.gpu_node(5).riser == "riser-slot6"
    assert fabric.behind_chipset(0) is False


def test_inspect_prints_the_tree_and_the_budget(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["inspect", "--rig", "sim:reference"])
    assert result.exit_code == 0, result.output
    assert "Lanes: 100 used / 128 (28 free)" in result.output
    assert (
        "SLOT6 ─ GPU 5 NVIDIA GeForce RTX 3090: gen 3 x8 (max gen 4 x16), riser riser-slot6"
        in result.output
    )
    assert "    wrx80 ─ NIC nic0: gen 3 x4" in result.output  # behind the chipset, one level down
    result = CliRunner().invoke(cli, ["inspect", "--rig", "sim:reference", "--json"])
    lanes = json.loads(result.output)["fabric"]["lanes"]
    assert (lanes["total"], lanes["used"], lanes["free"]) == (128, 100, 28)


def test_inspect_shows_no_fabric_a_rig_file_does_not_describe(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path))
    data = {k: v for k, v in FABRIC_RIG.items() if k != "fabric"}
    data["gpus"] = [{**g, "riser": False} for g in data["gpus"]]  # nothing says where they sit
    rig = tmp_path / "rig.yaml"
    rig.write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["inspect", "--rig", str(rig), "--json"])
    assert "fabric" not in json.loads(result.output)


def test_a_gpu_on_a_gen3_riser_must_say_it_trains_at_gen3() -> None:
    data = copy.deepcopy(FABRIC_RIG)
    del data["gpus"][2]["pcie"]
    assert "fabric.gpus[2].at: GPU 2 reports gen 4 x16 but P2 with riser r1 carries at most " in (
        error_of(data)
    )
