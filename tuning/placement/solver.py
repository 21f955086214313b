"""The exact solver: a DP over exclusive units, then a branch and bound over sharing units.

See :func:`solve` (the decomposition) and :func:`_search_sharing` (the branch and bound); its
two admissible bounds come from :mod:`tuning.placement.bounds` and the GPU-set tables built
here. Checked against :func:`tuning.placement.oracle.brute_force`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from tuning.placement.bounds import (
    SUM_TOL,
    capacity_duals,
    priority_sums,
    restricted_lagrangian,
    subset_max,
    superset_max,
)
from tuning.placement.problem import Option, Problem
from tuning.placement.scoring import EPS, Key, better, mask_bits

#: Nodes the LP-ordered dive of :func:`_search_sharing` may visit before the value-ordered
#: search takes over with its incumbent. Any value keeps the search exact; this one (about
#: 0.1 s) found the best placed priority early on the bench's hardest 8 × 8 draws.
_DIVE_NODES = 20_000


_Row = tuple[int, int, tuple[int, ...], tuple[float, ...], float]  # j, mask, bits, reserve, value


def _packing_key(share: Mapping[int, float], row: _Row) -> tuple[float, float, int]:
    """The dive's row order: most LP packing weight first, then value, then option index."""
    return (-share[row[0]], -row[4], row[0])


@dataclass(frozen=True)
class Solution:
    """The best assignment: per unit an option index or ``None`` (unplaced), and its key."""

    choice: tuple[int | None, ...]
    placed_priority: float
    score: float

    @property
    def key(self) -> Key:
        return (self.placed_priority, self.score)


def solve(problem: Problem, *, exclude: Mapping[int, int] | None = None) -> Solution | None:
    """Exact optimum of ``problem``; ``None`` when no plan meets the power budget.

    ``exclude`` maps a unit position to a GPU mask that unit may not use (used to find the
    best alternative plan).

    Exclusive units never touch a GPU another unit uses, so a plan splits into an exclusive
    part on GPU set ``E`` and a sharing part whose units cover ``S`` with ``E ∩ S = ∅``;
    the two interact only through that and the power budget of ``E ∪ S``:

    1. a DP over exclusive units gives ``f[E]``, the best exclusive key using exactly ``E``
       (≤ 3^n transitions per unit: each option times the subsets of its complement);
    2. ``F[S]`` = best ``f[E]`` with ``E ∩ S = ∅`` and ``power_ok[E | S]`` (3^n pairs);
    3. a branch and bound over sharing units (priority first, few options first) with the
       admissible bound ``max over S' ⊇ S`` of ``F[S']`` plus every remaining unit's best
       option inside ``S'`` (VRAM sharing relaxed); identical units (replicas) take options
       in non-decreasing order, which drops their permutations.
    """
    excluded = exclude or {}
    n = problem.n
    full = (1 << n) - 1
    size = 1 << n
    power_ok = problem.power_ok
    count = len(problem.units)
    opts: list[tuple[tuple[int, Option], ...]] = [
        tuple(
            (j, o)
            for j, o in enumerate(problem.options[u])
            if excluded.get(u) is None or o.mask != excluded[u]
        )
        for u in range(count)
    ]
    exclusive = [u for u in range(count) if opts[u] and not problem.units[u].model.allow_sharing]
    sharing = [u for u in range(count) if opts[u] and problem.units[u].model.allow_sharing]

    # 1. exclusive units: f[E] over exactly-used masks, with back pointers per unit
    f: list[Key | None] = [None] * size
    f[0] = (0.0, 0.0)
    backs: list[list[tuple[int, int] | None]] = []
    for u in exclusive:
        priority = problem.units[u].model.priority
        new = list(f)
        back: list[tuple[int, int] | None] = [None] * size
        for j, option in opts[u]:
            mask = option.mask
            comp = full & ~mask
            sub = comp
            while True:
                prev = f[sub]
                if prev is not None:
                    key = (prev[0] + priority, prev[1] + option.value)
                    target = sub | mask
                    held = new[target]
                    if held is None or better(key, held):
                        new[target] = key
                        back[target] = (sub, j)
                if not sub:
                    break
                sub = (sub - 1) & comp
        f = new
        backs.append(back)

    # 2. F[S]: best exclusive part beside a sharing part that uses exactly S
    best_excl: list[Key | None] = [None] * size
    best_excl_mask = [0] * size
    for shared_mask in range(size):
        comp = full & ~shared_mask
        sub = comp
        top: Key | None = None
        top_mask = 0
        while True:
            part = f[sub]
            if (
                part is not None
                and power_ok[sub | shared_mask]
                and (top is None or better(part, top))
            ):
                top, top_mask = part, sub
            if not sub:
                break
            sub = (sub - 1) & comp
        best_excl[shared_mask] = top
        best_excl_mask[shared_mask] = top_mask

    choice: list[int | None] = [None] * count
    share_choice = _search_sharing(problem, sharing, exclusive, opts, best_excl, n)
    if share_choice is None:
        return None
    total, picks, used = share_choice
    for u, j in picks.items():
        choice[u] = j
    mask = best_excl_mask[used]
    for u, back in zip(reversed(exclusive), reversed(backs), strict=True):
        step = back[mask]
        if step is not None:
            mask, choice[u] = step
    return Solution(choice=tuple(choice), placed_priority=total[0], score=total[1])


