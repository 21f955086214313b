"""PCIe: ASPM off the way that works (``pcie_aspm.policy=performance``), at boot and now."""

from __future__ import annotations

import re

import pytest

from tests.verify import read
from tests.verify.conftest import Expected


def _aspm_performance_or_skip(expected: Expected) -> None:
    __tracebackhide__ = True
    if expected.config.pcie.aspm != "performance":
        pytest.skip(f"pcie.aspm is {expected.config.pcie.aspm}")


def test_grub_fragment_sets_aspm_policy(host, expected: Expected) -> None:
    _aspm_performance_or_skip(expected)
    text = "\n".join(read.config_lines(host, "/etc/default/grub.d/rigforge-pcie.cfg"))
    assert re.search(r"^GRUB_CMDLINE_LINUX_DEFAULT=.*pcie_aspm\.policy=performance", text, re.M)
    # pcie_aspm=off leaves whatever the firmware enabled switched on.
    assert "pcie_aspm=off" not in text


def test_runtime_aspm_policy_is_performance(host, expected: Expected) -> None:
    _aspm_performance_or_skip(expected)
    policy = read.aspm_policy(host, read.runtime_root_or_skip(expected.config))
    if policy is None:
        pytest.skip("this kernel has no pcie_aspm policy (no CONFIG_PCIEASPM)")
    assert policy == "performance", f"ASPM policy is {policy}"


def test_runtime_aspm_off_on_every_gpu_link(host, expected: Expected) -> None:
    _aspm_performance_or_skip(expected)
    devices = read.gpu_devices(host, read.runtime_root_or_skip(expected.config))
    with_files = {d.bus_id: d.aspm for d in devices if d.aspm}
    if not with_files:
        pytest.skip("no NVIDIA GPU link exposes link/*aspm here (kernel < 5.5 or no GPU)")
    for bus_id, states in with_files.items():
        assert not any(states.values()), f"{bus_id}: ASPM states still on: {states}"


@pytest.mark.gpu
def test_gpu_links_at_max_gen_under_load(host, expected: Expected) -> None:
    # Idle GPUs drop their link speed to save power; read it while the GPU is busy.
    rows = read.smi(host, "pcie.link.gen.current,pcie.link.gen.max,utilization.gpu")
    busy = [r for r in rows if r[3].isdigit() and int(r[3]) >= 50]
    if not busy:
        pytest.skip("no GPU under load right now; run this while a model is serving")
    for uuid, current, maximum, _ in busy:
        assert current == maximum, f"{uuid}: link gen {current} under load, max {maximum}"
