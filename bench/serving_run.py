"""Plan vs simulated serving: does the placement predict what the simulator serves?

For every candidate the placement scores (each model of the models file on every GPU set and
split it may take), one replica runs alone on a fresh simulated rig at the same power limits
(the profile's caps with ``--profile``, else the rig's stock limits) for ``--seconds`` of rig
time, cold (no heat: the plan has none either); the line prints the plan's predicted tok/s
beside the measured and the difference. The plan is made from the snapshot ``rigforge loop``
makes (every GPU under load, so each card's negotiated PCIe link is read as it serves). Then
the plan itself is served the way ``rigforge loop`` does (every placement at once,
``--serve-s`` of rig time, heat included) and the sum is compared with issue 12's 10 % bar.

    .venv/bin/python bench/serving_run.py [--rig sim:reference] [--models FILE]
        [--profile out/profile.yaml] [--seconds 60] [--serve-s 1800]

Ends with ``serving: candidates worst … ; plan Σ predicted … vs measured … (…%)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inventory.models import load_models
from tuning.backends import open_rig
from tuning.loop import default_models_path, inspect_under_load
from tuning.placement import build_problem, load_profile_hints, plan
from tuning.placement.scoring import mask_bits
from tuning.serving_run import BAR_PCT, replica_workload, serving_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rig", default="sim:reference")
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=60.0, help="rig s per candidate")
    parser.add_argument("--serve-s", type=float, default=1800.0, help="rig s of the plan")
    args = parser.parse_args()

    from tuning.backends.sim import SimRig

    models = load_models(args.models or default_models_path())
    hints = load_profile_hints(args.profile) if args.profile else None
    rig = open_rig(args.rig, seed=0)
    try:
        caps = {g.uuid: g.power_constraints().default_w for g in rig.gpus}
    finally:
        rig.close()
    # the loop's snapshot: read under load, so a riser's downtrained link is what the plan sees
    snapshot = inspect_under_load(args.rig, "decode", seed=0)
    if hints is not None:
        caps.update({u: h.cap_w for u, h in hints.gpus.items() if h.cap_w is not None})
    problem = build_problem(snapshot, models, hints)
    index = {g.position: g.index for g in problem.gpus}
    seen: set[tuple[str, int, int, int]] = set()
    worst = (0.0, "")
    print(f"candidates on {args.rig}, each alone for {args.seconds:g} rig s, cold:")
    for i, unit in enumerate(problem.units):
        for option in problem.options[i]:
            key = (unit.model.name, option.mask, option.tp, option.pp)
            if key in seen:
                continue
            seen.add(key)
            positions = mask_bits(option.mask)
            spec = replica_workload(
                unit.model,
                [problem.gpus[p].uuid for p in positions],
                option.tp,
                option.pp,
            )
            sim = open_rig(args.rig, seed=0)
            assert isinstance(sim, SimRig)
            try:
                for gpu in sim.gpus:
                    gpu.set_power_limit_w(caps[gpu.uuid])
                handle = sim.run_workload(spec)
                sim.clock.sleep(args.seconds)
                measured = sim.workload_tokens_total(handle) / args.seconds
            finally:
                sim.close()
            diff = (measured / option.throughput - 1.0) * 100.0
            where = ",".join(str(index[p]) for p in positions)
            line = (
                f"{unit.model.name:24} GPUs {where:11} tp={option.tp} pp={option.pp}: "
                f"plan {option.throughput:7.1f} tok/s, sim {measured:7.1f} ({diff:+.1f} %)"
            )
            print(line)
            if abs(diff) > abs(worst[0]):
                worst = (diff, line.split(":")[0].strip())
    placed = plan(snapshot, models, hints)
    run = serving_run(args.rig, caps, placed, models, seed=0, duration_s=args.serve_s)
    print(f"the plan served at once for {args.serve_s:g} rig s (heat included):")
    for p in run.placements:
        print(
            f"  {p.label:24} predicted {p.predicted_tokens_per_s:7.1f}, measured "
            f"{p.measured_tokens_per_s:7.1f} ({p.diff_pct:+.2f} %), "
            f"{p.throttle_events} throttle event(s)"
        )
    verdict = "within" if run.within_bar else "OUTSIDE"
    print(
        f"serving: candidates worst {worst[0]:+.1f} % ({worst[1]}); plan Σ predicted "
        f"{run.predicted_total:.1f} vs measured {run.measured_total:.1f} tok/s "
        f"({run.diff_pct:+.2f} %, {verdict} {BAR_PCT:g} %)"
    )


if __name__ == "__main__":
    main()
