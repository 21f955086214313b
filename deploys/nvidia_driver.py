"""The NVIDIA driver: repo + keyring, branch pin BEFORE the driver, nouveau off, persistence on.

Sources (``driver.source``):

* ``debian`` — Debian non-free (bookworm ships branch 535). Without kernel modules
  (``install_kernel_modules: false``, the CI target) only user space is installed:
  ``nvidia-smi libnvidia-ml1 nvidia-persistenced`` with ``--no-install-recommends``.
* ``cuda-repo`` — NVIDIA's CUDA apt repository: ``cuda-keyring`` for the key, a deb822
  ``.sources`` with ``Signed-By``, and ``nvidia-driver-pinning-<branch>`` installed before any
  driver package (NVIDIA driver installation guide, "Version locking"). Modules: ``nvidia-open``
  (open) or ``cuda-drivers`` (proprietary).
* ``ubuntu`` — Canonical's ``-server`` (ERD) packages ``nvidia-driver-<branch>-server[-open]``.

For ``debian`` and ``ubuntu`` the branch is held by an apt preferences pin (priority 1001,
``Pin: version <branch>.*``) written before the driver is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files

from deploys.operations.systemd import restart_step
from deploys.util import (
    cfg,
    ensure_packages,
    follow_up,
    missing_packages,
    put_files,
    put_spec,
    request_reboot,
    service_after_change,
    snapshot,
)
from inventory.schema import HostConfig
from tuning.render import files as specs

DEFAULTS = {
    "rigforge_cuda_repo_base": "https://developer.download.nvidia.com/compute/cuda/repos",
    "rigforge_cuda_keyring_deb": "cuda-keyring_1.1-1_all.deb",
    "rigforge_cuda_arch": "x86_64",
}

#: Packages unattended-upgrades must leave alone (regexes on package names).
UNATTENDED_BLACKLIST = (
    "^nvidia-",
    "^libnvidia-",
    "^libcuda",
    "^libnvcuvid",
    "^libnvoptix",
    "^firmware-nvidia",
    "^xserver-xorg-video-nvidia",
    "^cuda-drivers",
    "^cuda-compat",
)

#: Package globs pinned to the branch for the ``debian``/``ubuntu`` sources.
PIN_PATTERNS = ("nvidia-*", "libnvidia-*", "libcuda1", "libnvcuvid1", "firmware-nvidia-gsp")

#: CUDA repo folder per distro codename (developer.download.nvidia.com/compute/cuda/repos/).
CUDA_REPO_DISTRO = {
    "bullseye": "debian11",
    "bookworm": "debian12",
    "trixie": "debian13",
    "focal": "ubuntu2004",
    "jammy": "ubuntu2204",
    "noble": "ubuntu2404",
}

CUDA_KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"

#: The pending step that rebuilds the initramfs after the nouveau blacklist changed.
UPDATE_INITRAMFS = "update-initramfs"

PERSISTENCED = "nvidia-persistenced.service"


@dataclass(frozen=True)
class DriverPackages:
    """What the driver deploy installs: user space, kernel modules, and the pin package."""

    userspace: tuple[str, ...]
    modules: tuple[str, ...]
    pin: tuple[str, ...] = ()


def driver_packages(config: HostConfig) -> DriverPackages:
    """The package names for the host's driver source, branch, flavour and module choice."""
    drv = config.driver
    branch, open_ = drv.branch, drv.flavour == "open"
    if drv.source == "debian":
        userspace = ("nvidia-smi", "libnvidia-ml1", "nvidia-persistenced")
        module = "nvidia-open-kernel-dkms" if open_ else "nvidia-kernel-dkms"
        return DriverPackages(userspace, (module, "nvidia-driver", "linux-headers-amd64"))
    if drv.source == "ubuntu":
        suffix = "-open" if open_ else ""
        userspace = (
            f"nvidia-utils-{branch}-server",
            f"libnvidia-compute-{branch}-server",
            "nvidia-persistenced",
        )
        return DriverPackages(userspace, (f"nvidia-driver-{branch}-server{suffix}",))
    # cuda-repo
    if config.distro.id == "debian":
        userspace = ("nvidia-smi", "libnvidia-ml1", "nvidia-persistenced")
    else:
        userspace = (f"nvidia-utils-{branch}", f"libnvidia-compute-{branch}", "nvidia-persistenced")
    modules = ("nvidia-open",) if open_ else ("cuda-drivers",)
    return DriverPackages(userspace, modules, pin=(f"nvidia-driver-pinning-{branch}",))


