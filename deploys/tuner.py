"""rigforge on the host, in its own venv, so the boot unit and ``rigforge sweep`` run there.

A wheel of this checkout is built on the control machine, uploaded and ``pip install``-ed into
``tuner.venv`` only when the source hash differs from the one recorded on the host
(``<venv>/.rigforge-source-sha256``, written last, so an interrupted install is redone). The
wheel brings the core dependencies only: the ``deploy`` and ``plots`` extras (pyinfra,
matplotlib) stay on the control machine.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, FileContents
from pyinfra.operations import files, server

from deploys.util import REPO_ROOT, cfg, ensure_packages, put_text

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


def pip_install_commands(venv: str, wheel: str, pip_args: str = "") -> list[str]:
    """The shell lines that install ``wheel`` (a path on the host) into ``venv``, quoted.

    ``pip_args``: extra ``pip install`` arguments as one string (``rigforge_pip_args`` host
    data, e.g. ``"--index-url https://mirror.lan/simple"``); split like a shell would and each
    word quoted, so a path or value with spaces or ``;`` stays one argument, never a command.
    """
    extra = "".join(f" {shlex.quote(arg)}" for arg in shlex.split(pip_args))
    pip = f"{shlex.quote(venv + '/bin/pip')} install --quiet --disable-pip-version-check{extra}"
    return [
        # same version, new source: replace rigforge itself, then add what it needs (the core
        # dependencies only: no pyinfra, no matplotlib on the host)
        f"{pip} --force-reinstall --no-deps {shlex.quote(wheel)}",
        f"{pip} {shlex.quote(wheel)}",
    ]


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
    have = host.get_fact(FileContents, path=marker)
    if have and have[0].strip() == want:
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
    if not host.get_fact(File, path=f"{venv}/bin/python"):
        server.shell(
            name=f"Create the venv {venv}", commands=[f"python3 -m venv {shlex.quote(venv)}"]
        )
    server.shell(
        name="pip install rigforge (source changed)",
        commands=pip_install_commands(venv, f"{dist}/{wheel.name}", host.data.rigforge_pip_args),
    )
    put_text(marker, want + "\n", name="Record the installed rigforge source hash")
