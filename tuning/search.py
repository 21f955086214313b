"""Per-GPU cap search: which caps to probe, and when to stop.

A search is a small state machine, independent of time and hardware: :meth:`CapSearch.next_cap`
proposes the next cap (``None``: done), :meth:`CapSearch.record` takes the measurement. Its
state is only the list of measurements, so a sweep interrupted at probe *k* resumes by
replaying the journal's measurements into a fresh search.

**Adaptive** (the default), for throughput T(c) rising with the cap c (W):

1. Probe the top of the range. The card draws its *natural* power P₀ there; every cap ≥ P₀
   gives the same throughput T₀ and needs no probe.
2. The knee c* is the lowest cap with T(c*) ≥ floor × T₀. Throughput is concave in the cap
   for the workload shapes GPUs show (memory-bound decode: flat, then a cliff; compute-bound
   prefill: a power law with exponent < 1), which gives two-sided bounds from the points
   already measured:

   * the chord between the highest infeasible and the lowest feasible point lies *below* the
     curve, so where it crosses the target is an **upper bound** on c*;
   * the line through two feasible (or two infeasible) points, extended beyond them, lies
     *above* the curve, so where it crosses the target is a **lower bound**.

   Probe the upper bound (it is feasible, so it improves the answer); when that fails to
   halve the bracket, bisect (the safeguard that bounds the worst case). Stop when the
   bounds are within ``tol_w`` or the next probe would gain less than ``tol_w``.
3. When the whole range is feasible, the card's best tokens/J is at or near the bottom; the
   bottom is probed and the allocation picks the best measured point.

**Grid**: every ``step_w`` from the top of the range down to the bottom (the dense reference).

Units: W, tokens/s.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from tuning.backends.base import PowerConstraints
from tuning.budget import CapOption
from tuning.telemetry import ProbeMeasurement


@dataclass
class CapSearch(ABC):
    """Propose caps for one GPU; ``floor``: the throughput share of uncapped to stay above."""

    constraints: PowerConstraints
    floor: float = 0.95
    points: list[ProbeMeasurement] = field(default_factory=list)

    @abstractmethod
    def next_cap(self) -> int | None:
        """The next cap to probe in whole watts, or ``None`` when the search is done."""

    def record(self, measurement: ProbeMeasurement) -> None:
        self.points.append(measurement)

    @property
    def min_cap_w(self) -> int:
        return math.ceil(self.constraints.min_w)

    @property
    def max_cap_w(self) -> int:
        return math.floor(self.constraints.max_w)

    @property
    def uncapped(self) -> ProbeMeasurement | None:
        """The probe at the top of the range (the natural draw), once measured."""
        top = [p for p in self.points if p.cap_w >= self.max_cap_w]
        return top[0] if top else None

    @property
    def natural_draw_w(self) -> float | None:
        top = self.uncapped
        return top.power_w if top else None

    @property
    def uncapped_tps(self) -> float | None:
        top = self.uncapped
        return top.throughput_tps if top else None

    def natural_cap_w(self) -> int | None:
        """The lowest cap that does not bind: natural draw plus 3 % for the 1 s average's jitter."""
        natural = self.natural_draw_w
        if natural is None:
            return None
        return min(self.max_cap_w, max(self.min_cap_w, math.ceil(natural * 1.03)))

    def options(self) -> list[CapOption]:
        """Every measured point as an allocation option, plus the free natural-draw cap."""
        opts = {
            int(p.cap_w): CapOption(int(p.cap_w), p.throughput_tps, p.power_w) for p in self.points
        }
        natural_cap = self.natural_cap_w()
        top = self.uncapped
        if natural_cap is not None and top is not None and natural_cap not in opts:
            # caps at or above the natural draw do not bind: same throughput, same power
            opts[natural_cap] = CapOption(natural_cap, top.throughput_tps, top.power_w)
        return sorted(opts.values(), key=lambda o: o.cap_w)


@dataclass
class GridSearch(CapSearch):
    """Every ``step_w`` from the top of the range down to the bottom."""

    step_w: int = 5

    def caps(self) -> list[int]:
        caps = list(range(self.max_cap_w, self.min_cap_w - 1, -self.step_w))
        if caps[-1] != self.min_cap_w:
            caps.append(self.min_cap_w)
        return caps

    def next_cap(self) -> int | None:
        done = {int(p.cap_w) for p in self.points}
        for cap in self.caps():
            if cap not in done:
                return cap
        return None


