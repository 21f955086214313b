"""Cap search, tested by replaying curves whose shapes name them (no rig, no clock)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tuning.backends.base import PowerConstraints
from tuning.search import AdaptiveSearch, GridSearch, make_search
from tuning.telemetry import ProbeMeasurement

Curve = Callable[[float], tuple[float, float]]


def sim_like(natural_w: float, floor_w: float, dvfs_exp: float, knee: float, cliff: float) -> Curve:
    """The simulated rig's shape: P(f) = floor + span·f^dvfs_exp, T = min(1, f/knee)^cliff."""

    def curve(cap_w: float) -> tuple[float, float]:
        limit = min(cap_w, natural_w)
        f = max(0.2, ((limit - floor_w) / (natural_w - floor_w)) ** (1 / dvfs_exp))
        power = floor_w + (natural_w - floor_w) * f**dvfs_exp
        return 100.0 * min(1.0, f / knee) ** cliff, power

    return curve


CURVES = {
    # memory-bound: flat down to ~75 % of the natural draw, then a cliff
    "decode_plateau_then_cliff_3090": (
        PowerConstraints(100, 350, 350),
        sim_like(320, 80, 2.5, 0.85, 4.0),
    ),
    # compute-bound: throughput follows the cap, natural draw above the max limit
    "prefill_power_law_above_max": (
        PowerConstraints(100, 350, 350),
        sim_like(402, 80, 1.6, 1.0, 1.0),
    ),
    "batched_knee_near_top_a6000": (
        PowerConstraints(100, 300, 300),
        sim_like(306, 75, 2.0, 0.92, 1.6),
    ),
    "flat_to_the_floor": (PowerConstraints(150, 450, 450), sim_like(300, 60, 2.5, 0.2, 4.0)),
}


def replay(search: AdaptiveSearch | GridSearch, curve: Curve) -> list[int]:
    caps = []
    while (cap := search.next_cap()) is not None:
        throughput, power = curve(cap)
        search.record(ProbeMeasurement(cap, throughput, power, 60.0, 60.0, False, True, 8.0))
        caps.append(cap)
        assert len(caps) < 100
    return caps


def best_tokens_per_joule(
    constraints: PowerConstraints, curve: Curve, floor: float = 0.95
) -> float:
    """The best tokens/J over every whole-watt cap that keeps the floor (the exhaustive answer)."""
    top = curve(constraints.max_w)[0]
    return max(
        t / p
        for t, p in (curve(c) for c in range(int(constraints.min_w), int(constraints.max_w) + 1))
        if t >= floor * top
    )


@pytest.mark.parametrize("name", sorted(CURVES))
def test_adaptive_lands_within_the_objective_tolerance_in_a_handful_of_probes(name: str) -> None:
    constraints, curve = CURVES[name]
    search = AdaptiveSearch(constraints)
    caps = replay(search, curve)
    assert caps[0] == constraints.max_w, "the natural draw is measured first"
    assert len(caps) <= 5, caps
    target = 0.95 * search.uncapped_tps
    found = max(p.tokens_per_joule for p in search.points if p.throughput_tps >= target)
    assert found >= (1 - search.tol_rel) * best_tokens_per_joule(constraints, curve), caps


def test_decode_answer_is_the_end_of_the_plateau_not_the_floor_crossing() -> None:
    """On a cliff tokens/J peaks where the plateau ends: 5 % lower throughput costs more than
    the watts it saves. Hand-worked on ``sim_like(320, 80, 2.5, 0.85, 4.0)``: the plateau
    ends at f = 0.85, P = 80 + 240·0.85^2.5 = 239.9 W; the floor crossing (T = 95) is at
    f = 0.85·0.95^(1/4) = 0.8392, P = 80 + 240·0.8392^2.5 = 234.8 W. The best point found
    lies nearer the knee than the crossing."""
    constraints, curve = CURVES["decode_plateau_then_cliff_3090"]
    search = AdaptiveSearch(constraints)
    replay(search, curve)
    best = max(search.points, key=lambda p: p.tokens_per_joule)
    assert abs(best.power_w - 239.9) < abs(best.power_w - 234.8), search.points


