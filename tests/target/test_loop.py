"""The remote loop over real SSH: deploy → sweep on the host (detached, followed through its
log) → profile fetched → re-deploy applies it → the GPU-settings unit carries the profile's
caps, and the testinfra suite (``tests/verify``) passes against the host with that profile;
then a stale profile is refused.

Host ws-a of ``inventory/examples/ci-two.yaml`` (a private copy, see
:func:`tests.target.util.inventory_for`) on 127.0.0.1:2222, with the tuner installed and the CI
sim rig swept in place of GPUs. Run with ``bash tests/target/run.sh``, or beside another run on
a target of its own::

    RIGFORGE_WS_A_TARGET=loop2 RIGFORGE_WS_A_PORT=2272 \\
        .venv/bin/pytest -m target tests/target/test_loop.py
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.target import gpu_standin, harness, util
from tests.target.util import caps_in_unit, ssh
from tuning.core.profile import load_profile

pytestmark = pytest.mark.target

HOST = "ws-a"
NAME, PORT = util.WS_TARGETS[HOST]
UNIT = "/etc/systemd/system/rigforge-gpu-settings.service"
TUNE_LOG = "/var/log/rigforge/tune.log"
#: The sweep's last summary line ("8 probes in 0.6 min; heat-soak 10 min over 1 round(s), …").
SUMMARY = re.compile(r"\d+ probes in [\d.]+ min; heat-soak")
#: The stale case: the host's second card (…002) was swapped for …0bb, as the GPU stand-ins'
#: ``nvidia-smi`` then reports it (tests/target/gpu_standin.py).
SWAPPED = "GPU-c1000000-0000-4000-8000-0000000000bb"


@pytest.fixture(scope="module")
def target() -> Iterator[harness.Target]:
    """A fresh ws-a target (skips with the reason when the tier cannot run)."""
    gpus = util.standin_gpus(util.CI_TWO_YAML, HOST)
    with util.fresh_target(NAME, PORT, "loop: start fresh ws-a", gpus=gpus) as tgt:
        yield tgt


@pytest.fixture(scope="module")
def inventory(target: harness.Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ws-a with its plan but no profile yet: the sweep on the host makes it."""
    return util.inventory_for(
        {HOST: target},
        tmp_path_factory.mktemp("loop"),
        source=util.CI_TWO_YAML,
        stem="ci-two",
        host_data={HOST: ["plan.yaml"]},
    )


def _profile_path(inventory: Path) -> Path:
    return inventory.parent / "host_data" / HOST / "profile.yaml"


def test_deploy_installs_the_tuner(target: harness.Target, inventory: Path) -> None:
    run = util.deploy(inventory, "loop: deploy #1 (+ tuner)", "--limit", HOST)
    assert run.rc == 0, run.stderr_tail
    assert run.totals["error"] == 0, run.errors
    assert (target.root / "opt/rigforge/venv/bin/rigforge").is_file()
    # No profile yet and no hand caps: no GPU-settings unit.
    assert not (target.root / UNIT.lstrip("/")).exists()


def test_remote_sweep_fetches_the_profile(target: harness.Target, inventory: Path) -> None:
    run = util.deploy(
        inventory, "loop: remote sweep + fetch", "--limit", HOST, script="deploys/tune.py"
    )
    assert run.rc == 0, run.stderr_tail
    assert run.failed_hosts == []
    local = _profile_path(inventory)
    profile = load_profile(local)
    assert {g.uuid for g in profile.gpus} == {
        "GPU-c1000000-0000-4000-8000-000000000001",
        "GPU-c1000000-0000-4000-8000-000000000002",
    }
    assert profile.rig.spec == "/etc/rigforge/tune-rig.yaml", "it was swept on the host"
    assert ssh(target, "cat /etc/rigforge/profile.yaml") == local.read_text()
    # The sweep ran detached, its output in the log; the deploy followed it to the end.
    log = ssh(target, f"cat {TUNE_LOG}")
    assert SUMMARY.search(log), f"no final summary line in {TUNE_LOG}:\n{log}"
    assert "┃ GPU" in log, f"no results table in {TUNE_LOG}:\n{log}"
    assert ssh(target, "cat /var/log/rigforge/tune.rc").strip() == "0"
    # ... and its lines reached pyinfra's own output, prefixed with the host, at default -v.
    streamed = [line for line in run.stderr.splitlines() if line.startswith(f"[{HOST}] ")]
    assert any(SUMMARY.search(line) for line in streamed), run.stderr_tail


def test_redeploy_applies_the_fetched_profile(target: harness.Target, inventory: Path) -> None:
    run = util.deploy(inventory, "loop: re-deploy (applies profile)", "--limit", HOST)
    assert run.rc == 0, run.stderr_tail
    assert run.totals["error"] == 0, run.errors
    assert any("rigforge-gpu-settings.service" in name for name in run.changed), run.changed
    wanted = {
        g["uuid"]: float(g["cap_w"])
        for g in yaml.safe_load(_profile_path(inventory).read_text())["gpus"]
    }
    assert caps_in_unit(ssh(target, f"cat {UNIT}")) == wanted


def test_testinfra_sees_the_profile_caps_in_the_unit(
    target: harness.Target, inventory: Path
) -> None:
    """The loop's last step: the verify suite passes against ws-a with the fetched profile.

    Its GPU-settings check compares the unit's ``RIGFORGE_CAPS_W`` on the host with the caps of
    the profile the inventory now picks up (``host_data/ws-a/profile.yaml``).
    """
    # gpu=False: ws-a's caps go to its simulated rig (tuner.sim_rig), not to the stand-ins.
    proc = util.verify(
        "loop: testinfra verify", target, inventory.with_suffix(".yaml"), HOST, gpu=False
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout
    # -rs lists every skip: the caps check must have run, not skipped for want of caps.
    assert "no caps in the inventory or profile" not in proc.stdout, proc.stdout[-3000:]


def test_stale_profile_is_refused_and_nothing_applied(
    target: harness.Target, inventory: Path
) -> None:
    unit_before = ssh(target, f"cat {UNIT}")
    state = target.root / gpu_standin.STATE.lstrip("/")
    gpus = state.read_text()
    state.write_text(gpus.replace("GPU-c1000000-0000-4000-8000-000000000002", SWAPPED))
    try:
        run = util.deploy(inventory, "loop: deploy with a swapped GPU", "--limit", HOST)
    finally:
        state.write_text(gpus)
    assert run.rc != 0
    # ws-a is the only host of this run, so pyinfra ends with "No hosts remaining!".
    assert run.failed_hosts == ["<all>"]
    assert f"[{HOST}] rigforge: {HOST}: profile profile.yaml was tuned on a different" in run.stderr
    assert "GPU-c1000000-0000-4000-8000-000000000002 missing" in run.stderr
    assert f"re-run rigforge sweep --host {HOST}" in run.stderr
    assert ssh(target, f"cat {UNIT}") == unit_before