def cuda_repo_uri(config: HostConfig, base: str, arch: str) -> str:
    """NVIDIA's CUDA repo URI for the host's distro (``…/repos/debian12/x86_64/``)."""
    folder = CUDA_REPO_DISTRO.get(config.distro.codename)
    if folder is None:
        raise ValueError(
            f"no CUDA repository known for {config.distro.id} {config.distro.codename}; "
            f"known: {', '.join(sorted(CUDA_REPO_DISTRO))}"
        )
    return f"{base}/{folder}/{arch}/"


@deploy("NVIDIA driver: pin, packages, nouveau off, persistence on", data_defaults=DEFAULTS)
def nvidia_driver() -> None:
    """Install the NVIDIA driver the inventory asks for, pinned to its branch.

    Order matters: repo and pin before any driver package; nouveau blacklisted with the
    initramfs rebuilt only when the blacklist changed (or a killed run left the rebuild
    pending: ``/var/lib/rigforge/pending/update-initramfs``); a reboot requested (not forced) when a
    kernel-module package was missing at plan time.
    """
    config = cfg()
    drv = config.driver
    pkgs = driver_packages(config)

    unattended = specs.unattended_blacklist(UNATTENDED_BLACKLIST)
    pin = specs.driver_pin(PIN_PATTERNS, drv.branch, drv.source)
    blacklist = specs.nouveau_blacklist()
    dropin = specs.persistenced_dropin("nvpd" if drv.source == "debian" else "nvidia-persistenced")
    # One round trip for every file, unit and tool this concern decides on.
    snap = snapshot(
        paths=[f.dest for f in (unattended, pin, blacklist, dropin)],
        units=[PERSISTENCED],
        commands=["update-initramfs"],
    )
    put_files([unattended], snap)

    if drv.source == "cuda-repo":
        uri = cuda_repo_uri(config, host.data.rigforge_cuda_repo_base, host.data.rigforge_cuda_arch)
        if missing_packages(["cuda-keyring"]):
            apt.deb(
                name="Install cuda-keyring (NVIDIA's repository key)",
                src=uri + host.data.rigforge_cuda_keyring_deb,
            )
        folder = CUDA_REPO_DISTRO[config.distro.codename]
        # cuda-keyring also drops a one-line .list; the deb822 file replaces it.
        files.file(
            name="Remove cuda-keyring's one-line .list (replaced by deb822 .sources)",
            path=f"/etc/apt/sources.list.d/cuda-{folder}-{host.data.rigforge_cuda_arch}.list",
            present=False,
        )
        dest = f"/etc/apt/sources.list.d/cuda-{folder}-{host.data.rigforge_cuda_arch}.sources"
        put_spec(specs.cuda_sources(dest, uri, CUDA_KEYRING))
        ensure_packages(list(pkgs.pin), name=f"Pin the driver to branch {drv.branch}")
    else:
        put_files([pin], snap)

    initramfs = "update-initramfs" in snap.commands
    wanted = put_files([blacklist], snap, UPDATE_INITRAMFS if initramfs else None)
    if initramfs:
        follow_up(
            UPDATE_INITRAMFS,
            ["update-initramfs -u"],
            name="Rebuild the initramfs (nouveau blacklist changed)",
            snap=snap,
            wanted=wanted,
        )
    else:
        host.noop("no update-initramfs on this host: initramfs left alone")

    ensure_packages(list(pkgs.userspace), name="NVIDIA user space (nvidia-smi, NVML, persistenced)")
    modules_name = f"NVIDIA kernel modules ({drv.flavour})"
    if drv.install_kernel_modules and ensure_packages(list(pkgs.modules), name=modules_name):
        request_reboot(f"NVIDIA kernel module packages installed: {', '.join(pkgs.modules)}")

    step = restart_step(PERSISTENCED) if snap.systemd_booted else None
    wanted = put_files([dropin], snap, step)
    service_after_change(PERSISTENCED, snap=snap, wanted=wanted, name="nvidia-persistenced")
