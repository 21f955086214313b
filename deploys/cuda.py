"""The CUDA toolkit only — never the ``cuda``/``cuda-drivers`` meta-packages, which pull a driver.

``cuda-toolkit-<major>-<minor>`` comes from NVIDIA's CUDA repository (set up by the driver
deploy for ``cuda-repo``; added here otherwise) and ``/etc/profile.d/rigforge-cuda.sh`` puts
``/usr/local/cuda-<version>/bin`` on PATH.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from deploys.nvidia_driver import CUDA_KEYRING, CUDA_REPO_DISTRO, DEFAULTS, cuda_repo_uri
from deploys.util import cfg, ensure_packages, missing_packages, put_spec
from tuning.render import files as specs

#: Packages the toolkit deploy must never install: each pulls a driver.
FORBIDDEN = frozenset({"cuda", "cuda-drivers", "nvidia-open", "nvidia-driver"})


def toolkit_packages(version: str) -> list[str]:
    """``["cuda-toolkit-12-8"]`` for ``"12.8"``: the toolkit without any driver package."""
    return ["cuda-toolkit-" + version.replace(".", "-")]


@deploy("CUDA toolkit (no driver meta-packages)", data_defaults=DEFAULTS)
def cuda() -> None:
    """Install the CUDA toolkit the inventory names, and its PATH for login shells."""
    config = cfg()
    if config.cuda is None:
        host.noop("cuda: no toolkit requested (cuda: null)")
        return
    version = config.cuda.version
    if config.driver.source != "cuda-repo":
        from pyinfra.operations import apt

        arch = host.data.rigforge_cuda_arch
        uri = cuda_repo_uri(config, host.data.rigforge_cuda_repo_base, arch)
        if missing_packages(["cuda-keyring"]):
            apt.deb(name="Install cuda-keyring", src=uri + host.data.rigforge_cuda_keyring_deb)
        folder = CUDA_REPO_DISTRO[config.distro.codename]
        dest = f"/etc/apt/sources.list.d/cuda-{folder}-{arch}.sources"
        put_spec(specs.cuda_sources(dest, uri, CUDA_KEYRING))
    packages = toolkit_packages(version)
    assert not FORBIDDEN.intersection(packages)
    ensure_packages(packages, name=f"CUDA {version} toolkit")
    put_spec(specs.cuda_profile(version))