def _search_sharing(
    problem: Problem,
    units: Sequence[int],
    exclusive: Sequence[int],
    opts: Sequence[tuple[tuple[int, Option], ...]],
    best_excl: Sequence[Key | None],
    n: int,
) -> tuple[Key, dict[int, int], int] | None:
    """Branch and bound over the sharing units on top of ``best_excl`` (see :func:`solve`).

    Two admissible bounds, taken componentwise (placed priority, score), the smaller wins:

    * *sets*: the best exclusive part beside any final sharing GPU set ``S' ⊇ S`` plus each
      remaining sharing unit's best option inside ``S'`` (exact on GPU sets, VRAM relaxed);
    * *VRAM on sets* (Lagrangian, :func:`~tuning.placement.bounds.restricted_lagrangian`):
      every GPU ``g`` can still take at most ``resid_g`` MiB of reservations, so for
      multipliers ``λ ≥ 0`` the remaining units add at most ``Σ_units max(0, max_option
      (value − Σ_g λ_g·reserve_g)) + Σ_g λ_g·resid_g``, taken per final set ``S' ⊇ S`` (only
      options inside ``S'``, only its GPUs' residuals, the exact exclusive part beside it)
      and maximised over ``S'``. The power budget caps which ``S'`` exist, so this is far
      tighter than either relaxation alone. ``λ`` are the capacity duals of the LP
      relaxation (HiGHS) at the root; a node subtracts ``Σ_{g ∈ S} λ_g·(cap_g − resid_g)``,
      kept incrementally. Its priority part rounds down to the largest subset sum of the
      open units' priorities (placed priority takes no other value), so a fractional 32.7
      over an incumbent of 32 defers to the score bound.

    Returns the best total key, each placed sharing unit's option index and the GPUs the
    sharing units use; ``None`` when no combination leaves a plan inside the power budget.
    """
    size = 1 << n
    usable = tuple(g.usable_mib for g in problem.gpus)
    signature = {
        u: (
            problem.units[u].model.priority,
            tuple((o.mask, o.tp, o.pp, o.reserve_mib, o.value) for _, o in opts[u]),
        )
        for u in units
    }
    first_seen: dict[object, int] = {}
    for u in units:
        first_seen.setdefault(signature[u], u)
    # highest priority first; fewest options first; replicas (equal signatures) adjacent
    order = sorted(
        units,
        key=lambda u: (
            -problem.units[u].model.priority,
            len(opts[u]),
            first_seen[signature[u]],
            u,
        ),
    )
    k = len(order)
    twin = [i > 0 and signature[order[i]] == signature[order[i - 1]] for i in range(k)]
    neg = -math.inf

    # bound_p[i][S], bound_s[i][S]: componentwise upper bounds on what units i.. plus the
    # exclusive part can add once the sharing part's GPUs include S (a componentwise bound is
    # safe under the tolerant lexicographic comparison of keys)
    add_p = [0.0] * size
    add_s = [0.0] * size
    bound_p: list[list[float]] = [[]] * (k + 1)
    bound_s: list[list[float]] = [[]] * (k + 1)
    for i in range(k, -1, -1):
        if i < k:
            u = order[i]
            within = [neg] * size
            for _, option in opts[u]:
                within[option.mask] = max(within[option.mask], option.value)
            subset_max(within, n)
            priority = problem.units[u].model.priority
            for mask in range(size):
                if within[mask] > neg:
                    add_p[mask] += priority
                    add_s[mask] += max(within[mask], 0.0)
        bp = [neg] * size
        bs = [neg] * size
        for mask in range(size):
            key = best_excl[mask]
            if key is not None:
                bp[mask] = key[0] + add_p[mask]
                bs[mask] = key[1] + add_s[mask]
        superset_max(bp, n)
        superset_max(bs, n)
        bound_p[i] = bp
        bound_s[i] = bs

    # VRAM bound: per-GPU capacity of all future reservations, LP duals as multipliers
    cap = [
        max(
            [usable[g]]
            + [
                o.reserve_mib[slot]
                for u in units
                for _, o in opts[u]
                for slot, pos in enumerate(mask_bits(o.mask))
                if pos == g
            ]
        )
        for g in range(n)
    ]
    relaxation = capacity_duals(problem, units, exclusive, opts, cap, n)
    lam_p, lam_s = relaxation.priority, relaxation.score
    use_lagrange = any(lam_p) or any(lam_s)

    def gains(i: int, lam: Sequence[float], use_value: bool) -> list[tuple[int, float]]:
        priority = problem.units[order[i]].model.priority
        rows = []
        for _, o in opts[order[i]]:
            gain = o.value if use_value else priority
            for slot, pos in enumerate(mask_bits(o.mask)):
                gain -= lam[pos] * o.reserve_mib[slot]
            rows.append((o.mask, gain))
        return rows

    # lag_p[i][S], lag_s[i][S]: the Lagrangian bound restricted to final sharing sets S' ⊇ S
    # (bounds.restricted_lagrangian); a node subtracts what its reservations already took
    if use_lagrange:
        lag_p = restricted_lagrangian(
            [gains(i, lam_p, False) for i in range(k)],
            [neg if key is None else key[0] for key in best_excl],
            [lam_p[g] * cap[g] for g in range(n)],
            n,
        )
        lag_s = restricted_lagrangian(
            [gains(i, lam_s, True) for i in range(k)],
            [neg if key is None else key[1] for key in best_excl],
            [lam_s[g] * cap[g] for g in range(n)],
            n,
        )
    else:
        lag_p, lag_s = bound_p, bound_s
    # Placed priority only takes subset sums of the units' priorities, so a fractional
    # Lagrangian bound rounds down to the largest such sum below it: with integer priorities
    # a bound of 32.7 becomes 32, which ties an incumbent at 32 and lets the score decide.
    sums_from = priority_sums(
        [problem.units[u].model.priority for u in order],
        [problem.units[u].model.priority for u in exclusive],
    )

    prepared = [
        [(j, o.mask, tuple(mask_bits(o.mask)), o.reserve_mib, o.value) for j, o in opts[order[i]]]
        for i in range(k)
    ]
    priorities = [problem.units[u].model.priority for u in order]
    reserved = [0.0] * n
    picked: list[int] = [-1] * k  # index into prepared[i]; -1: unplaced
    best: list[Any] = [None, None, 0]  # key, picks, used mask

    def promising(
        i: int, used: int, add_p: float, add_s: float, taken_p: float, taken_s: float
    ) -> bool:
        """Whether a node at depth ``i`` on ``used`` whose path earned ``(add_p, add_s)`` can
        still beat the incumbent; ``taken_*``: ``Σ_{g ∈ used} λ_g · (cap_g − resid_g)``."""
        incumbent = best[0]
        if incumbent is None:
            return True
        rest_p = min(bound_p[i][used], lag_p[i][used] - taken_p)
        rest_s = min(bound_s[i][used], lag_s[i][used] - taken_s)
        sums = sums_from[i]
        if sums is not None:
            at = bisect_right(sums, rest_p + SUM_TOL)
            rest_p = sums[at - 1] if at else 0.0
        return better((add_p + rest_p, add_s + rest_s), incumbent)

    rows_of = [prepared]  # the option order the search takes (see the dive below)
    budget = [math.inf]  # nodes the search may still visit

    def dfs(i: int, used: int, cur_p: float, cur_s: float, taken_p: float, taken_s: float) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            return
        if i == k:
            tail = best_excl[used]
            if tail is None:
                return
            key = (cur_p + tail[0], cur_s + tail[1])
            incumbent = best[0]
            if incumbent is None or better(key, incumbent):
                best[0] = key
                best[1] = {order[x]: prepared[x][picked[x]][0] for x in range(k) if picked[x] >= 0}
                best[2] = used
            return
        start = 0
        if twin[i]:
            if picked[i - 1] < 0:
                # a twin after an unplaced one stays unplaced
                dfs(i + 1, used, cur_p, cur_s, taken_p, taken_s)
                return
            start = picked[i - 1]
        priority = priorities[i]
        next_p = bound_p[i + 1]
        next_s = bound_s[i + 1]
        rows = rows_of[0][i]
        incumbent = best[0]
        for x in range(start, len(rows)):
            _, mask, bits, reserve, value = rows[x]
            after = used | mask
            if next_p[after] == neg:
                continue
            if incumbent is not None:
                # inlined ``not better(sets bound, incumbent)``: this loop is the hot spot
                bound_here = cur_p + priority + next_p[after]
                if bound_here < incumbent[0] - EPS or (
                    bound_here <= incumbent[0] + EPS
                    and cur_s + value + next_s[after] <= incumbent[1] + EPS
                ):
                    continue
            fits = True
            for slot, pos in enumerate(bits):
                # alone on a GPU the estimate already fits; reservations add up only once a
                # second sharing unit arrives
                if used >> pos & 1 and reserved[pos] + reserve[slot] > usable[pos] + EPS:
                    fits = False
                    break
            if not fits:
                continue
            child_p = taken_p
            child_s = taken_s
            if use_lagrange:
                for slot, pos in enumerate(bits):
                    # what this reservation takes from the GPU's residual capacity
                    if used >> pos & 1:
                        free = usable[pos] - reserved[pos]
                        left = free - reserve[slot]
                        lost = (free if free > 0 else 0.0) - (left if left > 0 else 0.0)
                    else:
                        left = usable[pos] - reserve[slot]
                        lost = cap[pos] - (left if left > 0 else 0.0)
                    child_p += lam_p[pos] * lost
                    child_s += lam_s[pos] * lost
                if not promising(i + 1, after, cur_p + priority, cur_s + value, child_p, child_s):
                    continue
            for slot, pos in enumerate(bits):
                reserved[pos] += reserve[slot]
            picked[i] = x
            dfs(i + 1, after, cur_p + priority, cur_s + value, child_p, child_s)
            picked[i] = -1
            for slot, pos in enumerate(bits):
                reserved[pos] -= reserve[slot]
            incumbent = best[0]
        if bound_p[i + 1][used] > neg and promising(i + 1, used, cur_p, cur_s, taken_p, taken_s):
            dfs(i + 1, used, cur_p, cur_s, taken_p, taken_s)

    finished = False  # the dive searched everything
    if bound_p[0][0] > neg and relaxation.placing:
        # The dive: placed priority decides first, and rows in falling value reach the plans
        # that place the most only late when VRAM is tight (sharing units spread over the
        # GPUs an exclusive unit needs). The same search with each unit's options in the
        # order the priority LP packs them finds those plans early; after _DIVE_NODES nodes
        # it hands its incumbent to the value-ordered search, and one that ends sooner has
        # searched everything (same bounds, another order) and is the answer.
        # Replicas (twins) take rows in non-decreasing index, so they must share one order:
        # that of the LP's packing summed over the replicas.
        placing = relaxation.placing
        dive_rows: list[list[_Row]] = []
        for i, rows in enumerate(prepared):
            if twin[i]:
                dive_rows.append(dive_rows[-1])
                continue
            group = [order[i]]
            while len(group) + i < k and twin[len(group) + i]:
                group.append(order[len(group) + i])
            share = {row[0]: sum(placing.get((u, row[0]), 0.0) for u in group) for row in rows}
            dive_rows.append(sorted(rows, key=partial(_packing_key, share)))
        rows_of[0] = dive_rows
        budget[0] = _DIVE_NODES
        dfs(0, 0, 0.0, 0.0, 0.0, 0.0)
        finished = budget[0] >= 0
        rows_of[0] = prepared
        budget[0] = math.inf
    if bound_p[0][0] > neg and not finished:
        dfs(0, 0, 0.0, 0.0, 0.0, 0.0)
    if best[0] is None:
        return None
    return best[0], best[1], best[2]
