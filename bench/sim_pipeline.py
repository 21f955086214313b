"""The simulated six-card pipeline against llmgarage.ai's published cap sweep.

``bench/rigs/6x3090-pipeline.yaml`` runs ``bench/workloads/6x3090-minimax-m2.5.yaml`` (MiniMax
M2.5, IQ2_M, one llama.cpp layer-split pipeline over six RTX 3090) as the simulator does: each
stage's step from the step-time model, every card at its own clock under its cap, the pipeline
paced by its slowest stage. Prints, per cap on every card, the measured tokens/s and its share
of the 350 W figure next to the published one, in percentage points, and then what a group
sweep of the split chooses.

bench/fidelity.py's pipeline figures (bench/fidelity_caps.py) call :func:`measure`: one step
definition, the simulator's. What makes the curve: llama.cpp's CPU step is paid once per token
(one graph over all GPUs), not at every stage, and the MoE's expert reads go at
``moe_bw_efficiency_frac`` of the bandwidth (tuning/model/serving.yaml), so a stage is
memory-bound with its math under the reads until the clock falls near the 150 W bin.

    .venv/bin/python bench/sim_pipeline.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuning.apply.actuator import Actuator
from tuning.backends.sim import SimRig
from tuning.sweep import Sweep, SweepConfig
from tuning.workloads import SimWorkload, load_workload_file

HERE = Path(__file__).resolve().parent
RIG = HERE / "rigs" / "6x3090-pipeline.yaml"
WORKLOAD = HERE / "workloads" / "6x3090-minimax-m2.5.yaml"
#: llmgarage.ai/power-limit-tokens-per-second-benchmark: decode tok/s at a cap on every card
PUBLISHED_TPS = {350: 72.6, 200: 68.3, 150: 62.6, 100: 12.1}
#: the issue's bar for a point on a cap curve. Units: percentage points.
BAR_PP = 5.0


def measure(cap_w: float, settle_s: float = 60.0, window_s: float = 120.0) -> float:
    """The pipeline's tokens/s with every card capped at ``cap_w`` (W), counted over
    ``window_s`` after ``settle_s`` (simulated seconds)."""
    rig = SimRig.from_file(RIG, seed=0)
    handle = rig.run_workload(load_workload_file(WORKLOAD))
    for gpu in rig.gpus:
        gpu.set_power_limit_w(cap_w)
    rig.clock.sleep(settle_s)
    start = rig.workload_tokens_total(handle)
    rig.clock.sleep(window_s)
    return (rig.workload_tokens_total(handle) - start) / window_s


def main() -> int:
    top = measure(350.0)
    print(f"{RIG.name} × {WORKLOAD.name}: {top:.1f} tok/s at 350 W (published 72.6)")
    within = 0
    for cap, published in PUBLISHED_TPS.items():
        tps = measure(float(cap))
        rel, pub_rel = tps / top, published / PUBLISHED_TPS[350]
        err_pp = abs(rel - pub_rel) * 100.0
        ok = err_pp <= BAR_PP
        within += ok
        print(
            f"{'ok ' if ok else 'MISS'} {cap:3d} W: {tps:6.1f} tok/s, {rel:.3f} of 350 W "
            f"(published {pub_rel:.3f}), error {err_pp:.1f} pp"
        )
    with tempfile.TemporaryDirectory(prefix="rigforge-bench-") as state:
        os.environ["RIGFORGE_STATE_DIR"] = state
        rig = SimRig.from_file(RIG, seed=0)
        load = SimWorkload(rig, load_workload_file(WORKLOAD))
        result = Sweep(rig, Actuator(rig, str(RIG), persist=False), load, SweepConfig()).run()
    caps = sorted({g.cap_w for g in result.gpus})
    print(
        f"group sweep (efficiency, floor 0.95): {result.total_probes} probes, caps {caps} W "
        f"on {len(result.swept_together[0])} GPUs swept together, "
        f"{sum(g.throughput_tps for g in result.gpus):.1f} tok/s"
    )
    print(f"sim_pipeline: {within}/{len(PUBLISHED_TPS)} within {BAR_PP:g} pp")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
