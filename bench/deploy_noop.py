"""No-op re-deploy wall time on the loopback CI target: median of 5, printed.

Run as root from the repo root: ``.venv/bin/python bench/deploy_noop.py``. Starts a fresh
target (tests/target/harness.py) and converges it with one deploy unless ``--reuse`` is given
and the target already answers on 127.0.0.1:2222; then times 5 re-deploys, each of which must
change nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.target import harness  # noqa: E402

CMD = [str(Path(sys.executable).parent / "pyinfra"), "-y", "--json", "inventory/ci.py",
       "deploys/workstation.py"]  # fmt: skip
RUNS = 5


def run_once() -> tuple[float, dict[str, int]]:
    """One deploy: (wall seconds, pyinfra's result totals)."""
    start = time.monotonic()
    proc = subprocess.run(CMD, cwd=REPO, capture_output=True, text=True, check=True)
    return time.monotonic() - start, json.loads(proc.stdout)["results"]["totals"]


def main() -> int:
    """Print the converge time, each no-op run and their median."""
    reason = harness.unavailable_reason()
    if reason:
        print(f"skip: {reason}")
        return 0
    started = "--reuse" not in sys.argv
    if started:
        harness.start("ci-target", 2222)
    try:
        converge_s, totals = run_once()
        print(f"converge deploy: {converge_s:6.1f} s  totals={totals}")
        times = []
        for i in range(RUNS):
            wall_s, totals = run_once()
            if totals["success"] or totals["error"]:
                print(f"run {i + 1} was not a no-op: {totals}")
                return 1
            times.append(wall_s)
            print(f"no-op run {i + 1}:   {wall_s:6.2f} s  totals={totals}")
        print(f"no-op re-deploy wall time, median of {RUNS}: {statistics.median(times):.2f} s")
    finally:
        if started:
            harness.stop("ci-target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
