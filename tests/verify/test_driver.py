"""The NVIDIA driver: user space on the inventory's branch, pinned, held back from unattended
upgrades, nouveau off, persistence on."""

from __future__ import annotations

import re

import pytest

from tests.verify import expect, read
from tests.verify.conftest import Expected


def test_driver_userspace_on_the_pinned_branch(host, expected: Expected) -> None:
    """The distro's driver packages (names: :func:`expect.driver_userspace`) are installed at a
    version of the inventory's ``driver.branch`` (``535.216.01-1~deb12u1`` is branch 535)."""
    branch = expected.config.driver.branch
    for name in expect.driver_userspace(expected.config):
        pkg = host.package(name)
        assert pkg.is_installed, f"{name} is not installed"
        assert pkg.version.startswith(f"{branch}."), f"{name} {pkg.version} is not branch {branch}"


def test_driver_branch_is_pinned(host, expected: Expected) -> None:
    cfg = expected.config
    if cfg.driver.source == "cuda-repo":
        assert host.package(f"nvidia-driver-pinning-{cfg.driver.branch}").is_installed
    else:
        pref = host.file("/etc/apt/preferences.d/rigforge-nvidia-driver.pref")
        assert pref.exists
        assert f"Pin: version {cfg.driver.branch}.*" in pref.content_string
        assert "Pin-Priority: 1001" in pref.content_string


def test_nvidia_packages_kept_out_of_unattended_upgrades(host, expected: Expected) -> None:
    """unattended-upgrades skips a package whose name a ``Package-Blacklist`` regex matches
    (``re.match``): every installed NVIDIA driver package must be matched."""
    path = "/etc/apt/apt.conf.d/51rigforge-nvidia-unattended"
    conf = host.file(path).content_string
    assert "Unattended-Upgrade::Package-Blacklist" in conf, f"{path} has no Package-Blacklist"
    patterns = [re.compile(p) for p in re.findall(r'"([^"]+)";', conf)]
    driver = set(expect.driver_userspace(expected.config))
    nvidia = {n for n in read.installed_packages(host) if re.match(r"(lib)?nvidia-", n)}
    for name in sorted(driver | nvidia):
        assert any(p.match(name) for p in patterns), f"{name} is not held back by {path}"


def test_nouveau_blacklisted(host, expected: Expected) -> None:
    text = host.file("/etc/modprobe.d/blacklist-nouveau.conf").content_string
    assert re.search(r"^blacklist nouveau$", text, re.M)
    assert re.search(r"^options nouveau modeset=0$", text, re.M)


def test_persistenced_dropin_turns_persistence_on(host, expected: Expected) -> None:
    lines = read.config_lines(
        host, "/etc/systemd/system/nvidia-persistenced.service.d/rigforge-persistence.conf"
    )
    assert "ExecStart=" in lines, "the packaged ExecStart must be reset first"
    assert any(ln.startswith("ExecStart=/") and "--persistence-mode" in ln for ln in lines)
    assert not any("--no-persistence-mode" in ln for ln in lines)
    assert read.unit_enabled(host, "nvidia-persistenced.service")


@pytest.mark.gpu
def test_gpu_persistence_on(host, expected: Expected) -> None:
    for uuid, mode in read.smi(host, "persistence_mode"):
        assert mode == "Enabled", f"{uuid}: persistence {mode}"
