"""The brute-force oracle: every assignment of every (GPU set, split) to every unit, checked
from scratch with no pruning on the objective — the reference the tests and
``bench/placement.py`` check :func:`tuning.placement.solver.solve` against.
"""

from __future__ import annotations

from collections.abc import Sequence

from tuning.placement.build import (
    candidate_ok,
    floor_miss,
    reservation_mib,
    set_allowed,
    splits,
)
from tuning.placement.problem import Problem
from tuning.placement.scoring import (
    EPS,
    Key,
    better,
    group_prediction,
    group_throughput,
    mask_bits,
)
from tuning.vram import estimate


def evaluate(
    problem: Problem,
    choice: Sequence[tuple[int, int, int] | None],
    facts: dict[tuple[int, int, int, int], tuple[float, tuple[float, ...], float]] | None = None,
) -> Key | None:
    """Check a full assignment from scratch and return its key, or ``None`` if infeasible.

    ``choice[i]`` is ``(mask, tp, pp)`` for unit ``i`` or ``None``. Used by :func:`brute_force`;
    independent of the solver's option lists. ``facts`` memoises the per-candidate numbers
    (estimate, reservation, throughput), which depend on the candidate alone.
    """
    reserved = [0.0] * problem.n
    holders: list[list[int]] = [[] for _ in problem.gpus]
    placed = 0.0
    score = 0.0
    used = 0
    views = problem.gpus
    for i, item in enumerate(choice):
        if item is None:
            continue
        mask, tp, pp = item
        unit = problem.units[i]
        key = (i, mask, tp, pp)
        known = facts.get(key) if facts is not None else None
        if known is None:
            need = estimate(unit.model, tp, pp).need_mib
            reserve = reservation_mib(unit.model, need, mask, views)
            throughput, _ = group_throughput(
                views, mask, tp, pp, problem.links, unit.model, problem.measured
            )
            known = (need, reserve, throughput)
            if facts is not None:
                facts[key] = known
        need, reserve, throughput = known
        for slot, pos in enumerate(mask_bits(mask)):
            reserved[pos] += reserve[slot] if unit.model.allow_sharing else need
            holders[pos].append(i)
        used |= mask
        placed += unit.model.priority
        score += unit.model.priority * throughput
    for pos, units_here in enumerate(holders):
        if len(units_here) > 1 and not all(
            problem.units[i].model.allow_sharing for i in units_here
        ):
            return None
        if len(units_here) > 1 and reserved[pos] > problem.gpus[pos].usable_mib + EPS:
            return None
    if not problem.power_ok[used]:
        return None
    return (placed, score)


def raw_candidates(problem: Problem, unit_pos: int) -> list[tuple[int, int, int]]:
    """Every (mask, tp, pp) the unit-local and set-level rules allow, enumerated afresh."""
    unit = problem.units[unit_pos]
    model = unit.model
    views = problem.gpus
    n = problem.n
    if model.gpus is not None and problem.pin_masks[unit_pos] is None:
        return []  # a pin names a GPU the rig lacks
    pin_mask = problem.pin_masks[unit_pos] if model.gpus is not None else None
    fits_any = {0: False}
    for mask in range(1, 1 << n):
        fits_any[mask] = any(
            candidate_ok(model, mask, tp, pp, views)
            for tp, pp in splits(mask.bit_count(), model.engine)
        )
    out = []
    for mask in range(1, 1 << n):
        if not fits_any[mask] or not set_allowed(model, mask, fits_any, pin_mask):
            continue
        for tp, pp in splits(mask.bit_count(), model.engine):
            if candidate_ok(model, mask, tp, pp, views):
                prediction, _ = group_prediction(
                    views, mask, tp, pp, problem.links, model, problem.measured
                )
                if floor_miss(model, prediction) is None:
                    out.append((mask, tp, pp))
    return out


def brute_force(problem: Problem, *, node_limit: int | None = None) -> Key | None:
    """Reference optimum by exhaustive enumeration (no objective bound, no memo).

    Partial assignments that already put a non-sharing unit on a held GPU are cut (they can
    never become feasible); everything else is enumerated and checked by :func:`evaluate`.
    Raises ``RuntimeError`` after ``node_limit`` leaves.
    """
    candidates = [raw_candidates(problem, i) for i in range(len(problem.units))]
    sharing = [u.model.allow_sharing for u in problem.units]
    best_key: Key | None = None
    facts: dict[tuple[int, int, int, int], tuple[float, tuple[float, ...], float]] = {}
    leaves = 0
    current: list[tuple[int, int, int] | None] = []

    def walk(i: int, excl: int, any_held: int) -> None:
        nonlocal best_key, leaves
        if i == len(candidates):
            leaves += 1
            if node_limit is not None and leaves > node_limit:
                raise RuntimeError("brute force node limit reached")
            key = evaluate(problem, current, facts)
            if key is not None and (best_key is None or better(key, best_key)):
                best_key = key
            return
        current.append(None)
        walk(i + 1, excl, any_held)
        current.pop()
        for cand in candidates[i]:
            mask = cand[0]
            if mask & excl or (not sharing[i] and mask & any_held):
                continue
            current.append(cand)
            walk(i + 1, excl if sharing[i] else excl | mask, any_held | mask)
            current.pop()

    walk(0, 0, 0)
    return best_key
