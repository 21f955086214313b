"""Packages and apt: the base tools, the CUDA toolkit without a driver, signed sources."""

from __future__ import annotations

import re

import pytest

from tests.verify import expect
from tests.verify.conftest import Expected


def test_base_packages_installed(host, expected: Expected) -> None:
    for name in expect.BASE_PACKAGES:
        assert host.package(name).is_installed, f"{name} is not installed"


def test_apt_sources_are_signed(host, expected: Expected) -> None:
    # Every deb822 stanza in the sources rigforge writes names the one key it trusts.
    cfg = expected.config
    patterns = []
    if cfg.driver.source == "cuda-repo" or cfg.cuda is not None:
        patterns.append("cuda-*.sources")
    if cfg.container_toolkit.enabled:
        patterns.append("nvidia-container-toolkit.sources")
    if not patterns:
        pytest.skip("this inventory adds no apt repository (driver and user space from the distro)")
    for pattern in patterns:
        listing = host.run(f"ls /etc/apt/sources.list.d/{pattern} 2>/dev/null").stdout.split()
        assert listing, f"no /etc/apt/sources.list.d/{pattern}"
        for path in listing:
            text = host.file(path).content_string
            for stanza in filter(None, (s.strip() for s in text.split("\n\n"))):
                if not re.search(r"^(Types|URIs):", stanza, re.M):
                    continue
                match = re.search(r"^Signed-By:\s*(\S+)", stanza, re.M)
                assert match, f"{path} has a stanza without Signed-By"
                keyring = host.file(match.group(1))
                assert keyring.exists, f"{path}: keyring {keyring.path} missing"


def test_cuda_toolkit_without_driver_meta_packages(host, expected: Expected) -> None:
    cuda = expected.config.cuda
    if cuda is None:
        pytest.skip("no CUDA toolkit in the inventory (cuda: null)")
    toolkit = expect.cuda_toolkit_package(cuda.version)
    assert host.package(toolkit).is_installed, f"{toolkit} is not installed"
    # The driver's own meta-package may be there (the inventory's kernel modules); any other
    # got here through the toolkit and dragged a driver along.
    allowed = expect.driver_meta_package(expected.config)
    for name in sorted(expect.DRIVER_META_PACKAGES - {allowed}):
        assert not host.package(name).is_installed, f"{name} pulls a driver; it must not be here"
    profile = host.file("/etc/profile.d/rigforge-cuda.sh").content_string
    assert f"/usr/local/cuda-{cuda.version}/bin" in profile


def test_container_toolkit_installed(host, expected: Expected) -> None:
    if not expected.config.container_toolkit.enabled:
        pytest.skip("container_toolkit.enabled is false")
    assert host.package("nvidia-container-toolkit").is_installed
