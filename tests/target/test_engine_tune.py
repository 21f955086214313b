"""The tuner against a real engine: ``rigforge sweep --workload openai:…`` on the target.

The rig is simulated (the CI inventory's two RTX 3090s, ``tuner.sim_rig``), the tokens are
real: two ``llama-server`` instances (:mod:`tests.target.engine`), one placed on each GPU by
the plan and started by the rendered units, serve the tiny GGUF on CPU, and the sweep keeps
requests in flight against each GPU's endpoint and counts ``usage.completion_tokens``. The
sweep runs where a user runs it: on the host, started by ``deploys/tune.py`` as the transient
unit ``rigforge-tune`` (``systemd-run``; the target boots systemd), followed through its log.
The simulated rig's clock follows wall time under such a load
(:meth:`tuning.backends.base.Clock.follow_wall_time`), so probes last real seconds.

Then one engine is killed mid-sweep (``systemctl kill -s KILL``): the sweep must stop with exit
status 2 and the simulated GPUs must hold the caps they held before it (the sim rig's persisted
state on the host, ``/var/lib/rigforge/state/sim-*.json``), with no journal left behind.

Run with ``bash tests/target/run.sh``, or alone beside other targets::

    RIGFORGE_ENGINE_TUNE_TARGET=tune2 RIGFORGE_ENGINE_TUNE_PORT=2305 \\
        RIGFORGE_ENGINE_TUNE_SERVE_PORT=18300 \\
        .venv/bin/pytest -m target tests/target/test_engine_tune.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.target import engine, harness, util
from tests.target.util import ssh
from tuning.core.profile import load_profile
from tuning.telemetry import MIN_WINDOW_S

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_ENGINE_TUNE_TARGET", "engine-tune")
PORT = util.env_port("RIGFORGE_ENGINE_TUNE_PORT", 2274)
#: The first engine's port; the second listens on the next one (both must be free here: the
#: target shares this machine's network).
SERVE_PORT = util.env_port("RIGFORGE_ENGINE_TUNE_SERVE_PORT", 18011)
HOST = "ci-target"
#: The CI inventory's GPUs (inventory/examples/ci.yaml), one engine on each.
GPUS = ("GPU-c1000000-0000-4000-8000-000000000001", "GPU-c1000000-0000-4000-8000-000000000002")
MODELS = ("tiny-a", "tiny-b")
PORTS = (SERVE_PORT, SERVE_PORT + 1)
TUNE_LOG = "/var/log/rigforge/tune.log"
TUNE_RC = "/var/log/rigforge/tune.rc"
STATE = "/var/lib/rigforge/state"
#: A short heat-soak: under a real load the simulated clock runs in wall time.
HEAT_SOAK_S = 10
#: The killed sweep's heat-soak: long enough for the kill to land inside it.
KILL_HEAT_SOAK_S = 60
#: The killed sweep probes a coarse grid, and the test waits this long (s) for its heat-soak.
KILL_SWEEP_ARGS = ("--strategy", "grid", "--step-w", "100")
KILL_WAIT_S = 420
WORKLOAD = "openai:" + ",".join(
    f"{gpu}=http://127.0.0.1:{port}" for gpu, port in zip(GPUS, PORTS, strict=True)
)
#: ``llama-server --metrics``: completion tokens the engine produced, and requests being served.
PREDICTED = re.compile(r"^llamacpp:tokens_predicted_total\s+(\S+)$", re.MULTILINE)
PROCESSING = re.compile(r"^llamacpp:requests_processing\s+(\S+)$", re.MULTILINE)


def _plan(path: Path) -> Path:
    """Two llama.cpp placements, one per GPU, each engine on its own core."""
    placements = [
        {
            **util.llama_placement(model, gpu, index, port, cpu_list=[index]),
            # One engine thread on its one core. llama.cpp's default is a thread per core of
            # the machine, and its threads spin-wait on each other: 2 on 1 core served 4 tok/s
            # here instead of ~3000 (the CPU plan's own threads key says this in plans it
            # writes; a hand plan says it here).
            "extra_args": ["--threads", "1"],
        }
        for index, (model, gpu, port) in enumerate(zip(MODELS, GPUS, PORTS, strict=True))
    ]
    return util.write_plan(path, placements)


@pytest.fixture(scope="module")
def llama_server() -> Path:
    return util.llama_server_or_fail()


@pytest.fixture(scope="module")
def target(llama_server: Path) -> Iterator[harness.Target]:
    with util.engine_target(NAME, PORT, "tune: start fresh target", host=HOST) as tgt:
        yield tgt


def _overrides(
    folder: Path, heat_soak_s: float, extra_sweep_args: tuple[str, ...] = ()
) -> dict[str, object]:
    """Two engines served on CPU, the tuner installed, the CI sim rig swept under them."""
    return {
        "serving": {
            "plan": str(_plan(folder / "plan.yaml")),
            "compute": "cpu",
            "llama_server": str(engine.cached_binary()),
        },
        "tuner": {
            "install": True,
            "sim_rig": "rigs/ci-2x3090.yaml",
            "sweep_args": [
                "--workload",
                WORKLOAD,
                "--heat-soak-s",
                f"{heat_soak_s:g}",
                *extra_sweep_args,
            ],
        },
    }


@pytest.fixture(scope="module")
def inventory(
    target: harness.Target, llama_server: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("engine-tune")
    overrides = _overrides(folder, HEAT_SOAK_S)
    return util.inventory_for(target, folder, overrides=overrides, stem="engine-tune")


def _metric(port: int, pattern: re.Pattern[str]) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    match = pattern.search(text)
    assert match, f"no {pattern.pattern} in :{port}/metrics:\n{text[:2000]}"
    return float(match.group(1))


def _sim_caps(target: harness.Target) -> dict[str, float]:
    """The caps the simulated GPUs hold: the sim rig's persisted state on the host."""
    out = ssh(target, f"cat {STATE}/sim-*.json 2>/dev/null || echo '{{}}'")
    return {k: float(v) for k, v in json.loads(out).get("power_limit_w", {}).items()}


