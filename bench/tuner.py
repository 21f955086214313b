"""Tuner bars on the simulated rigs; prints figures (not a timed test).

    .venv/bin/python bench/tuner.py            # everything (a few minutes of wall time)
    .venv/bin/python bench/tuner.py --quick    # adaptive only, no grid reference

Prints, per rig × workload class: probes per GPU (mean / worst), sweep simulated minutes,
heat-soak rounds and throttle events in the final soak, max PSU/circuit load ratio over the
trace, the objective and its gap to ``--strategy grid --step-w 5``; then the simulated time
of a naive sequential 25 W grid (one GPU at a time, fixed 60 s per probe, Zeus-style) on
sim:reference, and the spread of chosen caps across seeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuning.apply import Actuator
from tuning.backends import open_rig
from tuning.budget import Policy
from tuning.sweep import Sweep, SweepConfig, SweepResult
from tuning.workloads import SimWorkload

RIGS = ("sim:reference", "sim:4x3090", "sim:8xl40s")
WORKLOADS = ("decode", "prefill", "batched")


def run(spec: str, workload: str, *, seed: int = 0, **overrides: object) -> SweepResult:
    rig = open_rig(spec, seed=seed)
    actuator = Actuator(rig, spec, persist=False)
    config = SweepConfig(workload=workload, seed=seed, **overrides)  # type: ignore[arg-type]
    return Sweep(rig, actuator, SimWorkload(rig, workload), config).run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the grid reference runs")
    parser.add_argument("--policy", default="efficiency", choices=["efficiency", "throughput"])
    args = parser.parse_args()
    os.environ.setdefault("RIGFORGE_STATE_DIR", tempfile.mkdtemp(prefix="rigforge-bench-"))
    policy = Policy(args.policy)
    started = time.perf_counter()
    print(f"policy {policy}, seed 0, floor 0.95, heat-soak 30 min")
    header = (
        f"{'rig':15} {'workload':8} {'probes mean':>11} {'worst':>5} {'sweep min':>9} "
        f"{'soak rounds':>11} {'throttle':>8} {'max load':>8} {'objective':>10} "
        f"{'grid obj':>10} {'gap':>7} {'grid probes':>11}"
    )
    print(header)
    all_means, all_worst, gaps = [], [], []
    for spec in RIGS:
        for workload in WORKLOADS:
            res = run(spec, workload, policy=policy)
            probes = [g.probes for g in res.gpus]
            mean, worst = statistics.mean(probes), max(probes)
            all_means.append(mean)
            all_worst.append(worst)
            final = res.final_soak
            events = len(final.throttle_events) if final else 0
            line = (
                f"{spec:15} {workload:8} {mean:11.2f} {worst:5d} {res.sweep_sim_s / 60:9.2f} "
                f"{len(res.soak_rounds):11d} {events:8d} {res.max_psu_load_ratio:8.3f} "
                f"{res.objective:10.5g}"
            )
            if not args.quick:
                grid = run(spec, workload, policy=policy, strategy="grid", step_w=5)
                gap = res.objective / grid.objective - 1.0
                gaps.append(gap)
                line += f" {grid.objective:10.5g} {gap:+7.2%} {grid.total_probes:11d}"
            print(line, flush=True)
    print(
        f"overall: mean probes/GPU max over rig×class {max(all_means):.2f}, "
        f"worst GPU {max(all_worst)}"
        + (f", worst objective gap vs grid {min(gaps):+.2%}" if gaps else "")
    )

    adaptive = run("sim:reference", "decode", policy=policy)
    naive = run(
        "sim:reference",
        "decode",
        policy=policy,
        strategy="grid",
        step_w=25,
        fixed_probe_s=60.0,
        max_parallel=1,
        heat_soak_s=10.0,
        max_soak_rounds=1,
    )
    print(
        f"sim:reference decode calibration: adaptive {adaptive.sweep_sim_s / 60:.1f} sim min "
        f"({adaptive.total_probes} probes) vs naive sequential 25 W grid "
        f"{naive.sweep_sim_s / 60:.1f} sim min ({naive.total_probes} probes, 60 s each)"
    )

    caps_by_seed = [
        {g.uuid: g.cap_w for g in run("sim:reference", "decode", seed=s, policy=policy).gpus}
        for s in range(5)
    ]
    same = run("sim:reference", "decode", seed=0, policy=policy)
    identical = caps_by_seed[0] == {g.uuid: g.cap_w for g in same.gpus}
    spread = {
        uuid: max(c[uuid] for c in caps_by_seed) - min(c[uuid] for c in caps_by_seed)
        for uuid in caps_by_seed[0]
    }
    print(
        f"seeds 0-4 on sim:reference decode: same seed → same caps: {identical}; "
        f"cap spread per GPU (W): {sorted(spread.values())} (max {max(spread.values()):g})"
    )
    print(f"bench wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