def concave(cap_w: float) -> tuple[float, float]:
    """A smooth curve with no plateau: T = 100·(1 − ((300 − P)/200)²) on a 300 W card that
    draws its cap (P = cap, 100-300 W)."""
    p = min(cap_w, 300.0)
    return 100.0 * (1.0 - ((300.0 - p) / 200.0) ** 2), p


def test_local_model_brackets_the_floor_crossing_of_a_smooth_curve() -> None:
    """Hand-worked on :func:`concave` with points at 300, 270 and 240 W: T = 100, 97.75, 91.
    The floor (95) is crossed at 300 − 200·√0.05 = 255.28 W. The chord 300-270 W extended
    down reaches 95 at 270 − 2.75/0.075 = 233.3 W, under the infeasible 240 W point, so the
    lower bound is 240 W; the chord 240-270 W reaches it at 240 + 30·4/6.75 = 257.78 W (the
    upper bound: a concave curve lies above its chords); the quadratic through the three
    points is the curve itself, root 255.28 W; the estimate is half-way from it to the
    middle of the bounds, (255.28 + 248.89) / 2 = 252.09 W."""
    search = AdaptiveSearch(PowerConstraints(100, 300, 300))
    for cap in (300, 270, 240):
        t, p = concave(cap)
        search.record(ProbeMeasurement(cap, t, p, 60.0, 60.0, False, True, 8.0))
    lo_w, est_w, hi_w = search.crossing_w(search._collapsed())
    assert lo_w == pytest.approx(240.0)
    assert hi_w == pytest.approx(257.78, abs=0.01)
    assert est_w == pytest.approx(252.09, abs=0.01)
    assert lo_w <= 255.28 <= hi_w


def test_smooth_curve_optimum_found_within_four_probes() -> None:
    """On :func:`concave` tokens/J = T/P still rises as the cap falls at the floor crossing
    (dT/dP·P = 0.2236·255.3 = 57.1 < T = 95), so the optimum is the lowest whole-watt cap
    above 255.28 W: 256 W, T = 100·(1 − (44/200)²) = 95.16, 0.37172 tokens/J."""
    search = AdaptiveSearch(PowerConstraints(100, 300, 300))
    caps = replay(search, concave)
    assert len(caps) <= 4, caps
    best = max(
        (p for p in search.points if p.throughput_tps >= 95.0), key=lambda p: p.tokens_per_joule
    )
    assert best.tokens_per_joule >= (1 - search.tol_rel) * 0.37172, caps
    assert best.cap_w >= 256, "never below the floor"


def test_plan_is_a_function_of_the_points_alone() -> None:
    """A search rebuilt from a run's first two points, in either order, asks for the cap that
    run probed third: nothing but the measured points steers it (what makes resume work)."""
    constraints, curve = CURVES["prefill_power_law_above_max"]
    search = AdaptiveSearch(constraints)
    replay(search, curve)
    first_two = list(search.points[:2])
    for points in (first_two, first_two[::-1]):
        twin = AdaptiveSearch(constraints, points=points)
        assert twin.next_cap() == search.points[2].cap_w
        assert twin.next_cap() == search.points[2].cap_w, "asking twice changes nothing"


def test_adaptive_never_probes_above_the_natural_draw_twice() -> None:
    constraints, curve = CURVES["decode_plateau_then_cliff_3090"]
    search = AdaptiveSearch(constraints)
    caps = replay(search, curve)
    assert sum(cap >= 320 for cap in caps) == 1


def test_grid_probes_every_step_from_max_to_min() -> None:
    constraints, curve = CURVES["batched_knee_near_top_a6000"]
    caps = replay(GridSearch(constraints, step_w=25), curve)
    assert caps == [300, 275, 250, 225, 200, 175, 150, 125, 100]


