"""The target tier: the CI inventory deployed over real SSH to a throwaway Debian target.

Deploy twice (the second run changes nothing), verify with the testinfra suite, then kill a
deploy midway on a fresh target, re-run it, and check it converges and the next run is a no-op.
Run with ``bash tests/target/run.sh`` (root; builds and stops the targets).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.target import harness

pytestmark = pytest.mark.target

REPO = harness.REPO_ROOT
INVENTORY = "inventory/ci.py"
INVENTORY_YAML = "inventory/examples/ci.yaml"
DEPLOY = "deploys/workstation.py"
PORT = 2222
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
#: The operation during which the kill-midway test pulls the plug (apt is running then).
KILL_DURING = "NVIDIA user space"


@dataclass(frozen=True)
class DeployResult:
    """One ``pyinfra --json`` run: exit code, totals, failed hosts, changed op names."""

    rc: int
    totals: dict[str, int]
    failed_hosts: list[str]
    changed: list[str]
    errors: list[str]
    wall_s: float
    stderr_tail: str


def _timing(stage: str, seconds: float) -> None:
    line = f"{stage:<34} {seconds:8.1f} s"
    print(f"\n[target] {line}")
    path = os.environ.get("RIGFORGE_TARGET_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _pyinfra_cmd() -> list[str]:
    return [PYINFRA, "-y", "--json", INVENTORY, DEPLOY]


def deploy(stage: str) -> DeployResult:
    """Run the one deploy command against the CI inventory and parse its ``--json`` results."""
    start = time.monotonic()
    proc = subprocess.run(_pyinfra_cmd(), cwd=REPO, capture_output=True, text=True, check=False)
    wall_s = time.monotonic() - start
    _timing(stage, wall_s)
    try:
        results = json.loads(proc.stdout)["results"]
    except (json.JSONDecodeError, KeyError, TypeError):
        pytest.fail(f"pyinfra gave no JSON results (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    ops = results["operations"]
    return DeployResult(
        rc=proc.returncode,
        totals=results["totals"],
        failed_hosts=results["failed_hosts"],
        changed=[o["name"] for o in ops if o["success"]],
        errors=[o["name"] for o in ops if o["error"]],
        wall_s=wall_s,
        stderr_tail=proc.stderr[-4000:],
    )


def verify(stage: str, target: harness.Target) -> subprocess.CompletedProcess[str]:
    """Run the testinfra suite against the target; returns the finished pytest process."""
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/verify",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::UserWarning",
            "-m",
            "not target",
            f"--hosts={target.hosts_url}",
            f"--rigforge-inventory={INVENTORY_YAML}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    _timing(stage, time.monotonic() - start)
    return proc


@pytest.fixture(scope="module")
def target() -> Iterator[harness.Target]:
    """A fresh CI target on 127.0.0.1:2222 (skips with the reason when the tier cannot run)."""
    reason = harness.unavailable_reason()
    if reason:
        pytest.skip(reason)
    start = time.monotonic()
    try:
        tgt = harness.start("ci-target", PORT)
    except harness.HarnessUnavailable as error:
        pytest.skip(str(error))
    _timing("start fresh target", time.monotonic() - start)
    yield tgt
    harness.stop("ci-target")


def test_first_deploy_converges(target: harness.Target) -> None:
    result = deploy("deploy #1 (fresh target)")
    assert result.rc == 0, result.stderr_tail
    assert result.failed_hosts == []
    assert result.totals["error"] == 0, result.errors
    assert result.totals["success"] > 0, "a fresh target must need changes"


def test_second_deploy_changes_nothing(target: harness.Target) -> None:
    result = deploy("deploy #2 (no-op)")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    assert result.totals["success"] == 0, f"second run changed: {result.changed}"
    assert result.totals["no_change"] > 0


def test_verify_suite_passes(target: harness.Target) -> None:
    proc = verify("testinfra verify", target)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout


def test_killed_deploy_converges(target: harness.Target) -> None:
    start = time.monotonic()
    fresh = harness.start("ci-target", PORT)
    _timing("restart fresh target", time.monotonic() - start)

    start = time.monotonic()
    proc = subprocess.Popen(
        _pyinfra_cmd(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen_change = False
    for line in proc.stderr:
        seen_change = seen_change or "Success" in line
        if seen_change and "Starting operation" in line and KILL_DURING in line:
            time.sleep(2.0)  # apt/dpkg is now running on the target
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _timing("deploy killed midway", time.monotonic() - start)
    assert seen_change, "the deploy was killed before it changed anything"

    rerun = deploy("deploy after kill")
    assert rerun.rc == 0, rerun.stderr_tail
    assert rerun.totals["error"] == 0, rerun.errors
    assert rerun.totals["success"] > 0, "the killed run cannot have finished everything"
    again = deploy("deploy after kill, again (no-op)")
    assert again.totals["error"] == 0, again.errors
    assert again.totals["success"] == 0, f"not converged; changed: {again.changed}"
    proc_v = verify("testinfra verify after kill", fresh)
    assert proc_v.returncode == 0, proc_v.stdout[-6000:]
