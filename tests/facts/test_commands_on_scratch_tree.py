"""The facts' shell commands, run with ``sh`` against a scratch ``/sys`` + ``/proc`` tree.

The JSON fixtures prove ``process``; this proves the one-line shell scripts find the files
(and skip what they must: non-NVIDIA devices, the GPU's audio function), with no Python on
the "target".
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TypeVar

import pytest
from pyinfra.api import FactBase

from deploys.facts.irq import GpuIrqs, Irq, IrqAffinity
from deploys.facts.kernel import Cmdline, KernelCmdline, NumaNode, NumaNodes
from deploys.facts.pcie import AspmPolicy, AspmState, PciLink, PciLinks

T = TypeVar("T")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "root with space"
    devices = root / "sys/bus/pci/devices"
    files = {
        # the GPU: idle at gen 1, L1 enabled by firmware, two MSI vectors
        "sys/bus/pci/devices/0000:41:00.0/vendor": "0x10de",
        "sys/bus/pci/devices/0000:41:00.0/class": "0x030000",
        "sys/bus/pci/devices/0000:41:00.0/current_link_speed": "2.5 GT/s PCIe",
        "sys/bus/pci/devices/0000:41:00.0/max_link_speed": "16.0 GT/s PCIe",
        "sys/bus/pci/devices/0000:41:00.0/current_link_width": "16",
        "sys/bus/pci/devices/0000:41:00.0/max_link_width": "16",
        "sys/bus/pci/devices/0000:41:00.0/numa_node": "0",
        "sys/bus/pci/devices/0000:41:00.0/local_cpulist": "0-1",
        "sys/bus/pci/devices/0000:41:00.0/link/l1_aspm": "1",
        "sys/bus/pci/devices/0000:41:00.0/link/l0s_aspm": "0",
        "sys/bus/pci/devices/0000:41:00.0/msi_irqs/130": "msi",
        "sys/bus/pci/devices/0000:41:00.0/msi_irqs/131": "msi",
        # its HDMI audio function: NVIDIA too, but not a GPU
        "sys/bus/pci/devices/0000:41:00.1/vendor": "0x10de",
        "sys/bus/pci/devices/0000:41:00.1/class": "0x040300",
        "sys/bus/pci/devices/0000:41:00.1/irq": "140",
        # an Intel NIC
        "sys/bus/pci/devices/0000:05:00.0/vendor": "0x8086",
        "sys/bus/pci/devices/0000:05:00.0/class": "0x020000",
        "sys/module/pcie_aspm/parameters/policy": "[default] performance powersave",
        "sys/devices/system/node/node0/cpulist": "0-1",
        "sys/devices/system/node/node1/cpulist": "2-3",
        "proc/irq/130/smp_affinity_list": "0-3",
        "proc/irq/131/smp_affinity_list": "0-1",
        "proc/irq/140/smp_affinity_list": "0-3",
        "proc/cmdline": "BOOT_IMAGE=/vmlinuz ro quiet pcie_aspm.policy=performance",
        "proc/interrupts": (
            "           CPU0       CPU1\n"
            " 130:          5          0  IR-PCI-MSI 21495808-edge      nvidia\n"
            " 131:          0          0  IR-PCI-MSI 21495809-edge      nvidia\n"
            " 140:          0          0  IR-PCI-MSI 21497856-edge      snd_hda_intel\n"
        ),
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    assert devices.is_dir()
    return root


def _run(fact: FactBase[T], root: Path) -> T:
    command = fact.command(root=str(root))  # type: ignore[attr-defined]
    result = subprocess.run(
        ["sh", "-c", str(command)], capture_output=True, text=True, timeout=10, check=True
    )
    return fact.process(result.stdout.splitlines())


def test_pci_links_reads_only_nvidia_gpus(scratch: Path) -> None:
    assert _run(PciLinks(), scratch) == {
        "0000:41:00.0": PciLink(
            gen_current=1,
            gen_max=4,
            width_current=16,
            width_max=16,
            numa_node=0,
            local_cpulist="0-1",
            aspm={"l0s_aspm": 0, "l1_aspm": 1},
        )
    }


def test_irq_affinity_maps_msi_vectors_to_the_gpu(scratch: Path) -> None:
    assert _run(IrqAffinity(), scratch) == GpuIrqs(
        devices={"0000:41:00.0": (Irq(130, "0-3"), Irq(131, "0-1"))}, unmapped=()
    )


def test_aspm_policy_cmdline_and_numa(scratch: Path) -> None:
    assert _run(AspmPolicy(), scratch) == AspmState(
        active="default", available=("default", "performance", "powersave")
    )
    assert _run(KernelCmdline(), scratch).params["pcie_aspm.policy"] == "performance"
    assert _run(NumaNodes(), scratch) == (NumaNode(0, "0-1"), NumaNode(1, "2-3"))


def test_empty_tree_gives_defaults_not_errors(tmp_path: Path) -> None:
    assert _run(PciLinks(), tmp_path) == {}
    assert _run(IrqAffinity(), tmp_path) == GpuIrqs()
    assert _run(AspmPolicy(), tmp_path) is None
    assert _run(NumaNodes(), tmp_path) == ()
    assert _run(KernelCmdline(), tmp_path) == Cmdline(raw="", params={})


def test_cpu_knobs_reads_every_managed_file_and_the_record(tmp_path: Path) -> None:
    from deploys.facts.cpu import CpuKnobs

    root = tmp_path / "root with space"
    cpu = "sys/devices/system/cpu"
    files = {
        f"{cpu}/cpu0/cpufreq/scaling_governor": "schedutil",
        f"{cpu}/cpu1/cpufreq/scaling_governor": "schedutil",
        f"{cpu}/cpu0/cpuidle/state2/latency": "350",
        f"{cpu}/cpu0/cpuidle/state2/disable": "0",
        f"{cpu}/cpufreq/policy0/scaling_governor": "schedutil",  # not a cpuN: not read
        "sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never",
        "proc/sys/vm/swappiness": "60",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content + "\n")
    record = tmp_path / "state dir" / "cpu-defaults"
    fact = CpuKnobs()
    command = fact.command(root=str(root), defaults=str(record))
    state = fact.process(_sh(command))
    assert state.recorded is None
    assert state.values == {k: v for k, v in files.items() if "policy0" not in k}
    record.parent.mkdir()
    record.write_text(f"{cpu}/cpu0/cpufreq/scaling_governor=performance\n")
    state = fact.process(_sh(command))
    assert state.recorded == {f"{cpu}/cpu0/cpufreq/scaling_governor": "performance"}


def _sh(command: str) -> list[str]:
    result = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=10, check=True
    )
    return result.stdout.splitlines()
