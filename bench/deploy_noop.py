"""No-op re-deploy wall time on a loopback target, paired against a reference pyinfra deploy.

Run as root from the repo root::

    .venv/bin/python bench/deploy_noop.py [--runs N] [--port P] [--name NAME] [--reuse]

Starts a fresh target (``tests/target/harness.py``; ``RIGFORGE_TARGET_ROOTS`` says where its
tree lives) on 127.0.0.1:``P`` (default 2222) unless ``--reuse`` is given and it already
answers there, converges it with the workstation deploy (``inventory/examples/ci.yaml``
aimed at that port) and with the reference deploy (:mod:`deploys.bench_reference`: seven stock
pyinfra operations), then times ``N`` pairs (default 7) of re-deploys, alternating which of the
two goes first, so a load swing on a shared machine hits both alike. Every timed run must
change nothing. Prints each pair, both medians, the median of the per-pair ratios and the
operation counts. Goal (issue 9): the paired ratio at most 2.0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.target import harness, util  # noqa: E402

PYINFRA = str(Path(sys.executable).parent / "pyinfra")
WORKSTATION = "deploys/workstation.py"
REFERENCE = "deploys/bench_reference.py"


def run_once(inventory: str, deploy: str) -> tuple[float, dict[str, int], int]:
    """One deploy: (wall seconds, pyinfra's result totals, number of operations)."""
    start = time.monotonic()
    proc = subprocess.run(
        [PYINFRA, "-y", "--json", inventory, deploy],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall_s = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{deploy} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    results = json.loads(proc.stdout)["results"]
    return wall_s, results["totals"], len(results["operations"])


def main(argv: list[str] | None = None) -> int:
    """Converge both deploys, time the pairs, print the figures; 1 when a run changed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed pairs (default 7)")
    parser.add_argument("--port", type=int, default=2222, help="target SSH port (default 2222)")
    parser.add_argument("--name", default="bench-noop", help="target name (default bench-noop)")
    parser.add_argument("--reuse", action="store_true", help="reuse a running, converged target")
    args = parser.parse_args(argv)
    reason = harness.unavailable_reason()
    if reason:
        print(f"skip: {reason}")
        return 0
    started = not args.reuse
    target = (
        # The CI inventory's GPUs, reported by the target's nvidia-smi stand-in: without them
        # nvidia-persistenced (a stand-in too) fails, as on a host whose driver is not loaded.
        harness.start(args.name, args.port, gpus=util.standin_gpus(util.CI_YAML, "ci-target"))
        if started
        else harness.Target(args.name, args.port, harness.target_root(args.name))
    )
    try:
        folder = Path(tempfile.mkdtemp(prefix="rigforge-bench-"))
        inventory = str(util.inventory_for(target, folder, stem="bench"))
        deploys = {"workstation": WORKSTATION, "reference": REFERENCE}
        ops: dict[str, int] = {}
        for label, deploy in deploys.items():
            converge_s, totals, _ = run_once(inventory, deploy)
            print(f"converge {label:<11}: {converge_s:6.1f} s  totals={totals}")
        times: dict[str, list[float]] = {label: [] for label in deploys}
        ratios = []
        for i in range(args.runs):
            # Alternate the order: a pair's two runs see the same load, whichever is first.
            order = list(deploys) if i % 2 == 0 else list(reversed(deploys))
            pair: dict[str, float] = {}
            for label in order:
                wall_s, totals, ops[label] = run_once(inventory, deploys[label])
                if totals.get("success") or totals.get("error"):
                    print(f"pair {i + 1}: {label} was not a no-op: {totals}")
                    return 1
                pair[label] = wall_s
                times[label].append(wall_s)
            ratios.append(pair["workstation"] / pair["reference"])
            print(
                f"pair {i + 1}: workstation {pair['workstation']:5.2f} s  "
                f"reference {pair['reference']:5.2f} s  ratio {ratios[-1]:.2f}"
            )
        ws_s, ref_s = (statistics.median(times[label]) for label in deploys)
        print(
            f"no-op re-deploy, median of {args.runs}: workstation {ws_s:.2f} s "
            f"({ops['workstation']} operations), reference {ref_s:.2f} s "
            f"({ops['reference']} operations)"
        )
        print(f"paired ratio (median of per-pair ratios): {statistics.median(ratios):.2f}")
    finally:
        if started:
            harness.stop(args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
