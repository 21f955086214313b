"""Bounds for the branch and bound: LP capacity duals, the Lagrangian VRAM bound per final GPU
set, reachable priority sums, subset/superset maxima over GPU masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tuning.placement.problem import Option, Problem
from tuning.placement.scoring import mask_bits

#: Sums of the same priorities in another order differ by float error only; such sums merge
#: into one entry (the largest, so rounding never lands below a reachable sum).
_SUM_MERGE = 1e-9


#: Slack when rounding a Lagrangian priority bound down to a reachable sum: far above the
#: float error of the bound and the merges (≤ units · ``_SUM_MERGE``); a larger slack is only
#: a weaker bound, never a wrong one.
SUM_TOL = 1e-6


#: Most distinct priority sums :func:`priority_sums` keeps per search depth.
_SUM_LIMIT = 4096


def priority_sums(
    sharing_priorities: Sequence[float], exclusive_priorities: Sequence[float]
) -> list[list[float] | None]:
    """Per search depth ``i``: the sorted distinct subset sums of the priorities still open.

    Entry ``i`` covers sharing units ``i..`` plus every exclusive unit (the exclusive part is
    settled only at the leaves); ``None`` where there are more than ``_SUM_LIMIT`` sums (no
    rounding there: the bound stays as it was, still admissible).
    """
    k = len(sharing_priorities)
    result: list[list[float] | None] = [None] * (k + 1)

    def add(current: list[float] | None, priority: float) -> list[float] | None:
        if current is None:
            return None
        merged = sorted(set(current) | {value + priority for value in current})
        distinct: list[float] = []
        cluster_low = -math.inf
        for value in merged:
            if value - cluster_low <= _SUM_MERGE:
                distinct[-1] = value  # sorted: the cluster's largest so far
                continue
            cluster_low = value
            distinct.append(value)
        return distinct if len(distinct) <= _SUM_LIMIT else None

    sums: list[float] | None = [0.0]
    for priority in exclusive_priorities:
        sums = add(sums, priority)
    result[k] = sums
    for i in range(k - 1, -1, -1):
        sums = add(sums, sharing_priorities[i])
        result[i] = sums
    return result


@dataclass(frozen=True)
class CapacityDuals:
    """The LP relaxation's answers the branch and bound uses.

    ``priority``/``score``: per-GPU capacity duals ``λ ≥ 0`` of the LPs maximising placed
    priority and score (zeros when an LP fails or there is nothing to relax; any ``λ ≥ 0``
    keeps the Lagrangian bound valid). ``placing``: the priority LP's fractional choice
    ``x`` of each option, by (unit position, option index): where the relaxation packs the
    units, used only to order the search.
    """

    priority: tuple[float, ...]
    score: tuple[float, ...]
    placing: Mapping[tuple[int, int], float] = field(default_factory=dict)


def capacity_duals(
    problem: Problem,
    units: Sequence[int],
    exclusive: Sequence[int],
    opts: Sequence[tuple[tuple[int, Option], ...]],
    cap: Sequence[float],
    n: int,
) -> CapacityDuals:
    """Per-GPU multipliers ``λ ≥ 0`` for the VRAM bound: capacity duals of two LPs.

    The LPs relax every unit to a fractional choice of options (``Σ x ≤ 1`` per unit) under
    ``Σ reserve · x ≤ cap`` per GPU, maximising placed priority and score respectively. Any
    ``λ ≥ 0`` gives a valid bound, so a failed LP just yields zeros (no VRAM bound).
    """
    zeros = (0.0,) * n
    if len(units) < 2:
        return CapacityDuals(zeros, zeros)
    try:
        import numpy as np
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix
    except ImportError:  # pragma: no cover - scipy is a core dependency; exact without it
        return CapacityDuals(zeros, zeros)
    rows: list[int] = []
    cols: list[int] = []
    data: list[float] = []
    values: list[float] = []
    priorities: list[float] = []
    keys: list[tuple[int, int]] = []
    everyone = list(units) + list(exclusive)
    for row, u in enumerate(everyone):
        model = problem.units[u].model
        for j, o in opts[u]:
            column = len(keys)
            rows.append(row)
            cols.append(column)
            data.append(1.0)
            for slot, pos in enumerate(mask_bits(o.mask)):
                rows.append(len(everyone) + pos)
                cols.append(column)
                data.append(o.reserve_mib[slot] if model.allow_sharing else cap[pos])
            values.append(o.value)
            priorities.append(model.priority)
            keys.append((u, j))
    matrix = coo_matrix((data, (rows, cols)), shape=(len(everyone) + n, len(keys))).tocsr()
    bounds_ub = np.concatenate([np.ones(len(everyone)), np.asarray(cap, dtype=float)])
    duals: list[tuple[float, ...]] = []
    placing: dict[tuple[int, int], float] = {}
    for objective in (priorities, values):
        result = linprog(
            -np.asarray(objective), A_ub=matrix, b_ub=bounds_ub, bounds=(0, 1), method="highs"
        )
        if result.status != 0:
            duals.append(zeros)
            continue
        if not placing and objective is priorities:
            placing = {key: float(x) for key, x in zip(keys, result.x, strict=True)}
        marginals = result.ineqlin.marginals[len(everyone) :]
        duals.append(tuple(max(0.0, -float(m)) for m in marginals))
    return CapacityDuals(duals[0], duals[1], placing)


def subset_max(values: list[float], n: int) -> None:
    """In place: ``values[m]`` becomes the maximum over the subsets of ``m``."""
    for bit in range(n):
        step = 1 << bit
        for mask in range(len(values)):
            if mask & step and values[mask ^ step] > values[mask]:
                values[mask] = values[mask ^ step]


def superset_max(values: list[float], n: int) -> None:
    """In place: ``values[m]`` becomes the maximum over the supersets of ``m``."""
    for bit in range(n):
        step = 1 << bit
        for mask in range(len(values)):
            if not mask & step and values[mask | step] > values[mask]:
                values[mask] = values[mask | step]


def restricted_lagrangian(
    gains: Sequence[Sequence[tuple[int, float]]],
    base: Sequence[float],
    lam_cap: Sequence[float],
    n: int,
) -> list[list[float]]:
    """Lagrangian bound per final sharing GPU set, maximised over supersets, per search depth.

    ``gains[i]`` lists the options of the unit at depth ``i`` as ``(mask, gain)`` with
    ``gain = value − Σ_g λ_g · reserve_g`` (the unit's reduced objective); ``base[S]`` is the
    exclusive part beside a sharing part on exactly ``S`` (``-inf``: no plan, e.g. over the
    power budget); ``lam_cap[g] = λ_g · cap_g``. Returns ``tables`` with

        tables[i][S] = max over S' ⊇ S of  base[S'] + Σ_{g ∈ S'} λ_g·cap_g
                                           + Σ_{depth j ≥ i} max(0, max_{o ⊆ S'} gain_o)

    For a node at depth ``i`` whose sharing units use ``U`` with ``resid_g`` MiB still free on
    each used GPU, ``tables[i][U] − Σ_{g ∈ U} λ_g · (cap_g − resid_g)`` bounds what units
    ``i..`` plus the exclusive part can add (weak duality on each final set ``S' ⊇ U``: a
    plan on ``S'`` reserves at most ``resid_g`` on used and ``cap_g`` on other GPUs of
    ``S'``, none outside it). It is never above the unrestricted Lagrangian bound with the
    same ``λ``, and with ``λ = 0`` it is the GPU-set bound.
    """
    neg = -math.inf
    size = 1 << n
    acc = [neg] * size
    for mask in range(size):
        if base[mask] > neg:
            acc[mask] = base[mask] + sum(lam_cap[g] for g in mask_bits(mask))
    tables: list[list[float]] = [[]] * (len(gains) + 1)
    for i in range(len(gains), -1, -1):
        if i < len(gains):
            within = [0.0] * size  # the unit may stay unplaced
            for mask, gain in gains[i]:
                if gain > within[mask]:
                    within[mask] = gain
            subset_max(within, n)
            acc = [a + w if a > neg else neg for a, w in zip(acc, within, strict=True)]
        table = list(acc)
        superset_max(table, n)
        tables[i] = table
    return tables
