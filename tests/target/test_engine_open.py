"""The engine on an opened address: bound where the inventory opens it, the API key enforced.

A test server must not listen on this machine's real interfaces, so the opened address lives
in network namespaces this module creates and deletes: ``<target>-srv`` holds ``10.230.0.1/30``
on one end of a veth pair, ``<target>-cli`` the other end (``10.230.0.2/30``); neither end is
ever in this machine's own namespace. The target (host networking for SSH and apt, as every
target) gets the server namespace's file bound read-only at ``/run/rigforge-netns/srv``, and a
drop-in the test writes before the deploy (``NetworkNamespacePath=``) starts the rendered,
hardened serving unit inside it; everything else about the unit is what the deploy renders
for ``serving: {bind: 10.230.0.1, open: true, api_key_file: …}``. Requests come from the
client namespace: 401 without the key, 200 with it; the key is in neither ``ps`` nor the
journal of the target.

Run with ``bash tests/target/run.sh``, or alone::

    RIGFORGE_ENGINE_OPEN_TARGET=open2 RIGFORGE_ENGINE_OPEN_PORT=2307 \\
        .venv/bin/pytest -m target tests/target/test_engine_open.py
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.target import harness, util
from tests.target.util import ssh

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_ENGINE_OPEN_TARGET", "engine-open")
PORT = util.env_port("RIGFORGE_ENGINE_OPEN_PORT", 2275)
#: The engine's port inside the server namespace (nothing else listens there).
SERVE_PORT = 8001
MODEL = "tiny-open"
UNIT = f"rigforge-serve-{MODEL}.service"
GPU = "GPU-c1000000-0000-4000-8000-000000000002"
SRV_NS, CLI_NS = f"{NAME}-srv", f"{NAME}-cli"
SRV_IP, CLI_IP = "10.230.0.1", "10.230.0.2"
NETNS_IN_TARGET = "/run/rigforge-netns/srv"
URL = f"http://{SRV_IP}:{SERVE_PORT}"
#: ``/proc/net/tcp`` spells 10.230.0.1 little-endian.
SRV_IP_HEX = "0100E60A"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _delete_namespaces() -> None:
    for ns in (SRV_NS, CLI_NS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[None]:
    """The veth pair between two namespaces of our own; deleted (with the pair) afterwards."""
    _delete_namespaces()  # left by a run that was killed
    _ip("netns", "add", SRV_NS)
    _ip("netns", "add", CLI_NS)
    _ip("link", "add", "rfsrv0", "netns", SRV_NS, "type", "veth", "peer", "name", "rfcli0",
        "netns", CLI_NS)  # fmt: skip
    for ns, dev, address in ((SRV_NS, "rfsrv0", SRV_IP), (CLI_NS, "rfcli0", CLI_IP)):
        _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    try:
        yield
    finally:
        _delete_namespaces()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert SRV_NS not in left, left
        assert CLI_NS not in left, left
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "rfsrv0" not in links, links
        assert "rfcli0" not in links, links


@pytest.fixture(scope="module")
def api_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("engine-open-key")
    key = secrets.token_hex(16)
    path = folder / "api-key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key, path


@pytest.fixture(scope="module")
def target(namespaces: None) -> Iterator[harness.Target]:
    def prepare(tgt: harness.Target) -> None:
        dropin = tgt.root / f"etc/systemd/system/{UNIT}.d/50-ci-netns.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(
            "# tests/target/test_engine_open.py: the opened address lives in a netns of the test\n"
            f"[Service]\nNetworkNamespacePath={NETNS_IN_TARGET}\n"
        )

    binds = [(f"/run/netns/{SRV_NS}", NETNS_IN_TARGET)]
    with util.engine_target(
        NAME, PORT, "open: start fresh target", prepare=prepare, binds=binds
    ) as tgt:
        yield tgt


def _plan(path: Path) -> Path:
    return util.write_plan(path, [util.llama_placement(MODEL, GPU, 1, SERVE_PORT)])


@pytest.fixture(scope="module")
def deployed(
    target: harness.Target, api_key: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The engine deployed on the opened address; returns the inventory module."""
    llama = util.llama_server_or_fail()
    folder = tmp_path_factory.mktemp("engine-open")
    serving = {
        "plan": str(_plan(folder / "plan.yaml")),
        "compute": "cpu",
        "llama_server": str(llama),
        "bind": SRV_IP,
        "open": True,
        "api_key_file": str(api_key[1]),
    }
    inventory = util.inventory_for(
        target, folder, overrides={"serving": serving}, stem="engine-open"
    )
    result = util.deploy(inventory, "open: deploy (engine on 10.230.0.1 + key)")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    _curl("--retry", "30", "--retry-delay", "1", "--retry-all-errors", "-f", f"{URL}/health")
    return inventory


