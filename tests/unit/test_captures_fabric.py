"""The fabric from captured files: lspci trees, sysfs paths, topo -p2p matrices (real
captures under tests/fixtures/real, see SOURCES.md). Expected values are read off the
drawings and cross-checked with the same machine's ``nvidia-smi topo -m``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tuning.captures.fabric import (
    is_topo_p2p,
    parse_lspci_paths,
    parse_sysfs_paths,
    parse_topo_p2p,
)
from tuning.captures.folder import CaptureKind, detect_kind, merge_captures
from tuning.cli import cli

REAL = Path(__file__).parents[1] / "fixtures" / "real"


def read(name: str) -> str:
    return (REAL / name).read_text(encoding="utf-8")


def gpu_paths(name: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        p.bus_id: (p.root_bus, p.bridges)
        for p in parse_lspci_paths(read(name))
        if p.description and "RTX 6000 Ada" in p.description
    }


def test_threadripper_tree_puts_both_gpus_on_their_own_root_ports() -> None:
    """Puget WRX90: c1:00.0 and c2:00.0 on root ports c0:01.1 and c0:03.1 of one host bridge
    — the PHB the same box's topo -m shows between GPU0 and GPU1."""
    assert gpu_paths("lspci/trpro7965wx-2x-rtx6000ada-lspci-tv.txt") == {
        "0000:c1:00.0": ("0000:c0", ("0000:c0:01.1",)),
        "0000:c2:00.0": ("0000:c0", ("0000:c0:03.1",)),
    }


def test_epyc_tree_has_one_gpu_per_root_bus() -> None:
    """ASUS ESC8000A-E12: four GPUs, each under its own root bus (00, 40, c0, e0) — NODE
    within a socket and SYS across in that box's topo -m, never PHB or PIX."""
    paths = gpu_paths("lspci/2x-epyc9374f-4x-rtx6000ada-lspci-tv.txt")
    assert sorted(root for root, _ in paths.values()) == [
        "0000:00",
        "0000:40",
        "0000:c0",
        "0000:e0",
    ]
    assert all(len(bridges) == 1 for _, bridges in paths.values())


def test_nested_switches_are_the_upstream_ports_on_the_path() -> None:
    """The first Samsung NVMe of the WRX90 tree: 00:03.1 → 01:00.0 (switch up) → 02:00.0
    (down) → 03:00.0 (second switch up) → 04:10.0 (down) → 05:00.0."""
    path = next(
        p
        for p in parse_lspci_paths(read("lspci/trpro7965wx-2x-rtx6000ada-lspci-tv.txt"))
        if p.bus_id == "0000:05:00.0"
    )
    assert path.root_port == "0000:00:03.1"
    assert path.switches == ("0000:01:00.0", "0000:03:00.0")


def test_sysfs_paths_give_root_port_and_bridges() -> None:
    drm = {
        p.bus_id: p
        for p in parse_sysfs_paths(read("sysfs/1x-nvidia-intel-igpu-ls-l-sys-class-drm.txt"))
    }
    assert drm["0000:01:00.0"].root_port == "0000:00:01.0"
    assert drm["0000:00:02.0"].bridges == ()  # the iGPU sits on the root bus itself
    (amd, _) = parse_sysfs_paths(read("sysfs/1x-amd-rv730-behind-bridges-card-paths.txt"))
    assert amd.bus_id == "0000:04:00.0"
    assert amd.switches == ("0000:02:00.0",)


def test_topo_p2p_statuses() -> None:
    gns = read("topo-p2p/2x-rtx5090-trpro3975wx-rw-gns.txt")
    assert detect_kind(gns) is CaptureKind.TOPO_P2P
    assert parse_topo_p2p(gns) == {(0, 1): "GNS", (1, 0): "GNS"}
    ok = read("topo-p2p/5x-rtx50-epyc-p-all-ok-legend-truncated.txt")
    assert is_topo_p2p(ok)
    cells = parse_topo_p2p(ok)
    assert len(cells) == 20
    assert set(cells.values()) == {"OK"}


def test_topo_m_is_not_taken_for_a_p2p_matrix() -> None:
    assert detect_kind(read("topo/2x-rtx6000ada-trpro7965wx-2nic.txt")) is CaptureKind.TOPO


def test_inspect_from_captures_shows_what_the_files_allow(tmp_path: Path) -> None:
    """Same machine: its lspci -vvv names GPU c1:00.0; the tree places it; lanes and link
    widths the files do not give stay null."""
    for name in (
        "lspci/trpro7965wx-2x-rtx6000ada-lspci-tv.txt",
        "topo/2x-rtx6000ada-trpro7965wx-2nic.txt",
        "numa/trpro7965wx-numactl-H.txt",
    ):
        (tmp_path / Path(name).name).write_text(read(name), encoding="utf-8")
    result = CliRunner().invoke(cli, ["inspect", "--from-captures", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    fabric = json.loads(result.stdout)["fabric"]
    assert [g["root_port"] for g in fabric["gpus"]] == ["0000:c0:01.1", "0000:c0:03.1"]
    assert fabric["lanes"] is None
    text = CliRunner().invoke(cli, ["inspect", "--from-captures", str(tmp_path)]).stdout
    assert "root port 0000:c0:03.1" in text
    assert "Lanes: unknown" in text


def test_merge_without_tree_or_p2p_has_no_fabric() -> None:
    captured = merge_captures({"t.txt": read("topo/2x-rtx6000ada-trpro7965wx-2nic.txt")})
    assert captured.fabric is None
