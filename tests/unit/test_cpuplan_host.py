"""Reading this host's CPU topology from sysfs (a scratch tree, and the real /sys vs lscpu)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tuning.captures.cpu import cpu_topology, parse_lscpu_p
from tuning.captures.errors import CaptureFormatError
from tuning.cpuplan.host import read_host_topology


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="ascii")


def _tree(root: Path, online: str = "0-3") -> None:
    """2 cores × SMT 2 (siblings at +2), one socket, one node; L2 per core, L3 shared by all."""
    cpu = "sys/devices/system/cpu"
    _write(root, f"{cpu}/online", online)
    _write(root, "sys/devices/system/node/node0/cpulist", "0-3")
    for c in range(4):
        _write(root, f"{cpu}/cpu{c}/topology/core_id", str(c % 2))
        _write(root, f"{cpu}/cpu{c}/topology/physical_package_id", "0")
        _write(root, f"{cpu}/cpu{c}/cache/index2/level", "2")
        _write(root, f"{cpu}/cpu{c}/cache/index2/shared_cpu_list", f"{c % 2},{c % 2 + 2}")
        _write(root, f"{cpu}/cpu{c}/cache/index3/level", "3")
        _write(root, f"{cpu}/cpu{c}/cache/index3/shared_cpu_list", "0-3")
    _write(root, f"{cpu}/cpu0/cpufreq/scaling_available_governors", "performance powersave")
    for i, (name, latency) in enumerate([("POLL", 0), ("C1", 1), ("C2", 350)]):
        _write(root, f"{cpu}/cpu0/cpuidle/state{i}/name", name)
        _write(root, f"{cpu}/cpu0/cpuidle/state{i}/latency", str(latency))
        _write(root, f"{cpu}/cpu0/cpuidle/state{i}/disable", "1" if name == "C2" else "0")


def test_a_scratch_sysfs_tree_reads_as_its_hand_written_layout(tmp_path: Path) -> None:
    _tree(tmp_path)
    topo = read_host_topology(tmp_path)
    assert [c.cpus for c in topo.cores] == [(0, 2), (1, 3)]
    assert [d.cpus for d in topo.llcs] == [(0, 1, 2, 3)]  # the L3, not the per-core L2
    assert topo.governors == ("performance", "powersave")
    assert [(s.name, s.latency_us, s.disabled) for s in topo.cstates] == [
        ("POLL", 0, False), ("C1", 1, False), ("C2", 350, True),
    ]  # fmt: skip


def test_an_online_list_no_kernel_prints_is_refused(tmp_path: Path) -> None:
    _tree(tmp_path, online="0-2000000000")
    with pytest.raises(CaptureFormatError, match="online: missing or not a CPU list"):
        read_host_topology(tmp_path)


@pytest.mark.skipif(shutil.which("lscpu") is None, reason="needs util-linux lscpu")
def test_this_hosts_sysfs_reads_as_lscpu_says() -> None:
    """The real /sys of the machine running the tests against util-linux's own reading."""
    out = subprocess.run(["lscpu", "-p"], capture_output=True, text=True, check=True).stdout
    expected = cpu_topology(parse_lscpu_p(out), source="lscpu -p")
    topo = read_host_topology(Path("/"))
    assert [c.cpus for c in topo.cores] == [c.cpus for c in expected.cores]
    assert [d.cpus for d in topo.llcs] == [d.cpus for d in expected.llcs]
    assert [n.cpus for n in topo.nodes] == [n.cpus for n in expected.nodes]
