"""rigforge on the host, in its own venv, so the boot unit and ``rigforge sweep`` run there.

A wheel of this checkout is built on the control machine, uploaded and ``pip install``-ed into
``tuner.venv`` only when the source hash differs from the one recorded on the host
(``<venv>/.rigforge-source-sha256``, written last, so an interrupted install is redone). The
wheel brings the core dependencies only: the ``deploy`` and ``plots`` extras (pyinfra,
matplotlib) stay on the control machine.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from deploys.operations import tuner as tuner_ops
from deploys.operations.tuner import marker_sha1, pip_install_commands
from deploys.util import REPO_ROOT, cfg, ensure_packages, snapshot

__all__ = ["pip_install_commands", "source_sha256", "tuner"]

DEFAULTS = {
    "rigforge_tuner_packages": ["python3", "python3-venv"],
    "rigforge_tuner_dist_dir": "/opt/rigforge/dist",
    "rigforge_pip_args": "",
}

#: What goes into the wheel; a change to any of these files means a reinstall.
SOURCE_GLOBS = ("pyproject.toml", "tuning/**/*.py", "tuning/**/*.yaml", "inventory/**/*.py")


def source_sha256(root: Path = REPO_ROOT) -> str:
    """SHA-256 over the package sources (paths and contents, sorted) of this checkout."""
    digest = hashlib.sha256()
    paths = sorted({p for pattern in SOURCE_GLOBS for p in root.glob(pattern) if p.is_file()})
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def build_wheel() -> Path:
    """Build this checkout's wheel once per deploy run (``pip wheel --no-deps``).

    With build isolation: pyproject's ``[build-system]`` gets the setuptools it needs (its
    SPDX ``license`` string needs a newer one than a venv may carry).
    """
    out = Path(tempfile.mkdtemp(prefix="rigforge-wheel-"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(out),
            str(REPO_ROOT),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return next(out.glob("rigforge-*.whl"))


@deploy("rigforge tuner in its own venv", data_defaults=DEFAULTS)
def tuner() -> None:
    """Install rigforge into ``tuner.venv`` when the source changed; otherwise nothing."""
    config = cfg()
    if not config.tuner.install:
        host.noop("tuner: install is false")
        return
    venv = config.tuner.venv
    ensure_packages(list(host.data.rigforge_tuner_packages), name="python3 + venv for rigforge")
    marker = f"{venv}/.rigforge-source-sha256"
    want = source_sha256()
    snap = snapshot(paths=[marker])
    if not snap.file_differs(marker, marker_sha1(want)):
        host.noop(f"tuner: rigforge {want[:12]} already installed in {venv}")
        return
    wheel = build_wheel()
    dist = host.data.rigforge_tuner_dist_dir
    files.put(
        name=f"Upload {wheel.name}",
        src=str(wheel),
        dest=f"{dist}/{wheel.name}",
        create_remote_dir=True,
    )
    tuner_ops.venv_installed(
        name="pip install rigforge (source changed), record its source hash",
        venv=venv,
        wheel=f"{dist}/{wheel.name}",
        source_sha256=want,
        pip_args=host.data.rigforge_pip_args,
    )
