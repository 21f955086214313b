"""Fit the four watt terms of a GPU's ``tuning/model/power.yaml`` entry to its published curves.

For one preset, every single-card curve of ``bench/curves/`` on it gives figures (relative
tokens/s at each cap, board draw); this script searches ``static_w``, ``memory_w``,
``clock_w`` and ``core_w`` (the shape parameters — ``stall_activity``, ``v_min``,
``mem_sat_frac``, ``mem_sat_exp``, ``f_min`` — stay the RTX 3090 fit's) for the smallest
worst error in units of each figure's bar (5 pp for a curve point, 20 % for a draw), with
scipy's differential evolution, and prints the entry. The step of each curve is the
simulator's (:func:`tuning.backends.sim_workload.replica_step` on the preset), its DVFS the
power model's :func:`tuning.model.power.under_cap`: the same evaluation as a simulated sweep,
without the noise, so the bench (``bench/fidelity.py``) checks the result on the real path.

    .venv/bin/python bench/fit_power_entries.py rtx4090 [--extra prefill-at-limit] [--skip NAME]

``--extra prefill-at-limit``: also ask that a compute-bound prefill of the curves' model reach
the card's default limit at full clock (for a card whose curves are all memory-bound, so the
SM term has no published anchor of its own; the reason goes in the entry's source).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fidelity_curves as fc
import numpy as np
from fidelity_common import CURVE_BAR_PP, RATIO_BAR
from scipy.optimize import differential_evolution

from tuning.backends.sim_config import load_presets
from tuning.backends.sim_workload import hardware_of, host_share, replica_step
from tuning.model.power import PowerParams, params_for, under_cap
from tuning.model.step import StepTime

#: Bounds of each watt term as a share of the card's default limit: wide, so the data decides
#: (``static_w`` also at least the preset's P8 idle draw). estimate.
BOUNDS_FRAC = {
    "static_w": (0.05, 0.6),
    "memory_w": (0.0, 0.6),
    "clock_w": (0.0, 0.5),
    "core_w": (0.05, 1.5),
}

#: The fit stops tightening the worst error at this share of its bar (margin for the
#: simulator's noise and averaging), then keeps the split nearest the prior; the prior's
#: pull per unit of mean |log(term / prior term)|. estimate.
TARGET = 0.25
PRIOR_WEIGHT = 0.05


def _step(curve: fc.Curve, phase: str | None = None) -> StepTime:
    preset = load_presets().presets[curve.preset]
    spec = curve.workload if phase is None else curve.workload.model_copy(update={"phase": phase})
    host = host_share([(preset.pcie.gen, preset.pcie.width)], [0])
    return replica_step(spec, hardware_of(preset), host)


def _rel_error(
    pp: PowerParams, step: StepTime, cap_w: float, ref_w: float, top_mhz: float, pub: float
) -> float:
    got = under_cap(pp, step, cap_w, top_mhz).tokens_per_s
    got /= under_cap(pp, step, ref_w, top_mhz).tokens_per_s
    return abs(got - pub) * 100.0 / CURVE_BAR_PP


def _draw_error(
    pp: PowerParams, step: StepTime, cap_w: float, top_mhz: float, lo_w: float, hi_w: float
) -> float:
    w = under_cap(pp, step, cap_w, top_mhz).power_w
    err = 0.0 if lo_w <= w <= hi_w else min(abs(w - lo_w) / lo_w, abs(w - hi_w) / hi_w)
    return err / RATIO_BAR


def _limit_error(pp: PowerParams, step: StepTime, top_mhz: float, limit_w: float) -> float:
    w = under_cap(pp, step, 1e9, top_mhz).power_w
    return max(0.0, limit_w - w) / limit_w / RATIO_BAR


def objectives(
    preset_name: str, extra: list[str], skip: list[str]
) -> list[Callable[[PowerParams], float]]:
    """One function per published figure: the error in units of its bar."""
    preset = load_presets().presets[preset_name]
    top_mhz, max_w = preset.sm_clock_mhz.max, preset.power.max_w
    out: list[Callable[[PowerParams], float]] = []
    for curve in fc.load_curves():
        spec = curve.spec
        if spec.gpu != preset_name or spec.gpus != 1 or curve.name in skip:
            continue
        step = _step(curve)
        ref_w = min(spec.reference_cap_w, max_w)
        ref_pub = next((p.tokens_per_s for p in spec.points if p.cap_w == spec.reference_cap_w), 0)
        for p in spec.points:
            if p.cap_w != spec.reference_cap_w:
                cap_w, pub = min(p.cap_w, max_w), p.tokens_per_s / ref_pub
                out.append(
                    partial(
                        _rel_error, step=step, cap_w=cap_w, ref_w=ref_w, top_mhz=top_mhz, pub=pub
                    )
                )
        for d in spec.draws:
            out.append(
                partial(
                    _draw_error,
                    step=step,
                    cap_w=min(d.cap_w, max_w),
                    top_mhz=top_mhz,
                    lo_w=d.draw_low_w,
                    hi_w=d.draw_high_w,
                )
            )
        if "prefill-at-limit" in extra:
            out.append(
                partial(
                    _limit_error,
                    step=_step(curve, "prefill"),
                    top_mhz=top_mhz,
                    limit_w=preset.power.default_w,
                )
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument("--extra", action="append", default=[], choices=["prefill-at-limit"])
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        help="a curve whose miss is structural (docs/fidelity.md): left out of the fit",
    )
    args = ap.parse_args()
    preset = load_presets().presets[args.preset]
    base = params_for(args.preset, preset.power.default_w)
    figs = objectives(args.preset, args.extra, args.skip)
    if not figs:
        print(f"no single-card curve on {args.preset} in bench/curves/")
        return 1
    names = list(BOUNDS_FRAC)
    bounds = [
        (lo * preset.power.default_w, hi * preset.power.default_w)
        for lo, hi in BOUNDS_FRAC.values()
    ]
    # the board, VRM and leakage at P0 cannot draw less than the whole card idles at P8
    bounds[0] = (max(bounds[0][0], preset.power.idle_w), bounds[0][1])

    def params(x: np.ndarray) -> PowerParams:
        return base.model_copy(update=dict(zip(names, (float(v) for v in x), strict=True)))

    prior = np.array([getattr(base, n) for n in names])

    def worst(x: np.ndarray) -> float:
        pp = params(x)
        return max(f(pp) for f in figs)

    def objective(x: np.ndarray) -> float:
        # the worst error down to TARGET of its bar; below that, the split nearest the
        # scaled default (the data leaves some terms free: keep them where the prior is)
        spread = float(np.mean(np.abs(np.log(np.maximum(x, 1e-3) / prior))))
        return max(worst(x), TARGET) + PRIOR_WEIGHT * spread

    res = differential_evolution(objective, bounds, seed=0, tol=1e-8, maxiter=300, polish=True)
    fitted = params(res.x)
    print(
        f"{args.preset}: {len(figs)} figures, worst error {worst(res.x):.2f} of its bar "
        f"(before: {max(f(base) for f in figs):.2f})"
    )
    for n in names:
        print(f"    {n}: {getattr(fitted, n):.1f}")
    print("    errors (share of bar): " + " ".join(f"{f(fitted):.2f}" for f in figs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
