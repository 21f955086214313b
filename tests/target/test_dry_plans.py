"""``--dry`` plans for the driver sources CI cannot install: ``cuda-repo`` and ``ubuntu``.

The CI target installs Debian's own NVIDIA packages for real (``test_target.py``). The other
two sources are planned against a real target over SSH — facts read from it, operations
decided — with ``pyinfra --dry --json``, and the plan's order and package choices asserted:

* ``cuda-repo`` (CUDA 12.8 toolkit, container toolkit on, open modules): ``cuda-keyring`` and
  the deb822 ``.sources`` (``Signed-By``) come before the pin package
  ``nvidia-driver-pinning-<branch>``, which comes before any driver package; the toolkit is
  ``cuda-toolkit-12-8``, never ``cuda`` or ``cuda-drivers``.
* ``ubuntu`` (Canonical's ``-server`` packages, same toolkit): the apt preferences pin comes
  before the driver packages, and the CUDA repository (for the toolkit only) before the
  toolkit. Its inventory says ``distro: ubuntu noble`` although the target is Debian bookworm:
  no deploy compares the distro fact with the inventory (the validator checks that the source
  fits the *declared* distro), so a dry run plans exactly what a noble box would get, with
  this target's facts deciding only what is already there.

Nothing may change on the target: every file under the trees a deploy writes is compared
(mode, size, mtime) before and after the dry runs.

Runs on its own target (``dry-plans`` on 127.0.0.1:2231 unless ``RIGFORGE_DRY_TARGET`` /
``RIGFORGE_DRY_PORT`` say otherwise)::

    .venv/bin/pytest -m target tests/target/test_dry_plans.py
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploys.cuda import FORBIDDEN
from tests.target import harness, util

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_DRY_TARGET", "dry-plans")
PORT = int(os.environ.get("RIGFORGE_DRY_PORT", "2231"))
BRANCH = "570"
#: What a deploy can write on the target; compared before and after the dry runs.
WATCHED = ("etc", "usr", "opt", "var/lib/dpkg", "var/lib/apt", "var/lib/systemd", "boot")

CUDA_REPO = {
    "driver": {
        "source": "cuda-repo",
        "branch": BRANCH,
        "flavour": "open",
        "install_kernel_modules": True,
    },
    "cuda": {"version": "12.8"},
    "container_toolkit": {"enabled": True},
}
UBUNTU = {
    "distro": {"id": "ubuntu", "codename": "noble"},
    "driver": {
        "source": "ubuntu",
        "branch": BRANCH,
        "flavour": "open",
        "install_kernel_modules": True,
    },
    "cuda": {"version": "12.8"},
}


@pytest.fixture(scope="module")
def target() -> Iterator[harness.Target]:
    """A fresh target for the dry runs (skips with the reason when the tier cannot run)."""
    gpus = util.standin_gpus(util.CI_YAML, "ci-target")
    with util.fresh_target(NAME, PORT, "start dry-plan target", gpus=gpus) as tgt:
        yield tgt


@pytest.fixture(scope="module")
def untouched(target: harness.Target) -> Iterator[None]:
    """Fails the module's last test if the dry runs changed any file the deploy could write."""
    before = util.tree_state(target.root, WATCHED)
    yield
    after = util.tree_state(target.root, WATCHED)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"a --dry run changed the target: {changed[:20]}"


@pytest.fixture(scope="module")
def plans(
    target: harness.Target, untouched: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, util.DryPlan]:
    """The dry plans of both inventories against the same target."""
    out = {}
    for label, overrides in (("cuda-repo", CUDA_REPO), ("ubuntu", UBUNTU)):
        module = util.inventory_for(
            target, tmp_path_factory.mktemp(label), overrides=overrides, stem=label
        )
        plan = util.dry_plan(module, f"--dry plan ({label})")
        assert plan.rc == 0, plan.stderr_tail
        out[label] = plan
    return out


