"""A real inference engine under the rendered unit: llama.cpp on a systemd-booted target.

``llama-server`` is built from PyPI's llama.cpp sources (:mod:`tests.target.engine`, cached)
and installed by the deploy (``serving.llama_server``); the plan places one llama.cpp model on
the CI inventory's second GPU, served on CPU (``serving.compute: cpu``: the GPUs are the
stand-ins of :mod:`tests.target.gpu_standin`) from a tiny random-weight GGUF written here with
the ``gguf`` package. Everything between the inventory and the tokens is real: the rendered,
hardened ``rigforge-serve-*`` unit, systemd starting it as the service user, the engine, the
OpenAI-compatible HTTP API.

Run with ``bash tests/target/run.sh``, or alone beside other targets::

    RIGFORGE_ENGINE_TARGET=eng2 RIGFORGE_ENGINE_PORT=2290 RIGFORGE_ENGINE_SERVE_PORT=18091 \\
        .venv/bin/pytest -m target tests/target/test_engine.py
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.target import gpu_standin, harness, util
from tests.target.util import ssh

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_ENGINE_TARGET", "engine")
PORT = util.env_port("RIGFORGE_ENGINE_PORT", 2270)
#: The serving port: the target shares this machine's network, so it must be free here.
SERVE_PORT = util.env_port("RIGFORGE_ENGINE_SERVE_PORT", 18001)
MODEL = "tiny-llama"
UNIT = f"rigforge-serve-{MODEL}.service"
#: The CI inventory's second GPU (inventory/examples/ci.yaml), where the plan places it.
GPU = "GPU-c1000000-0000-4000-8000-000000000002"
BASE_URL = f"http://127.0.0.1:{SERVE_PORT}"
#: ``systemd-analyze security`` prints "Overall exposure level for UNIT: 2.1 OK".
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


def _plan(path: Path) -> Path:
    """One llama.cpp placement on the CI inventory's second GPU, on :data:`SERVE_PORT`."""
    return util.write_plan(path, [util.llama_placement(MODEL, GPU, 1, SERVE_PORT)])


@pytest.fixture(scope="module")
def llama_server() -> Path:
    return util.llama_server_or_fail()


@pytest.fixture(scope="module")
def target(llama_server: Path) -> Iterator[harness.Target]:
    """A fresh CI target with the tiny model in the engine's cache folder."""
    with util.engine_target(NAME, PORT, "engine: start fresh target") as tgt:
        yield tgt


