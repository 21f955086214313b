"""``rigforge links`` on simulated rigs: the JSON contract, the verdicts, links.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tuning.cli import cli
from tuning.errors import ConfigError
from tuning.fabric.links_file import load_links_file

BENCH_RIGS = Path(__file__).parents[2] / "bench" / "rigs"


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))


def links(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["links", *args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def test_reference_json_keys_and_the_riser_gpu_is_the_only_one_flagged() -> None:
    """sim:reference: GPU 5 hangs on a riser that trained gen 3 x8 (rig file); the other five
    are healthy Gen4 x16 links on CPU slots and must carry no verdict."""
    code, doc = links("--rig", "sim:reference")
    assert set(doc) == {"gpus", "p2p", "lanes"}
    for gpu in doc["gpus"]:
        assert set(gpu) == {
            "uuid",
            "h2d_gbps",
            "d2h_gbps",
            "h2d_concurrent_gbps",
            "expected_gbps",
            "verdicts",
        }
    flagged = [i for i, g in enumerate(doc["gpus"]) if g["verdicts"]]
    assert flagged == [5]
    assert "downtrained" in doc["gpus"][5]["verdicts"]
    assert code == 1
    assert doc["lanes"] == {"total": 128, "used": 100, "free": 28}
    assert len(doc["p2p"]) == 30
    assert set(doc["p2p"][0]) == {"src", "dst", "gbps", "latency_us", "mode"}
    uuids = [g["uuid"] for g in doc["gpus"]]
    modes = {(uuids.index(p["src"]), uuids.index(p["dst"])): p["mode"] for p in doc["p2p"]}
    assert modes[(1, 4)] == "peer"  # two RTX A6000
    assert modes[(0, 2)] == "staged"  # GeForce cards: no peer access


def test_quick_measures_each_pair_once() -> None:
    _, doc = links("--rig", "sim:reference", "--quick")
    assert len(doc["p2p"]) == 15


SHARED_RIG = """
name: shared-uplink
noise: {throughput_rel: 0.0}
gpus:
  - {preset: rtx_a6000, slot: 1, bus_id: "00000000:01:00.0"}
  - {preset: rtx_a6000, slot: 2, bus_id: "00000000:02:00.0"}
  - {preset: rtx_a6000, slot: 3, bus_id: "00000000:03:00.0"}
fabric:
  sockets:
    - name: cpu0
      pcie_lanes: 40
      memory_bw_gbps: 200
      root_ports:
        - {name: P0, gen: 4, width: 16}
        - {name: P1, gen: 4, width: 8}
  switches:
    - {name: sw0, uplink: P0, gen: 4, width: 16, downstream_ports: 2}
  chipset: {name: pch, uplink: P1, gen: 4, width: 8, lanes: 24}
  gpus:
    - {gpu: 0, at: sw0}
    - {gpu: 1, at: sw0}
    - {gpu: 2, at: pch}
"""


def test_shared_uplink_and_chipset_verdicts(tmp_path: Path) -> None:
    """GPUs 0 and 1 share sw0's x16 uplink: all at once each gets half of alone (50 % <
    70 %), naming sw0. GPU 2 trained x16 behind the chipset, whose x8 uplink holds it at half
    of what its x16 link should carry (50 % < 80 %): behind_chipset and below_expectation."""
    rig = tmp_path / "rig.yaml"
    rig.write_text(SHARED_RIG)
    result = CliRunner().invoke(cli, ["links", "--rig", str(rig)])
    assert result.exit_code == 1
    assert "sw0 uplink" in result.stdout
    _, doc = links("--rig", str(rig))
    assert doc["gpus"][0]["verdicts"] == ["shared_uplink"]
    assert doc["gpus"][1]["verdicts"] == ["shared_uplink"]
    assert "behind_chipset" in doc["gpus"][2]["verdicts"]
    assert "below_expectation" in doc["gpus"][2]["verdicts"]


def test_write_collapse_is_reported_per_pair(tmp_path: Path) -> None:
    rig = BENCH_RIGS / "wrx90-4switch-rtxpro6000.yaml"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["links", "--rig", str(rig), "--quick", "--out", str(out)])
    assert result.exit_code == 1, result.output  # four GPUs behind each switch uplink
    assert "shared_uplink" in load_links_file(out / "links.yaml").gpus[0].verdicts
    saved = load_links_file(out / "links.yaml")
    collapsed = [p for p in saved.p2p if "write_collapse" in p.verdicts]
    assert collapsed  # SW1's GPUs writing to SW2 and SW3 at once
    assert all(p.mode == "peer" for p in collapsed)


def test_out_writes_a_loadable_links_yaml_and_the_heatmap(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    CliRunner().invoke(cli, ["links", "--rig", "sim:reference", "--out", str(out)])
    saved = load_links_file(out / "links.yaml")
    assert saved.rig.name == "reference"
    assert saved.gpus[5].verdicts == ["downtrained"]
    assert (saved.gpus[5].gen, saved.gpus[5].width) == (3, 8)
    assert (out / "p2p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_host_writes_host_data(tmp_path: Path) -> None:
    inventory = tmp_path / "inv"
    inventory.mkdir()
    (inventory / "site.yaml").write_text(yaml.safe_dump({"hosts": {"ws1": {}}}))
    result = CliRunner().invoke(
        cli, ["links", "--rig", "sim:reference", "--host", "ws1", "--inventory-dir", str(inventory)]
    )
    assert result.exit_code == 1, result.output
    assert load_links_file(inventory / "host_data" / "ws1" / "links.yaml").gpus


def test_unknown_host_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["links", "--host", "nope", "--inventory-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "no inventory" in str(result.exception) or "no inventory" in result.output


def test_a_links_file_of_another_version_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    CliRunner().invoke(cli, ["links", "--rig", "sim:reference", "--quick", "--out", str(out)])
    text = (out / "links.yaml").read_text()
    assert text.startswith("schema_version: 1\n")
    # schema_version is line 1 (asserted above), so the refusal points there.
    (out / "links.yaml").write_text(text.replace("schema_version: 1", "schema_version: 2"))
    with pytest.raises(ConfigError, match=r"links\.yaml:1: schema_version"):
        load_links_file(out / "links.yaml")


def test_without_matplotlib_links_yaml_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuning import report

    def no_plots() -> None:
        raise report.PlotsUnavailable("plots need matplotlib: pip install 'rigforge[plots]'")

    monkeypatch.setattr(report, "_pyplot", no_plots)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["links", "--rig", "sim:reference", "--out", str(out)])
    assert result.exit_code == 1  # the riser GPU, not the missing plot
    assert "no heatmap" in result.stderr
    assert load_links_file(out / "links.yaml").gpus
    assert not (out / "p2p.png").exists()
