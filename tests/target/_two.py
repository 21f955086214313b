"""Helpers shared by the loop and two-host target tests: a private copy of ``ci-two.yaml``.

The tests write host data (fetched profiles), so they never run against the committed
inventory: each gets a temporary inventory folder with the same hosts, absolute SSH paths and
only the host data the test asks for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.target import harness

REPO = harness.REPO_ROOT
EXAMPLES = REPO / "inventory" / "examples"
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
PORTS = {"ws-a": 2222, "ws-b": 2223}


def timing(stage: str, seconds: float) -> None:
    """Print a stage time and append it to ``$RIGFORGE_TARGET_TIMINGS`` (run.sh prints them)."""
    line = f"{stage:<34} {seconds:8.1f} s"
    print(f"\n[target] {line}")
    path = os.environ.get("RIGFORGE_TARGET_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def make_inventory(folder: Path, host_data: dict[str, list[str]]) -> Path:
    """Copy ``ci-two.yaml`` (+ rigs, secrets and the named host-data files) into ``folder``.

    ``host_data``: ``{host: [file names under inventory/examples/host_data/<host>/]}``.
    Returns the pyinfra inventory module to pass on the command line.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ssh = harness.SSH_DIR
    text = (EXAMPLES / "ci-two.yaml").read_text(encoding="utf-8")
    text = text.replace("../../.target/ssh/", f"{ssh}/")
    (folder / "ci-two.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(EXAMPLES / "rigs", folder / "rigs", dirs_exist_ok=True)
    (folder / "secrets").mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "secrets" / "ci-hf-token", folder / "secrets" / "ci-hf-token")
    for name, files in host_data.items():
        (folder / "host_data" / name).mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy(EXAMPLES / "host_data" / name / file, folder / "host_data" / name / file)
    module = folder / "ci_two.py"
    module.write_text(
        "from inventory.loader import hosts_or_exit\n\n"
        'hosts = hosts_or_exit(__file__, "ci-two.yaml")\n',
        encoding="utf-8",
    )
    return module


@dataclass(frozen=True)
class Run:
    """One ``pyinfra --json`` run: exit code, totals, failed hosts, ops and their hosts."""

    rc: int
    totals: dict[str, int]
    failed_hosts: list[str]
    changed: dict[str, list[str]]
    errors: dict[str, list[str]]
    stderr: str
    wall_s: float


def pyinfra(stage: str, inventory: Path, deploy: str, *extra: str) -> Run:
    """Run ``pyinfra -y --json INVENTORY DEPLOY EXTRA…`` from the repo root; parse the results."""
    start = time.monotonic()
    proc = subprocess.run(
        [PYINFRA, "-y", "--json", str(inventory), deploy, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall_s = time.monotonic() - start
    timing(stage, wall_s)
    try:
        results = json.loads(proc.stdout)["results"]
    except (json.JSONDecodeError, KeyError, TypeError):
        if "No hosts remaining!" in proc.stderr:
            # Every host failed: pyinfra stops before it prints its JSON; stderr says why.
            return Run(proc.returncode, {}, ["<all>"], {}, {}, proc.stderr, wall_s)
        raise AssertionError(
            f"pyinfra gave no JSON results (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
        ) from None
    ops = results["operations"]
    return Run(
        rc=proc.returncode,
        totals=results["totals"],
        failed_hosts=results["failed_hosts"],
        changed={o["name"]: o["success"] for o in ops if o["success"]},
        errors={o["name"]: o["error"] for o in ops if o["error"]},
        stderr=proc.stderr,
        wall_s=wall_s,
    )


def ssh_read(port: int, path: str) -> str:
    """A file on a target, read over real SSH (what a person would do to check)."""
    proc = subprocess.run(
        [
            "ssh",
            "-i",
            str(harness.CLIENT_KEY),
            "-p",
            str(port),
            "-o",
            f"UserKnownHostsFile={harness.KNOWN_HOSTS}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "root@127.0.0.1",
            f"cat {path}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, f"cannot read {path} on port {port}: {proc.stderr}"
    return proc.stdout


def caps_in_unit(unit_text: str) -> dict[str, float]:
    """``RIGFORGE_CAPS_W="UUID=W …"`` of the GPU-settings unit as ``{uuid: W}``."""
    for line in unit_text.splitlines():
        if line.startswith('Environment="RIGFORGE_CAPS_W='):
            value = line.split("=", 1)[1].strip('"').split("=", 1)[1]
            return {k: float(v) for k, v in (pair.split("=") for pair in value.split())}
    raise AssertionError(f"no RIGFORGE_CAPS_W in the unit:\n{unit_text}")
