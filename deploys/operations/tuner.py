"""rigforge installed into its venv on the host, as an operation that diffs the recorded hash."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Generator

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from deploys.facts.host import HostSnapshot


def marker_sha1(source_sha256: str) -> str:
    """SHA-1 of the hash record ``<venv>/.rigforge-source-sha256`` holding ``source_sha256``."""
    return hashlib.sha1(f"{source_sha256}\n".encode()).hexdigest()


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


@operation()
def venv_installed(
    venv: str, wheel: str, source_sha256: str, pip_args: str = ""
) -> Generator[str, None, None]:
    """Install ``wheel`` into ``venv`` unless the venv records ``source_sha256`` already.

    + venv: the tuner's venv on the host (created with ``python3 -m venv`` when missing)
    + wheel: the uploaded wheel's path on the host
    + source_sha256: the checkout's source hash (64 hex digits), written to
      ``<venv>/.rigforge-source-sha256`` LAST, so an interrupted install is redone
    + pip_args: extra ``pip install`` arguments (see :func:`pip_install_commands`)

    Example::

        tuner.venv_installed(venv="/opt/rigforge/venv", wheel="/opt/rigforge/dist/r.whl",
                             source_sha256="9c1e…")
    """
    if len(source_sha256) != 64 or any(c not in "0123456789abcdef" for c in source_sha256):
        raise OperationValueError(f"source hash {source_sha256!r} is not 64 hex digits")
    marker = f"{venv}/.rigforge-source-sha256"
    python = f"{venv}/bin/python"
    snap = host.get_fact(HostSnapshot, paths=[marker, python])
    if not snap.file_differs(marker, marker_sha1(source_sha256)):
        host.noop(f"rigforge {source_sha256[:12]} already installed in {venv}")
        return
    if snap.files.get(python) is None:
        yield f"python3 -m venv {shlex.quote(venv)}"
    yield from pip_install_commands(venv, wheel, pip_args)
    yield f"printf '%s\\n' {source_sha256} > {shlex.quote(marker)}"