def test_options_include_the_free_natural_cap() -> None:
    """The decode curve draws 320 W uncapped (``sim_like(320, ...)``) on a 350 W card: some cap
    between 320 W and 350 W does not bind, so it is offered at the uncapped probe's throughput
    and power without being probed (a cap above the natural draw costs nothing)."""
    constraints, curve = CURVES["decode_plateau_then_cliff_3090"]
    search = AdaptiveSearch(constraints)
    caps = replay(search, curve)
    uncapped_tps, natural_w = curve(350)
    assert natural_w == pytest.approx(320)
    free = [o for o in search.options() if 320 <= o.cap_w < 350 and o.cap_w not in caps]
    assert len(free) == 1, search.options()
    assert free[0].throughput_tps == pytest.approx(uncapped_tps)
    assert free[0].power_w == pytest.approx(320)


def test_replaying_recorded_probes_resumes_at_the_same_next_cap() -> None:
    constraints, curve = CURVES["decode_plateau_then_cliff_3090"]
    first = AdaptiveSearch(constraints)
    for _ in range(3):
        cap = first.next_cap()
        assert cap is not None
        t, p = curve(cap)
        first.record(ProbeMeasurement(cap, t, p, 60.0, 60.0, False, True, 8.0))
    resumed = make_search("adaptive", constraints, floor=0.95)
    assert isinstance(resumed, AdaptiveSearch)
    for point in first.points:
        resumed.next_cap()
        resumed.record(point)
    assert resumed.next_cap() == first.next_cap()


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="adaptive or grid"):
        make_search("random", PowerConstraints(100, 300, 300), floor=0.95)


def _probe(cap_w: int, throughput_tps: float, power_w: float) -> ProbeMeasurement:
    return ProbeMeasurement(cap_w, throughput_tps, power_w, 60.0, 60.0, False, True, 8.0)


def test_one_more_probe_when_the_brackets_predicted_gain_exceeds_tol_rel() -> None:
    """The probe just above the estimate saves under 1 %, but the bracket predicts more.

    Hand-worked (floor 0.95, tol_rel 1 %, range 100-350 W): top 350 W → 100 tok/s at 340 W,
    so floor_t = 95 and tol_w = 3.4 W. L = 263 W cap → 95.2 tok/s at 261 W (0.36475 tok/J),
    above it 290 W → 95.9 at 290 W. The chord L-290 (slope 0.7/29 per W) crosses 95 at
    261 - 0.2·29/0.7 = 252.71 W (lower bound); nothing infeasible yet, so the estimate is the
    middle of [252.71, 261] = 256.86 W. The probe just above it, ⌈256.86 + 1.7⌉ = 259 W,
    saves only 261/259 - 1 = 0.77 % of L's draw; but the crossing predicts 95 / 256.86 =
    0.36986 tok/J, 1.40 % over L. So probe once more, where the saving is 1 %:
    ⌊261 / 1.01⌋ = 258 W (above the estimate: feasible if the model is right).
    """
    search = AdaptiveSearch(PowerConstraints(100, 350, 350))
    for probe in (_probe(350, 100.0, 340.0), _probe(290, 95.9, 290.0), _probe(263, 95.2, 261.0)):
        search.record(probe)
    assert search.plan() == (258, "floor crossing")


def test_stop_when_the_brackets_predicted_gain_is_under_tol_rel() -> None:
    """Same shape, a bracket whose crossing is worth under 1 %.

    Hand-worked: top 350 W → 100 tok/s at 340 W (floor_t 95, tol_w 3.4 W); L = 264 W cap →
    95.5 tok/s at 262 W (0.36450 tok/J); above it 290 W → 97.5 at 290 W. The chord crosses 95
    at 262 - 0.5·28/2 = 255 W; the estimate is the middle of [255, 262] = 258.5 W, the probe
    above it ⌈258.5 + 1.7⌉ = 261 W saves 0.38 %, and the crossing predicts 95 / 258.5 =
    0.36750 tok/J, only 0.82 % over L: stop.
    """
    search = AdaptiveSearch(PowerConstraints(100, 350, 350))
    for probe in (_probe(350, 100.0, 340.0), _probe(290, 97.5, 290.0), _probe(264, 95.5, 262.0)):
        search.record(probe)
    assert search.plan() == (None, "the bracket's predicted gain is under tol_rel")