def _curl(*args: str, key: str | None = None) -> str:
    """curl from the client namespace; the key goes in through a header file, not argv."""
    header: list[str] = []
    if key is not None:
        header = ["-H", "@-"]
    proc = subprocess.run(
        ["ip", "netns", "exec", CLI_NS, "curl", "-s", "-m", "30", *header, *args],
        input=f"Authorization: Bearer {key}\n" if key is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def test_it_listens_on_the_opened_address_only(deployed: Path) -> None:
    out = subprocess.run(
        ["ip", "netns", "exec", SRV_NS, "cat", "/proc/net/tcp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listening = {
        line.split()[1]
        for line in out.splitlines()[1:]
        if line.split()[3] == "0A" and int(line.split()[1].rsplit(":", 1)[1], 16) == SERVE_PORT
    }
    assert listening == {f"{SRV_IP_HEX}:{SERVE_PORT:04X}"}, out


def test_without_the_key_it_answers_401(deployed: Path) -> None:
    code = _curl("-o", "/dev/null", "-w", "%{http_code}", f"{URL}/v1/models")
    assert code == "401"
    body = json.dumps({"prompt": "a", "max_tokens": 3})
    code = _curl("-o", "/dev/null", "-w", "%{http_code}", "-d", body, f"{URL}/v1/completions")
    assert code == "401"


def test_with_the_key_it_serves(deployed: Path, api_key: tuple[str, Path]) -> None:
    body = json.dumps({"prompt": "a", "max_tokens": 3, "ignore_eos": True})
    out = _curl("-H", "Content-Type: application/json", "-d", body, f"{URL}/v1/completions",
                key=api_key[0])  # fmt: skip
    assert json.loads(out)["usage"]["completion_tokens"] == 3


def test_the_key_is_in_neither_ps_nor_the_journal(
    deployed: Path, target: harness.Target, api_key: tuple[str, Path]
) -> None:
    key = api_key[0]
    assert util.unit_state(target, UNIT)["ActiveState"] == "active"
    assert key not in ssh(target, "ps -eo args")
    assert key not in ssh(target, "journalctl -b --no-pager -o cat")


def test_verify_suite_runs_every_serving_check(deployed: Path, target: harness.Target) -> None:
    """With the service opened, the API-key checks of the testinfra suite run too: no serving
    check is skipped (on the loopback engine target the key checks skip: nothing opened).

    One check is left out, by name: its socket test reads the target's own network namespace
    (``ss``), where on a real box the engine listens; here the engine listens in the test's
    namespace, which :func:`test_it_listens_on_the_opened_address_only` reads instead.
    """
    proc = util.verify(
        "open: testinfra verify",
        target,
        deployed.with_suffix(".yaml"),
        extra=("-k", "not test_running_services_listen_on_loopback_only"),
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "1 deselected" in proc.stdout, proc.stdout[-3000:]
    skips = [line for line in proc.stdout.splitlines() if "SKIP" in line]
    serving = [line for line in skips if "test_serving" in line or "test_secrets" in line]
    assert serving == [], skips


def test_closing_the_service_again_removes_the_key(
    deployed: Path, target: harness.Target, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Back to loopback (``serving.open`` false): the next deploy deletes the API-key file,
    since nothing checks a key any more, and the unit no longer reads it. Runs last: it
    changes the module's target."""
    folder = tmp_path_factory.mktemp("engine-closed")
    serving = {
        "plan": str(_plan(folder / "plan.yaml")),
        "compute": "cpu",
        "llama_server": str(util.llama_server_or_fail()),
        "bind": "127.0.0.1",
    }
    inventory = util.inventory_for(
        target, folder, overrides={"serving": serving}, stem="engine-closed"
    )
    result = util.deploy(inventory, "open: deploy closed again (key removed)")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    key_file = "/etc/rigforge/secrets/api-key.env"
    assert ssh(target, f"test -e {key_file} && echo present || echo absent").strip() == "absent"
    unit = ssh(target, f"cat /etc/systemd/system/rigforge-serve-{MODEL}.service")
    assert "EnvironmentFile=" not in unit
