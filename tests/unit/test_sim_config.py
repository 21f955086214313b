"""Rig files and presets: every shipped file loads; malformed ones fail with the YAML path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tuning.backends import RIGS_DIR, open_rig, preset_rig_names
from tuning.backends.sim import SimRig
from tuning.backends.sim_config import load_presets, parse_cpu_list, preset_names
from tuning.errors import ConfigError

GOOD: dict[str, Any] = {
    "name": "tiny",
    "circuits": [{"name": "wall", "voltage_v": 120, "breaker_a": 15}],
    "psus": [{"name": "psu-a", "rating_w": 1000, "circuit": "wall"}],
    "gpus": [
        {"preset": "rtx3090", "slot": 1, "bus_id": "00000000:01:00.0", "psu": "psu-a"},
        {"preset": "rtx3090", "slot": 2, "bus_id": "00000000:02:00.0", "psu": "psu-a"},
        {"preset": "rtx4090", "slot": 3, "bus_id": "00000000:03:00.0", "psu": "psu-a"},
    ],
}


def broken(**edits: Any) -> dict[str, Any]:
    """GOOD with dotted-path edits applied, e.g. ``broken(**{"gpus.2.preset": "x"})``."""
    data = copy.deepcopy(GOOD)
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return data


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        SimRig.from_dict(data, source="rigs/x.yaml")
    return str(info.value)


def test_good_inline_rig_loads() -> None:
    rig = SimRig.from_dict(GOOD, source="rigs/x.yaml")
    assert [g.name for g in rig.gpus][-1] == "NVIDIA GeForce RTX 4090"
    assert rig.psu_of(rig.gpus[0].uuid) == "psu-a"


def test_unknown_preset_names_the_path_and_suggests_a_fix() -> None:
    message = error_of(broken(**{"gpus.2.preset": "rtx3099"}))
    assert message.startswith("rigs/x.yaml: gpus[2].preset: 'rtx3099' is not a known preset")
    assert "(did you mean 'rtx3090'?)" in message


@pytest.mark.parametrize(
    ("edits", "path", "fragment"),
    [
        ({"gpus.0.bus_id": "41:00"}, "gpus[0].bus_id", "is not a PCI bus id"),
        ({"gpus.1.psu": "psu-b"}, "gpus[1].psu", "'psu-b' is not a known PSU"),
        ({"psus.0.circuit": "wal"}, "psus[0].circuit", "did you mean 'wall'?"),
        ({"gpus.1.slot": 1}, "gpus[1].slot", "duplicate slot 1: gpus[0] has it too"),
        ({"gpus.0.power_limit_w": 400}, "gpus[0].power_limit_w", "outside the preset's 100–350"),
        ({"gpus.0.pcie": {"gen": 5, "width": 16}}, "gpus[0].pcie", "exceeds the card's gen 4"),
        ({"gpus.0.pcie": {"gen": 3, "width": 12}}, "gpus[0].pcie.width", "Input should be"),
        ({"gpus.0.cpus": "0-x"}, "gpus[0].cpus", "is not a CPU list"),
        ({"gpus.0.uuid": "GPU-1234"}, "gpus[0].uuid", "is not like"),
        ({"gpus.0.colour": "red"}, "gpus[0].colour", "unknown key 'colour'"),
        ({"circuits.0.voltage_v": -120}, "circuits[0].voltage_v", "greater than or equal to 100"),
        ({"step_s": 0}, "step_s", "greater than 0"),
        ({"topology": {"links": [{"a": 0, "b": 7, "link": "PIX"}]}}, "topology.links[0]", "0–2"),
        ({"topology": {"same_numa": "PCI"}}, "topology.same_numa", "not an nvidia-smi link"),
        ({"gpus": []}, "gpus", "at least 1 item"),
    ],
)
def test_malformed_rigs_name_the_yaml_path(edits: dict[str, Any], path: str, fragment: str) -> None:
    message = error_of(broken(**edits))
    line = next((ln for ln in message.splitlines() if ln.startswith(f"rigs/x.yaml: {path}: ")), "")
    assert fragment in line, message


def test_missing_fields_are_named() -> None:
    data = broken()
    del data["gpus"][1]["bus_id"]
    del data["name"]
    message = error_of(data)
    assert "rigs/x.yaml: name: is required; add it" in message
    assert "rigs/x.yaml: gpus[1].bus_id: is required; add it" in message


def test_every_problem_is_reported_at_once() -> None:
    message = error_of(broken(**{"gpus.0.preset": "rtx3099", "gpus.2.psu": "nope"}))
    assert len(message.splitlines()) == 2


def test_not_a_mapping() -> None:
    assert "expected a mapping" in error_of(["gpus"])


def test_bad_yaml_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ngpus: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:3:1: YAML syntax error"):
        open_rig(str(path))


def test_rig_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rigs" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(
        "name: mine\ngpus:\n  - {preset: l40z, slot: 1, bus_id: '00000000:01:00.0'}\n",
        encoding="utf-8",
    )
    # Line 3 of the file holds gpus[0] (counted by hand).
    with pytest.raises(ConfigError, match=r"^rigs/mine\.yaml:3: gpus\[0\]\.preset: 'l40z'"):
        open_rig(str(path))


def test_unknown_sim_name_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as info:
        open_rig("sim:nope")
    for name in ("sim:reference", "sim:4x3090", "sim:8xl40s"):
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["reference", "4x3090", "8xl40s"])
def test_shipped_rigs_load_with_complete_topology(name: str) -> None:
    assert name in preset_rig_names()
    rig = open_rig(f"sim:{name}")
    n = len(rig.gpus)
    pairs = {frozenset((t.a, t.b)) for t in rig.topology()}
    assert len(pairs) == n * (n - 1) // 2
    assert rig.circuits()
    assert all(rig.psu_of(g.uuid) for g in rig.gpus)


def test_8xl40s_is_dual_socket_with_switch_pairs() -> None:
    snap = open_rig("sim:8xl40s").snapshot()
    assert {g.numa_node for g in snap.gpus} == {0, 1}
    assert snap.link(0, 1) == "PIX"
    assert snap.link(0, 2) == "NODE"
    assert snap.link(0, 4) == "SYS"
    assert snap.gpus[4].cpu_list is not None
    assert snap.gpus[4].cpu_list[:2] == (32, 33)


def test_4x3090_has_nvlink_pairs() -> None:
    snap = open_rig("sim:4x3090").snapshot()
    assert snap.link(0, 1) == "NV4"
    assert snap.link(1, 2) == "PHB"


def test_presets_cover_the_required_cards_and_cite_sources() -> None:
    required = {"rtx3090", "rtx4090", "rtx_a6000", "rtx6000_ada", "l40s", "a100_80gb_pcie",
                "h100_pcie"}  # fmt: skip
    assert required <= set(preset_names())
    cited = {"memory_mib", "power", "thresholds", "memory_bw_gbps", "pcie", "sm_clock_mhz",
             "cooling"}  # fmt: skip
    for name, preset in load_presets().presets.items():
        assert cited <= set(preset.source), name
        assert all(text.strip() for text in preset.source.values()), name


def test_every_preset_runs_each_workload() -> None:
    gpus = [
        {"preset": name, "slot": i, "bus_id": f"00000000:{i + 1:02x}:00.0"}
        for i, name in enumerate(preset_names())
    ]
    rig = SimRig.from_dict({"name": "all", "rack": {"coupling_c_per_w": 0}, "gpus": gpus})
    for workload in ("decode", "prefill", "batched"):
        for gpu in rig.gpus:
            rig.set_workload(gpu.uuid, workload)
        rig.clock.sleep(2.0)
        for gpu in rig.gpus:
            draw = gpu.power_draw_w()
            assert draw is not None
            assert draw <= gpu.power_limit_w() + 6, (gpu.name, workload)
            assert rig.throughput_tps(gpu.uuid) > 0


def test_inline_presets_extend_the_shipped_ones() -> None:
    custom = load_presets().presets["rtx3090"].model_dump()
    custom["name"] = "NVIDIA GeForce RTX 3090 Ti"
    custom["power"] = {**custom["power"], "default_w": 450, "max_w": 450}
    data = broken(**{"gpus.0.preset": "rtx3090ti"})
    data["presets"] = {"rtx3090ti": custom}
    rig = SimRig.from_dict(data)
    assert rig.gpus[0].power_constraints().default_w == 450


def test_cpu_list_syntax() -> None:
    assert parse_cpu_list("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    with pytest.raises(ValueError, match="backwards"):
        parse_cpu_list("5-1")


def test_rigs_dir_holds_only_rig_files() -> None:
    assert not (RIGS_DIR / ".keep").exists()
    assert sorted(p.stem for p in RIGS_DIR.glob("*.yaml")) == preset_rig_names()