@pytest.fixture(scope="module")
def deployed(target: harness.Target, inventory: Path) -> util.DeployResult:
    result = util.deploy(inventory, "tune: deploy (2 engines + tuner)")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    for port in PORTS:
        util.wait_healthy(f"http://127.0.0.1:{port}")
    return result


def test_every_unit_the_deploy_installed_is_active_or_exited_0(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    """Every rigforge unit the deploy wrote (and nvidia-persistenced, which it configures) is
    active — running, or a oneshot exited 0 — with both engines up."""
    written = ssh(target, "ls /etc/systemd/system/ | grep -E '^rigforge-.*[.]service$'").split()
    assert {f"rigforge-serve-{m}.service" for m in MODELS} <= set(written), written
    for unit in [*written, "nvidia-persistenced.service"]:
        state = util.unit_state(target, unit)
        assert (state["ActiveState"], state["ExecMainStatus"]) == ("active", "0"), (unit, state)


def test_a_sweep_against_the_real_engines_counts_their_tokens(
    deployed: util.DeployResult, target: harness.Target, inventory: Path
) -> None:
    """Every probe measured tokens the engines really produced.

    Expectation from outside the tuner: the engines' own counters. A probe's throughput is
    Δtokens/Δt over a window of at least ``MIN_WINDOW_S`` (5 s) of requests that completed,
    so Σ over probes of ``throughput × 5 s`` cannot exceed the completion tokens the engines
    report having produced (``llamacpp:tokens_predicted_total``) during the sweep.
    """
    before = {port: _metric(port, PREDICTED) for port in PORTS}
    run = util.deploy(
        inventory, "tune: sweep vs real engines", "--limit", HOST, script="deploys/tune.py"
    )
    assert run.rc == 0, run.stderr_tail
    assert ssh(target, f"cat {TUNE_RC}").strip() == "0", ssh(target, f"tail -n 30 {TUNE_LOG}")
    produced = sum(_metric(port, PREDICTED) - before[port] for port in PORTS)
    profile = load_profile(inventory.parent / "host_data" / HOST / "profile.yaml")
    assert profile.workload == WORKLOAD
    assert {g.uuid for g in profile.gpus} == set(GPUS)
    points = [p for g in profile.gpus for p in g.curve]
    assert points
    assert all(p.throughput_tps > 0 for p in points), points
    assert sum(p.throughput_tps for p in points) * MIN_WINDOW_S <= produced, (points, produced)
    # It ran as the transient unit deploys/tune.py starts where systemd runs (systemd-run).
    # (its output goes to the log; systemd's journal has the unit's start and clean end)
    journal = ssh(target, "journalctl -b -u rigforge-tune.service -o cat --no-pager")
    assert "Started rigforge-tune.service" in journal, journal[-3000:]
    assert "rigforge-tune.service: Deactivated successfully." in journal, journal[-3000:]
    # The sweep restored the caps it probed (the profile is applied by the next deploy).
    assert not ssh(target, f"ls {STATE}/journal-*.json 2>/dev/null || true").strip()


def test_the_engine_killed_mid_sweep_stops_it_with_exit_2_and_caps_restored(
    deployed: util.DeployResult, target: harness.Target, tmp_path: Path
) -> None:
    """Killed during the heat-soak, when the sweep holds both GPUs at its chosen caps (not
    the ones it found), with requests in flight on the engine: exit 2, the caps it found
    back, no journal left (the safety session restored and closed it)."""
    caps_before = _sim_caps(target)
    assert set(caps_before) == set(GPUS), caps_before
    # A longer heat-soak than the first sweep's: the kill must land inside it.
    inventory = util.inventory_for(
        target,
        tmp_path,
        # a coarse grid (350, 250, 150 W): the simulated cards draw under the real load, so
        # each probe takes real seconds; the kill only needs the sweep to reach its heat-soak
        overrides=_overrides(
            tmp_path, heat_soak_s=KILL_HEAT_SOAK_S, extra_sweep_args=KILL_SWEEP_ARGS
        ),
        stem="engine-kill",
    )
    unit = f"rigforge-serve-{MODELS[1]}.service"
    proc = subprocess.Popen(
        [util.PYINFRA, "-y", str(inventory), "deploys/tune.py", "--limit", HOST],
        cwd=util.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        in_flight = 0.0
        log = ""
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            log = ssh(target, f"cat {TUNE_LOG} 2>/dev/null || true")
            if "rigforge: heat-soak of the chosen caps" in log:
                in_flight = _metric(PORTS[1], PROCESSING)
                if in_flight > 0:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"no heat-soak with requests in flight within {KILL_WAIT_S} s:\n{log}"
            )
        caps_mid = _sim_caps(target)
        assert caps_mid != caps_before, "the sweep holds other caps now: the restore must show"
        # the main process only: systemd in the nspawn target can fail to signal a unit's
        # auxiliary processes ("Input/output error") and then returns 1 for the whole kill
        ssh(target, f"systemctl kill --kill-whom=main -s KILL {unit}")
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = ssh(target, f"cat {TUNE_LOG}")
    assert proc.returncode != 0, stderr[-3000:]
    assert ssh(target, f"cat {TUNE_RC}").strip() == "2", log
    assert f"rigforge: error: the openai: endpoint http://127.0.0.1:{PORTS[1]}" in log, log
    assert _sim_caps(target) == caps_before
    assert not ssh(target, f"ls {STATE}/journal-*.json 2>/dev/null || true").strip()
    # Restart=on-failure brings the engine back.
    util.wait_healthy(f"http://127.0.0.1:{PORTS[1]}")
