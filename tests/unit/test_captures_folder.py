"""``--from-captures``: real captures copied under odd names into tmp_path, merged into one rig."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tuning.captures.errors import CaptureFormatError
from tuning.captures.folder import CaptureKind, load_captures, merge_captures
from tuning.core.pcie import LinkStatus


def _folder(tmp_path: Path, real: Path, files: dict[str, str]) -> Path:
    """Copy ``{odd name: fixture path}`` into a fresh folder under tmp_path."""
    folder = tmp_path / "box"
    folder.mkdir()
    for name, source in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real / source, target)
    return folder


def test_topo_plus_dmesg_gives_five_degraded_gpus(tmp_path: Path, real_fixtures: Path) -> None:
    folder = _folder(
        tmp_path,
        real_fixtures,
        {
            "matrix.out": "topo/5x-rtx5070-4x5060ti-all-phb-ansi.txt",
            "logs/kern": "lspci/5x-rtx5070-5060ti-dmesg-pcie-bandwidth-limited.txt",
        },
    )
    (folder / "notes.txt").write_text("bought the risers from a market stall\n")
    captured = load_captures(folder)
    snapshot = captured.snapshot
    assert snapshot.name == "box"
    assert [g.index for g in snapshot.gpus] == [0, 1, 2, 3, 4]
    # nvidia-smi numbers GPUs in bus order, so the complete set of kernel lines maps by order
    assert [g.pci_bus_id for g in snapshot.gpus] == [
        f"0000:{b}:00.0" for b in ("04", "09", "0a", "0b", "0c")
    ]
    assert all(g.pcie.status is LinkStatus.DEGRADED for g in snapshot.gpus)
    assert snapshot.gpus[1].pcie.width_current == 4
    assert snapshot.gpus[1].pcie.width_max == 16
    assert len(snapshot.topology) == 10
    assert {f.name: f.kind for f in captured.files} == {
        "matrix.out": CaptureKind.TOPO,
        "logs/kern": CaptureKind.DMESG_PCIE,
        "notes.txt": None,
    }
    assert any("notes.txt" in w and "ignored" in w for w in captured.warnings)
    # nothing these captures lack is made up
    assert all(g.name is None and g.memory_total_mib is None for g in snapshot.gpus)
    assert all(g.power_limit_w is None for g in snapshot.gpus)


def test_q_csv_and_topo_of_one_gpu_merge_field_by_field(
    tmp_path: Path, real_fixtures: Path
) -> None:
    folder = _folder(
        tmp_path,
        real_fixtures,
        {
            "a": "smi-q/1x-rtx4080super-drv595-load.txt",
            "b.csv": "query-gpu/1x-rtx4080super-drv595-allfields-load.txt",
            "c": "topo/1x-rtx4080super-ansi-underline-escapes.txt",
        },
    )
    captured = load_captures(folder)
    assert captured.warnings == ()
    (gpu,) = captured.snapshot.gpus
    assert gpu.name == "NVIDIA GeForce RTX 4080 SUPER"
    assert gpu.thresholds.slowdown_c == 96  # only -q has thresholds
    assert gpu.cpu_list == tuple(range(16))  # only topo has affinity
    assert gpu.numa_node == 0
    assert gpu.pcie.status is LinkStatus.OK


def test_join_by_bus_id_not_by_row_order(real_fixtures: Path) -> None:
    q = (real_fixtures / "smi-q/2x-rtx3090-drv560.txt").read_text(encoding="utf-8")
    # rows in the opposite order to -q, each GPU with its own limit
    csv = "pci.bus_id, power.limit [W]\n00000000:81:00.0, 280.00 W\n00000000:41:00.0, 300.00 W\n"
    captured = merge_captures({"q": q, "limits": csv})
    first, second = captured.snapshot.gpus
    assert first.pci_bus_id == "00000000:41:00.0"
    assert second.pci_bus_id == "00000000:81:00.0"
    # -q is read first, so its 350 W wins; the CSV fills only what -q lacks
    assert first.power_limit_w == 350
    merged = merge_captures({"limits": csv, "x": "pci.bus_id, pstate\n00000000:41:00.0, P8\n"})
    by_bus = {g.pci_bus_id: g for g in merged.snapshot.gpus}
    assert len(by_bus) == 2
    assert by_bus["00000000:41:00.0"].power_limit_w == 300
    assert by_bus["00000000:41:00.0"].pstate == "P8"
    assert by_bus["00000000:81:00.0"].power_limit_w == 280
    assert by_bus["00000000:81:00.0"].pstate is None


def test_host_from_numactl_and_lscpu_and_unmatched_lspci(
    tmp_path: Path, real_fixtures: Path
) -> None:
    folder = _folder(
        tmp_path,
        real_fixtures,
        {
            "t": "topo/4x-rtx6000ada-2x-epyc9374f-4nic.txt",
            "n": "numa/2x-epyc9374f-numactl-H.txt",
            "c": "numa/2x-epyc9374f-lscpu.txt",
            "p": "lspci/2x-epyc9374f-rtx6000ada-01-00.0-vvv.txt",
            "tree": "lspci/2x-epyc9374f-4x-rtx6000ada-lspci-tv.txt",
            "table": "smi-table/4x-rtx6000ada-2x-epyc9374f-drv575.txt",
        },
    )
    captured = load_captures(folder)
    snapshot = captured.snapshot
    assert snapshot.host.cpu_model == "AMD EPYC 9374F 32-Core Processor"
    assert snapshot.host.cpu_cores == 64
    assert snapshot.host.numa_nodes == 2
    assert snapshot.host.memory_gib == pytest.approx(377.5, abs=0.1)
    assert len(snapshot.gpus) == 4
    assert [g.numa_node for g in snapshot.gpus] == [0, 0, 1, 1]
    # one lspci block of four GPUs without bus ids elsewhere: not guessed
    assert all(g.pci_bus_id is None for g in snapshot.gpus)
    assert any("0000:01:00.0" in w for w in captured.warnings)
    assert any("table" in w and "not read" in w for w in captured.warnings)


def test_lspci_joins_by_bus_id_and_fills_numa_cpus(real_fixtures: Path) -> None:
    q = (real_fixtures / "smi-q/8x-rtx4090-drv550.txt").read_text(encoding="utf-8")
    vvv = (real_fixtures / "lspci/2x-epyc9374f-rtx6000ada-01-00.0-vvv.txt").read_text(
        encoding="utf-8"
    )
    numactl = (real_fixtures / "numa/2x-epyc9374f-numactl-H.txt").read_text(encoding="utf-8")
    captured = merge_captures({"q": q, "vvv": vvv, "numa": numactl})
    gpu0 = captured.snapshot.gpus[0]
    assert gpu0.pci_bus_id == "00000000:01:00.0"
    assert gpu0.slot == 3
    assert gpu0.numa_node == 0
    assert gpu0.cpu_list == tuple(range(32))  # node 0's CPUs from numactl
    assert captured.snapshot.gpus[1].numa_node is None  # no lspci block for it


def test_headerless_lspci_lines_join_only_a_single_gpu(real_fixtures: Path) -> None:
    grep = (real_fixtures / "lspci/rtx3090-x870e-01-00.0-gen1-x8-downgraded-grep.txt").read_text(
        encoding="utf-8"
    )
    alone = merge_captures({"lnk": grep}).snapshot
    (gpu,) = alone.gpus
    assert gpu.pcie.status is LinkStatus.DEGRADED
    assert (gpu.pcie.width_current, gpu.pcie.width_max) == (8, 16)

    csv = (real_fixtures / "query-gpu/2x-rtx3090-x870e-gen1-x8-minimal.txt").read_text(
        encoding="utf-8"
    )
    two = merge_captures({"lnk": grep, "csv": csv})
    assert len(two.snapshot.gpus) == 2
    assert any("cannot be matched" in w for w in two.warnings)
    assert all(g.pcie.width_max is None for g in two.snapshot.gpus)


def test_bad_and_binary_files_are_warnings(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(b"\xff\xfe\x00garbage")
    (folder / "broken.csv").write_text("index, name\n0\n")  # a row shorter than its header
    (folder / ".hidden").write_text("available: 1 nodes (0)\n")
    captured = load_captures(folder)
    assert captured.snapshot.gpus == ()
    assert any("blob.bin" in w and "UTF-8" in w for w in captured.warnings)
    assert any("broken.csv" in w for w in captured.warnings)
    assert not any(".hidden" in f.name for f in captured.files)


def test_not_a_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError):
        load_captures(tmp_path / "missing")
