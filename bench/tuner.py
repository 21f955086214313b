"""Tuner bars on the simulated rigs; prints figures (not a timed test).

    .venv/bin/python bench/tuner.py            # everything (a few minutes of wall time)
    .venv/bin/python bench/tuner.py --quick    # adaptive only, no grid reference
    .venv/bin/python bench/tuner.py --rig bench/rigs/8x4090-gen4.yaml   # other rigs' bars

Prints, per rig × workload class: probes per GPU (mean / worst), sweep simulated minutes,
heat-soak rounds and throttle events in the final soak, the whole tune's rig minutes (probes
plus thermal validation, ``rig_seconds``), max PSU/circuit load ratio over the
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

from tuning.apply.actuator import Actuator
from tuning.backends import open_rig
from tuning.budget import Policy
from tuning.sweep import Sweep, SweepConfig, SweepResult
from tuning.workloads import SimWorkload

#: sim:reference plus every rig file of tuning/backends/rigs/ (each must meet the bars)
RIGS = (
    "sim:reference",
    *tuple(
        f"sim:{p.stem}"
        for p in sorted(
            (Path(__file__).resolve().parents[1] / "tuning/backends/rigs").glob("*.yaml")
        )
        if p.stem != "reference"
    ),
)
WORKLOADS = ("decode", "prefill", "batched")


def run(spec: str, workload: str, *, seed: int = 0, **overrides: object) -> SweepResult:
    rig = open_rig(spec, seed=seed)
    actuator = Actuator(rig, spec, persist=False)
    config = SweepConfig(workload=workload, seed=seed, **overrides)  # type: ignore[arg-type]
    return Sweep(rig, actuator, SimWorkload(rig, workload), config).run()


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the grid reference runs")
    parser.add_argument("--policy", default="efficiency", choices=["efficiency", "throughput"])
    parser.add_argument(
        "--full-soak", action="store_true", help="soak 30 min instead of stopping on a prediction"
    )
    parser.add_argument(
        "--rig",
        action="append",
        metavar="SPEC",
        help="judge these rigs (sim:NAME or a rig file; repeatable) instead of the default set",
    )
    args = parser.parse_args()
    os.environ.setdefault("RIGFORGE_STATE_DIR", tempfile.mkdtemp(prefix="rigforge-bench-"))
    policy = Policy(args.policy)
    started = time.perf_counter()
    soak = "full 30 min" if args.full_soak else "predicted (≤ 30 min)"
    print(f"policy {policy}, seed 0, floor 0.95, heat-soak {soak}")
    print(
        f"{'rig':24} {'class':8} {'probes':>6} {'worst':>5} {'sweep':>6} {'rounds':>6} "
        f"{'soak':>6} {'thr':>3} {'cut':>3} {'rig':>6} {'load':>6} {'objective':>9} "
        f"{'grid obj':>9} {'gap':>7} {'grid n':>6}"
    )
    means, worsts, gaps, throttles, loads, rig_s = [], [], [], [], [], []
    for spec in args.rig or RIGS:
        name = spec if spec.startswith("sim:") else Path(spec).stem
        for workload in WORKLOADS:
            res = run(spec, workload, policy=policy, full_soak=args.full_soak)
            rig_s.append((res.rig_seconds, name, workload))
            probes = [g.probes for g in res.gpus]
            mean, worst = statistics.mean(probes), max(probes)
            means.append(mean)
            worsts.append(worst)
            final = res.final_soak
            events = len(final.throttle_events) if final else 0
            throttles.append(events)
            loads.append(res.max_psu_load_ratio)
            # GPUs the heat-soak capped under what the probes chose: where heat, not the
            # curve, set the cap, the gap compares two soak corrections, not two searches
            cut = sum(1 for g in res.gpus if g.cap_w < res.allocation.caps_w[g.uuid] - 0.5)
            line = (
                f"{name:24} {workload:8} {mean:6.2f} {worst:5d} {res.sweep_sim_s / 60:5.2f}m "
                f"{len(res.soak_rounds):6d} {res.soak_sim_s / 60:5.1f}m {events:3d} {cut:3d} "
                f"{res.rig_seconds / 60:5.1f}m "
                f"{res.max_psu_load_ratio:6.3f} {res.objective:9.5g}"
            )
            if not args.quick:
                grid = run(spec, workload, policy=policy, strategy="grid", step_w=5)
                gap = res.objective / grid.objective - 1.0
                gaps.append(gap)
                line += f" {grid.objective:9.5g} {gap:+7.2%} {grid.total_probes:6d}"
            print(line, flush=True)
    print("(probes: mean per GPU; sweep/soak: simulated minutes; thr: throttle events in the")
    print(" final soak; cut: GPUs the heat-soak capped under the probes' choice; rig: whole")
    print(" tune, probes + validation, rig minutes; load: max PSU/circuit load ratio over the")
    print(" cap trace; gap: vs grid 5 W)")

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
    caps_by_seed = [
        {g.uuid: g.cap_w for g in run("sim:reference", "decode", seed=s, policy=policy).gpus}
        for s in range(5)
    ]
    same = run("sim:reference", "decode", seed=0, policy=policy)
    identical = caps_by_seed[0] == {g.uuid: g.cap_w for g in same.gpus}
    spread = max(
        max(c[uuid] for c in caps_by_seed) - min(c[uuid] for c in caps_by_seed)
        for uuid in caps_by_seed[0]
    )

    worst_rig = max(rig_s)
    bars = [
        (
            "whole tune ≤ 10 rig min (every rig × class)",
            f"max {worst_rig[0] / 60:.1f} min ({worst_rig[1]} {worst_rig[2]})",
            worst_rig[0] <= 600.0,
        ),
        ("issue 12: mean probes per GPU ≤ 4", f"max {max(means):.2f}", max(means) <= 4.0),
        ("issue 12: worst GPU ≤ 5 probes", f"max {max(worsts)}", max(worsts) <= 5),
        (
            "issue 12: objective within 1 % of grid --step-w 5",
            f"worst {min(gaps):+.2%}" if gaps else "skipped (--quick)",
            bool(gaps) and min(gaps) >= -0.01,
        ),
        (
            "mean probes per GPU ≤ 5 (every rig × class)",
            f"max {max(means):.2f}",
            max(means) <= 5.0,
        ),
        ("worst GPU ≤ 7 probes", f"max {max(worsts)}", max(worsts) <= 7),
        (
            "objective within 2 % of grid --step-w 5",
            f"worst {min(gaps):+.2%}" if gaps else "skipped (--quick)",
            bool(gaps) and min(gaps) >= -0.02,
        ),
        (
            "zero throttle events in the final heat-soak",
            f"total {sum(throttles)}",
            not any(throttles),
        ),
        ("max_psu_load_ratio ≤ 1.0 over the trace", f"max {max(loads):.3f}", max(loads) <= 1.0),
        (
            "6-GPU calibration (sim:reference decode) ≤ 10 sim min",
            f"{adaptive.sweep_sim_s / 60:.1f} min, {adaptive.total_probes} probes "
            f"(naive sequential 25 W grid, 60 s/probe: {naive.sweep_sim_s / 60:.1f} min, "
            f"{naive.total_probes} probes)",
            adaptive.sweep_sim_s <= 600.0,
        ),
        ("same seed → same caps", str(identical), identical),
        ("seeds 0-4 → caps within ±10 W", f"max spread {spread:g} W", spread <= 10.0),
    ]
    print()
    width = max(len(name) for name, _, _ in bars)
    for name, figure, ok in bars:
        print(f"{_verdict(ok)}  {name:{width}}  {figure}")
    print(f"bench wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
