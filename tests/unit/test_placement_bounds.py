"""The branch and bound's set-restricted Lagrangian bound never cuts off a plan.

The expectation comes from outside the bound: every completion of a node is enumerated and
checked from scratch by the brute-force oracle's :func:`~tuning.placement.oracle.evaluate`;
the bound at that node must be at least the best of them, in placed priority and in score.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_placement_rigs import make_rig, model, models_file

from tuning.core.power import Circuit, Psu
from tuning.placement import Problem, build_problem, evaluate
from tuning.placement.bounds import capacity_duals, restricted_lagrangian
from tuning.placement.scoring import mask_bits

SHARING = [
    {"params_b": 1.0, "context": 4096},
    {"params_b": 3.0, "quant_bits": 16, "context": 4096, "max_gpus": 2},
    {"params_b": 8.0, "quant_bits": 8, "max_gpus": 2, "max_sequences": 4},
    {"params_b": 8.0, "quant_bits": 16, "engine": "llama.cpp", "max_gpus": 3},
    {"params_b": 3.0, "quant_bits": 16, "engine": "sglang", "max_gpus": 3, "context": 8192},
]


@st.composite
def sharing_instances(draw):
    n = draw(st.integers(2, 4))
    mems = [draw(st.sampled_from([16384, 24576, 49140])) for _ in range(n)]
    links = [["X"] * n for _ in range(n)]
    for a in range(n):
        for b in range(a + 1, n):
            links[a][b] = links[b][a] = draw(st.sampled_from(["NV4", "PIX", "PHB", "SYS"]))
    # a PSU that runs only some GPUs at 300 W: the bound must respect the power budget too
    rating_w = draw(st.sampled_from([None, 800, 1100]))
    power = {}
    if rating_w is not None:
        power = {
            "psus": [Psu(name="p", rating_w=rating_w, circuit="c", efficiency=0.9, platform_w=100)],
            "circuits": [Circuit(name="c", voltage_v=230, breaker_a=16)],
            "psu_of": ["p"] * n,
        }
    specs = []
    for i in range(draw(st.integers(2, 4))):
        size = dict(draw(st.sampled_from(SHARING)))
        size["priority"] = draw(st.sampled_from([1.0, 2.0, 3.5]))
        specs.append(model(f"s{i}", allow_sharing=True, **size))
    return make_rig(mems, links, **power), models_file(*specs)


def _cap(problem: Problem) -> list[float]:
    """Most any set of sharing units can reserve on each GPU: its usable MiB, or the largest
    single reservation (alone on a GPU, a unit's reservation is not checked)."""
    return [
        max(
            [g.usable_mib]
            + [
                o.reserve_mib[slot]
                for opts in problem.options
                for o in opts
                for slot, pos in enumerate(mask_bits(o.mask))
                if pos == g.position
            ]
        )
        for g in problem.gpus
    ]


def _completions(problem: Problem, first: int | None) -> tuple[float, float]:
    """Best placed priority and best score (separately) over every feasible plan in which
    unit 0 takes option ``first`` (``None``: unplaced), by enumeration and the oracle."""
    facts: dict = {}
    best_p = best_s = -math.inf
    choices = [[None, *range(len(opts))] for opts in problem.options[1:]]
    for rest in itertools.product(*choices):
        picks = (first, *rest)
        plan = [
            None if j is None else (o.mask, o.tp, o.pp)
            for j, opts in zip(picks, problem.options, strict=True)
            for o in [None if j is None else opts[j]]
        ]
        key = evaluate(problem, plan, facts)
        if key is not None:
            best_p = max(best_p, key[0])
            best_s = max(best_s, key[1])
    return best_p, best_s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sharing_instances(),
    st.lists(st.floats(0.0, 2e-4), min_size=4, max_size=4),
    st.lists(st.floats(0.0, 0.05), min_size=4, max_size=4),
)
def test_restricted_lagrangian_bounds_every_completion(instance, rand_p, rand_s) -> None:
    """At the root and after each first decision, for the LP's capacity duals and for random
    multipliers: ``tables[i][U] − Σ_{g ∈ U} λ_g·(cap_g − resid_g)`` plus what the path earned
    is at least the best completion the oracle finds (priority and score each)."""
    rig, models = instance
    problem = build_problem(rig, models)
    k = len(problem.units)
    n = problem.n
    cap = _cap(problem)
    usable = [g.usable_mib for g in problem.gpus]
    opts = [tuple(enumerate(o)) for o in problem.options]
    placeable = [u for u in range(k) if opts[u]]
    lp = capacity_duals(problem, placeable, [], opts, cap, n)
    base = [0.0 if ok else -math.inf for ok in problem.power_ok]
    for lam_p, lam_s in ((lp.priority, lp.score), (rand_p[:n], rand_s[:n])):
        tables = []
        for lam, use_value in ((lam_p, False), (lam_s, True)):
            gains = [
                [
                    (
                        o.mask,
                        (o.value if use_value else problem.units[u].model.priority)
                        - sum(
                            lam[pos] * o.reserve_mib[slot]
                            for slot, pos in enumerate(mask_bits(o.mask))
                        ),
                    )
                    for o in problem.options[u]
                ]
                for u in range(k)
            ]
            tables.append(
                restricted_lagrangian(
                    gains, base, [a * b for a, b in zip(lam, cap, strict=True)], n
                )
            )
        table_p, table_s = tables
        root_p, root_s = _completions_root(problem)
        assert table_p[0][0] >= root_p - 1e-6
        assert table_s[0][0] >= root_s - 1e-6
        priority = problem.units[0].model.priority
        for first in [None, *range(len(problem.options[0]))]:
            best_p, best_s = _completions(problem, first)
            if best_p == -math.inf:
                continue  # no feasible plan below this node: nothing to bound
            if first is None:
                used, earned_p, earned_s, taken_p, taken_s = 0, 0.0, 0.0, 0.0, 0.0
            else:
                option = problem.options[0][first]
                used, earned_p, earned_s = option.mask, priority, option.value
                # alone on its GPUs, unit 0 leaves max(0, usable − reserve) for the others
                lost = {
                    pos: cap[pos] - max(0.0, usable[pos] - option.reserve_mib[slot])
                    for slot, pos in enumerate(mask_bits(option.mask))
                }
                taken_p = sum(lam_p[g] * lost[g] for g in lost)
                taken_s = sum(lam_s[g] * lost[g] for g in lost)
            assert earned_p + table_p[1][used] - taken_p >= best_p - 1e-6
            assert earned_s + table_s[1][used] - taken_s >= best_s - 1e-6


def _completions_root(problem: Problem) -> tuple[float, float]:
    """Best placed priority and best score over every feasible plan."""
    tops = [_completions(problem, first) for first in [None, *range(len(problem.options[0]))]]
    return max(t[0] for t in tops), max(t[1] for t in tops)
