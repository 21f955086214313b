"""The testinfra verification suite: the host is what the inventory says.

Runs unchanged against the CI target and against a user's own box over SSH::

    .venv/bin/pytest tests/verify -m "not target" \
        --hosts='paramiko://admin@ws1.lan?ssh_identity_file=~/.ssh/id_ed25519' --sudo \
        --rigforge-inventory inventory/ws.yaml --rigforge-host ws1

(or the environment variables ``RIGFORGE_INVENTORY`` / ``RIGFORGE_HOST``). Every test here
carries the ``verify`` marker, which the default tier deselects: a check of a deployed host
needs a host (the target tier gives it one), and the default tier never inspects the machine
it runs on. Naming this folder (``pytest tests/verify``) or ``-m "not target"`` selects them;
without an inventory or ``--hosts`` they skip.

Several hosts at once: give ``--hosts`` a comma-separated list and leave out
``--rigforge-host``; each connection is matched to the inventory host with the same
``ssh.host`` (and ``ssh.port`` where the URL has one). Checks marked ``gpu`` read
``nvidia-smi`` on the host and skip where it cannot reach a GPU (the CI target); pass
``-m "not target"`` so the project's default ``-m`` does not deselect them.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from inventory.schema import HostConfig

#: The project's default marker filter (pyproject.toml ``addopts``) and what it becomes when
#: only this folder is asked for.
DEFAULT_MARKEXPR = "not target and not gpu and not verify"
FOLDER_MARKEXPR = "not target and not gpu"


def pytest_configure(config: pytest.Config) -> None:
    """``pytest tests/verify`` (nothing but this folder named) selects the suite.

    The default tier deselects ``verify``; a person who names this folder wants it, so the
    project's default filter drops ``not verify`` then (an ``-m`` of their own is kept).
    """
    here = Path(__file__).parent.resolve()
    paths = [(config.invocation_params.dir / a.split("::")[0]).resolve() for a in config.args]
    inside = bool(paths) and all(p == here or here in p.parents for p in paths)
    if inside and config.option.markexpr == DEFAULT_MARKEXPR:
        config.option.markexpr = FOLDER_MARKEXPR


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``verify`` (before ``-m`` deselects by marker)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.verify)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rigforge-inventory FILE`` and ``--rigforge-host NAME``."""
    group = parser.getgroup("rigforge verify")
    with contextlib.suppress(ValueError):  # already added when collected with another suite
        group.addoption("--rigforge-inventory", default=None, help="inventory YAML to verify")
        group.addoption("--rigforge-host", default=None, help="host name in that inventory")


@dataclass(frozen=True)
class Expected:
    """The host's name and validated config: what the suite expects to find."""

    name: str
    config: HostConfig


@pytest.fixture
def expected(request: pytest.FixtureRequest, host) -> Expected:
    """The inventory's view of the host under test; skips when no inventory was given."""
    path = _option(request, "--rigforge-inventory") or os.environ.get("RIGFORGE_INVENTORY")
    name = _option(request, "--rigforge-host") or os.environ.get("RIGFORGE_HOST")
    if not path:
        pytest.skip("no inventory given (--rigforge-inventory FILE or RIGFORGE_INVENTORY)")
    if not request.config.getoption("--hosts", default=None):
        pytest.skip("no --hosts given: the suite never inspects the machine it runs on")
    hosts = _load(path)
    if name is None and len(hosts) == 1:
        name = next(iter(hosts))
    if name is None:
        name = _match(hosts, getattr(host.backend, "host", None))
    if name not in hosts:
        pytest.fail(
            f"cannot tell which host of {path} {host.backend.get_pytest_id()} is "
            f"(hosts: {', '.join(hosts)}); pass --rigforge-host NAME"
        )
    return Expected(name=name, config=hosts[name])


@functools.cache
def _load(path: str) -> dict[str, HostConfig]:
    from inventory.validate import load_inventory

    return load_inventory(path, check_ssh_files=False).hosts


def _match(hosts: dict[str, HostConfig], spec: object) -> str | None:
    """The inventory host whose ``ssh.host`` (and port, when given) is the connection's."""
    address = getattr(spec, "name", None)
    port = getattr(spec, "port", None)
    found = [
        name
        for name, cfg in hosts.items()
        if cfg.ssh.host == address and (port is None or int(port) == cfg.ssh.port)
    ]
    return found[0] if len(found) == 1 else None


def _option(request: pytest.FixtureRequest, flag: str) -> str | None:
    try:
        return request.config.getoption(flag)
    except ValueError:
        return None