@dataclass
class AdaptiveSearch(CapSearch):
    """Find the throughput knee with a handful of probes (see the module docstring).

    ``tol_w``: the answer's resolution (default 1.5 % of the natural draw, at least 2 W);
    ``max_probes``: a hard stop, counting the uncapped probe.
    """

    tol_w: float | None = None
    max_probes: int = 7
    #: how the last non-top proposal was made, to apply the bisection safeguard
    _last_kind: str = field(default="", repr=False)
    _last_width: float = field(default=0.0, repr=False)
    _downs: int = field(default=0, repr=False)
    first_step: float = 0.8
    down_step: float = 0.1

    def tolerance_w(self) -> float:
        if self.tol_w is not None:
            return self.tol_w
        natural = self.natural_draw_w or self.constraints.max_w
        return max(2.0, 0.015 * natural)

    def target_tps(self) -> float:
        top = self.uncapped_tps
        return self.floor * top if top is not None else 0.0

    def bracket(self) -> tuple[float, float, float | None, float]:
        """(lower bound, upper bound, highest infeasible cap, lowest feasible cap) on the knee."""
        target = self.target_tps()
        natural_cap = self.natural_cap_w()
        assert natural_cap is not None
        # points above the natural draw all read T₀: keep one, at the natural cap
        pts = sorted(
            {
                min(int(p.cap_w), natural_cap): p
                for p in sorted(self.points, key=lambda p: -p.cap_w)
            }.items()
        )
        feasible = [(c, p.throughput_tps) for c, p in pts if p.throughput_tps >= target]
        infeasible = [(c, p.throughput_tps) for c, p in pts if p.throughput_tps < target]
        hi_c, hi_t = feasible[0] if feasible else (natural_cap, target)
        lo = infeasible[-1] if infeasible else None
        lower = float(lo[0]) if lo else float(self.min_cap_w)
        upper = float(hi_c)
        min_sep = max(3.0, 0.03 * natural_cap)
        # extension through the two lowest feasible points: lies above a concave curve
        if len(feasible) >= 2:
            (c1, t1), (c2, t2) = feasible[0], feasible[1]
            if c2 - c1 >= min_sep and t2 > t1:
                lower = max(lower, c1 - (t1 - target) * (c2 - c1) / (t2 - t1))
        # extension through the two highest infeasible points, rightwards
        if len(infeasible) >= 2:
            (c1, t1), (c2, t2) = infeasible[-2], infeasible[-1]
            if c2 - c1 >= min_sep and t2 > t1:
                lower = max(lower, c2 + (target - t2) * (c2 - c1) / (t2 - t1))
        # chord between the bracket ends: lies below the curve
        if lo is not None and hi_t > lo[1]:
            chord = lo[0] + (target - lo[1]) * (hi_c - lo[0]) / (hi_t - lo[1])
            upper = min(upper, chord)
        lower = min(lower, upper)
        return lower, upper, (float(lo[0]) if lo else None), float(hi_c)

    def next_cap(self) -> int | None:
        if not self.points:
            return self.max_cap_w
        if len(self.points) >= self.max_probes:
            return None
        natural_cap = self.natural_cap_w()
        assert natural_cap is not None
        tol = self.tolerance_w()
        if natural_cap - self.min_cap_w <= tol:
            return None  # the card never draws enough for a cap to matter
        lower, upper, lo, hi = self.bracket()
        done = {int(p.cap_w) for p in self.points}
        if hi <= self.min_cap_w:
            return None  # the whole range is feasible and the bottom is measured
        converged = upper - lower <= tol
        if converged and hi - upper <= tol:
            return None
        width = (hi - lo) if lo is not None else (hi - self.min_cap_w)
        if converged:
            # the knee is pinned but not yet measured: measure just above it
            proposal, kind = upper + tol / 4, "final"
        elif len(self.points) == 1:
            # memory-bound knees sit at 55-80 % of TDP, compute-bound ones near the top:
            # 80 % of the natural draw splits the two families with one probe
            proposal, kind = self.first_step * hi, "first"
        elif lo is None:
            # everything measured is feasible: step down (further each time) to bracket the knee
            step = self.down_step * natural_cap * 2 ** (self._downs)
            self._downs += 1
            proposal, kind = max(float(self.min_cap_w), lower, hi - step), "down"
        elif self._last_kind == "upper" and width > 0.5 * self._last_width:
            proposal, kind = (lower + upper) / 2, "bisect"
        else:
            proposal, kind = upper, "upper"
        cap = max(self.min_cap_w, min(natural_cap, math.ceil(proposal)))
        if hi - cap < tol / 2 or cap in done:
            return None  # the probe could not improve the answer by a meaningful amount
        self._last_kind, self._last_width = kind, width
        return cap


def make_search(
    strategy: str,
    constraints: PowerConstraints,
    *,
    floor: float,
    step_w: int = 5,
) -> CapSearch:
    """``strategy``: ``adaptive`` or ``grid``."""
    if strategy == "grid":
        return GridSearch(constraints, floor=floor, step_w=step_w)
    if strategy == "adaptive":
        return AdaptiveSearch(constraints, floor=floor)
    raise ValueError(f"unknown strategy {strategy!r}; choose adaptive or grid")