def _packages(plan: util.DryPlan) -> list[str]:
    """Every package an install operation names (``… [pkg pkg]``, from ``ensure_packages``)."""
    found = []
    for name in plan.names:
        match = re.search(r"\[([^\]]+)\]\s*$", name)
        if match:
            found += match.group(1).split()
    return found


def test_cuda_repo_key_and_signed_sources_before_the_driver(plans) -> None:
    plan = plans["cuda-repo"]
    keyring = plan.index("Install cuda-keyring")
    sources = plan.index("CUDA apt repository (deb822, signed-by)")
    driver = plan.index("NVIDIA kernel modules")
    assert keyring < sources < driver, plan.text
    assert keyring < plan.index("NVIDIA user space"), plan.text
    # A fresh target has neither: both are real changes, not no-ops.
    assert plan.names[keyring] in plan.changing, plan.text
    assert plan.names[sources] in plan.changing, plan.text


def test_cuda_repo_branch_pin_before_any_driver_package(plans) -> None:
    plan = plans["cuda-repo"]
    pin = plan.index(f"[nvidia-driver-pinning-{BRANCH}]")
    assert pin < plan.index("NVIDIA user space"), plan.text
    assert pin < plan.index("NVIDIA kernel modules (open) [nvidia-open]"), plan.text
    assert plan.names[pin] in plan.changing, plan.text


def test_cuda_repo_toolkit_is_cuda_toolkit_12_8_only(plans) -> None:
    plan = plans["cuda-repo"]
    toolkit = plan.index("CUDA 12.8 toolkit [cuda-toolkit-12-8]")
    assert plan.names[toolkit] in plan.changing, plan.text
    packages = _packages(plan)
    assert "cuda" not in packages, packages
    assert "cuda-drivers" not in packages, packages  # open flavour: nvidia-open, not this
    assert FORBIDDEN.isdisjoint(set(packages) - {"nvidia-open"}), packages


def test_cuda_repo_container_toolkit_repo_before_its_package(plans) -> None:
    plan = plans["cuda-repo"]
    key = plan.index("NVIDIA Container Toolkit key")
    repo = plan.index("NVIDIA Container Toolkit repository (deb822, signed-by)")
    package = plan.index("[nvidia-container-toolkit]")
    assert key < repo < package, plan.text
    assert plan.index("Generate the CDI spec") > package, plan.text


def test_ubuntu_pin_before_the_server_driver_packages(plans) -> None:
    plan = plans["ubuntu"]
    pin = plan.index(f"Pin NVIDIA packages to branch {BRANCH}")
    userspace = plan.index(f"nvidia-utils-{BRANCH}-server")
    modules = plan.index(f"[nvidia-driver-{BRANCH}-server-open]")
    assert pin < userspace, plan.text
    assert pin < modules, plan.text
    assert not any("nvidia-driver-pinning" in n for n in plan.names), "CUDA-repo pin on ubuntu"


def test_ubuntu_toolkit_from_the_signed_cuda_repo(plans) -> None:
    plan = plans["ubuntu"]
    keyring = plan.index("Install cuda-keyring")
    sources = plan.index("CUDA apt repository (deb822, signed-by)")
    toolkit = plan.index("CUDA 12.8 toolkit [cuda-toolkit-12-8]")
    assert keyring < sources < toolkit, plan.text
    packages = _packages(plan)
    assert "cuda" not in packages, packages
    assert "cuda-drivers" not in packages, packages


def test_dry_runs_changed_nothing(target: harness.Target, plans, untouched: None) -> None:
    """Both plans were made; the ``untouched`` fixture compares the target's files at teardown.

    Here: the target still has none of what the plans would install.
    """
    assert plans["cuda-repo"].changing, "a fresh target must need changes"
    for path in (
        "etc/apt/sources.list.d/cuda-debian12-x86_64.sources",
        "etc/apt/sources.list.d/nvidia-container-toolkit.sources",
        "etc/apt/preferences.d/rigforge-nvidia-driver.pref",
        "etc/rigforge",
    ):
        assert not (Path(target.root) / path).exists(), f"{path} exists after --dry"