@pytest.fixture(scope="module")
def inventory(
    target: harness.Target, llama_server: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The CI inventory with the one-model plan, served on CPU by the built llama-server."""
    folder = tmp_path_factory.mktemp("engine")
    serving = {"plan": str(_plan(folder / "plan.yaml")), "compute": "cpu"}
    serving["llama_server"] = str(llama_server)
    return util.inventory_for(target, folder, overrides={"serving": serving}, stem="engine")


@pytest.fixture(scope="module")
def deployed(target: harness.Target, inventory: Path) -> util.DeployResult:
    result = util.deploy(inventory, "engine: deploy (llama-server + unit)")
    assert result.rc == 0, result.stderr_tail
    util.wait_healthy(BASE_URL)
    return result


def test_the_deploy_installed_and_started_the_engine(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    assert any("llama-server" in name for name in deployed.changed), deployed.changed
    state = util.unit_state(target, UNIT)
    assert (state["UnitFileState"], state["ActiveState"], state["SubState"]) == (
        "enabled",
        "active",
        "running",
    ), state
    user = ssh(target, f"stat -c %U /proc/{state['MainPID']}").strip()
    assert user == "rigforge", f"the engine runs as {user}, not the service user"


def test_it_listens_on_loopback_only(deployed: util.DeployResult, target: harness.Target) -> None:
    # /proc/net/tcp spells 127.0.0.1 as 0100007F (little-endian); 0.0.0.0 as 00000000.
    assert util.listening(target, SERVE_PORT) == {"0100007F"}


def test_completions_count_the_tokens_asked_for(deployed: util.DeployResult) -> None:
    """``ignore_eos``: random weights may pick the end token early; the count must be exact."""
    body = {"model": MODEL, "prompt": "a b c", "max_tokens": 7, "temperature": 0}
    reply = httpx.post(f"{BASE_URL}/v1/completions", json={**body, "ignore_eos": True}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 7


def test_chat_completions_count_the_tokens_asked_for(deployed: util.DeployResult) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 5,
        "ignore_eos": True,
        "temperature": 0,
    }
    reply = httpx.post(f"{BASE_URL}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["usage"]["completion_tokens"] == 5
    assert data["choices"][0]["message"]["role"] == "assistant"


def test_online_exposure_is_at_most_3(deployed: util.DeployResult, target: harness.Target) -> None:
    """``systemd-analyze security`` of the running unit, as systemd on the host scores it."""
    out = ssh(target, f"systemd-analyze security --no-pager {UNIT} 2>&1 || true")
    match = EXPOSURE.search(out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= 3.0, out[-3000:]


def test_it_restarts_after_kill_9(deployed: util.DeployResult, target: harness.Target) -> None:
    before = util.unit_state(target, UNIT)
    ssh(target, f"kill -9 {before['MainPID']}")
    deadline = time.monotonic() + 60  # RestartSec=10
    while time.monotonic() < deadline:
        now = util.unit_state(target, UNIT)
        if now["MainPID"] not in ("0", before["MainPID"]) and now["SubState"] == "running":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"not restarted: {util.unit_state(target, UNIT)}")
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1, now
    util.wait_healthy(BASE_URL)
    reply = httpx.post(
        f"{BASE_URL}/v1/completions",
        json={"model": MODEL, "prompt": "a", "max_tokens": 3, "ignore_eos": True},
        timeout=60,
    )
    assert reply.json()["usage"]["completion_tokens"] == 3


def test_a_failing_gpu_settings_unit_keeps_serving_down(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    """The caps cannot be set (the GPU is gone from nvidia-smi): the oneshot fails, and the
    serving unit, which ``Requires=`` it, is not started; both come back with the GPU."""
    state = target.root / gpu_standin.STATE.lstrip("/")
    gpus = state.read_text()
    state.write_text(gpus.replace(GPU, "GPU-c1000000-0000-4000-8000-0000000000ff"))
    try:
        ssh(target, f"systemctl stop {UNIT}")
        failed = ssh(target, "systemctl restart rigforge-gpu-settings.service 2>&1; echo rc=$?")
        assert "rc=0" not in failed, failed
        settings = util.unit_state(target, "rigforge-gpu-settings.service")
        assert (settings["ActiveState"], settings["ExecMainStatus"]) == ("failed", "1"), settings
        out = ssh(target, f"systemctl start {UNIT} 2>&1; echo rc=$?")
        assert "rc=0" not in out, out
        assert util.unit_state(target, UNIT)["ActiveState"] != "active"
        log = ssh(target, f"journalctl -b -u {UNIT} -o cat --no-pager | tail -n 5")
        assert "Dependency failed" in log, log
    finally:
        state.write_text(gpus)
    ssh(target, "systemctl restart rigforge-gpu-settings.service")
    ssh(target, f"systemctl start {UNIT}")
    assert util.unit_state(target, UNIT)["ActiveState"] == "active"
    util.wait_healthy(BASE_URL)


def test_second_deploy_changes_nothing_and_restarts_nothing(
    deployed: util.DeployResult, target: harness.Target, inventory: Path
) -> None:
    before, reloads = util.starts(target, (UNIT,)), util.daemon_reloads(target)
    again = util.deploy(inventory, "engine: deploy #2 (no-op)")
    assert again.rc == 0, again.stderr_tail
    assert again.totals["success"] == 0, again.changed
    assert util.starts(target, (UNIT,)) == before
    assert util.daemon_reloads(target) == reloads


def test_verify_suite_runs_every_serving_check(
    deployed: util.DeployResult, target: harness.Target, inventory: Path, tmp_path: Path
) -> None:
    """The testinfra suite against the engine target passes, and none of its serving checks
    skipped (JUnit XML): the running-service checks ran against the running engine, and the
    API-key check asserted the loopback side (no key read, nothing on a wildcard address)."""
    junit = tmp_path / "verify.xml"
    proc = util.verify(
        "engine: testinfra verify", target, inventory.with_suffix(".yaml"), junit=junit
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    util.assert_no_serving_check_skipped(junit)
