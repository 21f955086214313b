"""Per-GPU cap search: which caps to probe, and when to stop.

A search is a small state machine, independent of time and hardware: :meth:`CapSearch.next_cap`
proposes the next cap (``None``: done), :meth:`CapSearch.record` takes the measurement. Its
state is only the list of measurements, so a sweep interrupted at probe *k* resumes by
replaying the journal's measurements into a fresh search.

**Adaptive** (the default) maximises tokens/J among caps that keep throughput T ≥ floor × T₀.
It assumes only that T falls as the cap falls, and, for its bounds, that T(P) is concave
(falls ever faster as the cap drops): true of every class of the physical power model
(:mod:`tuning.model.power`), whose curves bend gradually with no plateau or cliff.

1. Probe the top of the range. The card draws its *natural* power P₀ there; every cap ≥ P₀
   gives the same throughput T₀ and needs no probe.
2. A first guess at ``first_guess_frac`` (85 %) of P₀, between where memory-bound and
   compute-bound curves cross the floor.
3. If tokens/J peaks at a measured point above the lowest feasible one, the next probe is
   the vertex of the parabola through that point and its two neighbours on tokens/J vs P
   (a golden-section step where the parabola is not concave); stop when the vertex cannot
   beat the best point by ``tol_rel``.
4. Otherwise tokens/J still rises at the lowest feasible point L, so the optimum is the
   floor crossing. Under a concave curve chords lie under it between their points and over
   it beyond them, so the crossing lies between the root of the chord through L and a point
   above it (extended down) and the root of the chord from L to the infeasible point under
   it (:meth:`AdaptiveSearch.crossing_w`). The estimate is the quadratic through the three
   points nearest the floor, averaged with the middle of those bounds (a hedge for a kink
   inside the bracket); with nothing infeasible yet, the step down is at most
   ``max_step_frac`` (15 %) of P₀, and on a plateau (a flat chord bounds nothing) the
   distance from the top doubles each probe. The probe goes just above the estimate, so
   that it is feasible if the model is right.
5. Stop when the best measured tokens/J is within ``tol_rel`` (1 %) of the best the bracket
   still allows (L's throughput over the estimated crossing), when the bracket's predicted
   optimum (the floor's throughput at the estimated crossing) beats the best measured
   tokens/J by under ``tol_rel``, or at ``max_probes`` (5, counting the top probe) — the
   objective decides the resolution, not a fixed watt count nor where the cautious probe
   would land. When the probe just above the estimate would save under ``tol_rel`` of L's
   power but the prediction is worth more, the probe goes where it saves ``tol_rel`` (still
   above the estimate). The search is a pure function of its points: resuming replays the
   journal.

**Grid**: every ``step_w`` from the top of the range down to the bottom (the dense reference).

Units: W, tokens/s.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

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
    """Find the cap that maximises tokens/J (above the floor) in a handful of probes.

    A pure function of the recorded points (no hidden state), so a resumed sweep replays
    the journal's measurements and proposes exactly the cap the interrupted one would have.
    See the module docstring for the local model; ``tol_rel``: the tokens/J share a further
    probe must be able to gain (default 1 %: the bar is 1 % of a 5 W grid); ``max_probes``: a
    hard stop, counting the top probe.
    """

    tol_rel: float = 0.01
    max_probes: int = 5
    #: the second probe, as a share of the natural draw: between the floor crossings of
    #: memory-bound (~77 %) and compute-bound (~93 %) curves of tuning/model/power.yaml
    #: (estimate, from the simulated 3090/A100/L40S sweeps at floor 0.95)
    first_guess_frac: float = 0.85
    #: the longest step down from the lowest feasible point while nothing is infeasible, as a
    #: share of the natural draw (estimate: the old decode sweep of presets.yaml is flat from
    #: 320 W to 250 W, 22 %, then falls off a cliff)
    max_step_frac: float = 0.15

    def tolerance_w(self) -> float:
        """The cap resolution that matters: ``tol_rel`` of the natural draw, at least 2 W."""
        natural = self.natural_draw_w or self.constraints.max_w
        return max(2.0, self.tol_rel * natural)

    def first_guess_w(self) -> float:
        """Where the second probe goes, from the natural-draw probe alone. Units: W."""
        natural = self.natural_draw_w or self.constraints.max_w
        return self.first_guess_frac * natural

    def _collapsed(self) -> list[ProbeMeasurement]:
        """Points by cap, those at or above the natural draw merged into the top probe."""
        natural_cap = self.natural_cap_w()
        assert natural_cap is not None
        top = self.uncapped
        below = [p for p in self.points if p.cap_w < natural_cap and p is not top]
        return sorted(below, key=lambda p: p.cap_w) + ([top] if top else [])

    @staticmethod
    def _draw_w(p: ProbeMeasurement) -> float:
        """The power a point stands for: its draw, never above its cap. Units: W."""
        return min(p.power_w, float(p.cap_w))

    def crossing_w(self, pts: list[ProbeMeasurement]) -> tuple[float, float, float]:
        """(lower bound, estimate, upper bound) of the draw where T falls to the floor, W.

        ``pts`` by cap, ascending. Under a concave T(P) (a curve that falls ever faster as the
        cap drops, as every class of tuning/model/power.yaml does) a chord lies under the
        curve between its points and over it beyond them: the chord through the lowest
        feasible point L and the point above it, extended down, crosses the floor *below*
        the true crossing (lower bound); the chord from L to the infeasible point under it
        crosses it *above* (upper bound). The estimate is the root of the quadratic through
        the three points nearest the floor when it lies inside, else the middle.
        """
        top = self.uncapped
        assert top is not None
        floor_t = self.floor * top.throughput_tps
        feasible = [p for p in pts if p.throughput_tps >= floor_t]
        low = feasible[0]
        above = [p for p in pts if p.cap_w > low.cap_w]
        below = [p for p in pts if p.cap_w < low.cap_w]
        x_l = self._draw_w(low)
        lo_w = float(self.min_cap_w)
        flat = not above
        if above:
            # the nearest point above that is two tolerances away: over a shorter base the
            # measurement noise swamps the slope
            far = [p for p in above if self._draw_w(p) >= x_l + 2 * self.tolerance_w()]
            up = far[0] if far else above[-1]
            root = _line_root(
                [x_l, self._draw_w(up)],
                [low.throughput_tps - floor_t, up.throughput_tps - floor_t],
            )
            if root is not None and root < x_l:  # a flat chord never reaches the floor
                lo_w = max(lo_w, root)
            else:
                flat = True
        hi_w = x_l
        if below:
            h = below[-1]
            lo_w = max(lo_w, self._draw_w(h))
            root = _line_root(
                [self._draw_w(h), x_l], [h.throughput_tps - floor_t, low.throughput_tps - floor_t]
            )
            if root is not None:
                hi_w = min(hi_w, root)
        lo_w = min(lo_w, hi_w)
        near = sorted(pts, key=lambda p: abs(p.throughput_tps - floor_t))[:3]
        quad = (
            _quadratic_root(
                [self._draw_w(p) for p in near], [p.throughput_tps - floor_t for p in near]
            )
            if len(near) >= 3 and below
            else None
        )
        est = quad if quad is not None and lo_w <= quad <= hi_w else (lo_w + hi_w) / 2
        if not below:
            # nothing infeasible yet: step down at most max_step_frac of the natural draw (a
            # plateau's flat chord bounds nothing, and a cliff may follow it)
            natural = self.natural_draw_w or self.constraints.max_w
            step_w = x_l - self.max_step_frac * natural
            # still on a plateau: double the distance from the top each time, so a card flat
            # to its minimum cap is found in a few probes
            doubled_w = 2 * x_l - self._draw_w(top)
            est = max(lo_w, min(step_w, doubled_w)) if flat else max(est, step_w)
        elif quad is not None and lo_w <= quad <= hi_w:
            # the secant (hi_w) is exact on a straight curve and the quadratic on a smooth one;
            # half-way hedges a kink (a plateau ending in a cliff) inside the bracket
            est = (quad + (lo_w + hi_w) / 2) / 2
        else:
            # two points around the floor: the secant, exact on a straight curve and
            # feasible under a concave one
            est = hi_w
        return lo_w, est, hi_w

    def plan(self) -> tuple[int | None, str]:
        """(next cap or None, why) — the whole decision, for logs and tests."""
        if not self.points:
            return self.max_cap_w, "natural draw"
        if len(self.points) >= self.max_probes:
            return None, "probe limit"
        natural_cap = self.natural_cap_w()
        top = self.uncapped
        assert natural_cap is not None
        assert top is not None
        tol_w = self.tolerance_w()
        if natural_cap - self.min_cap_w <= tol_w:
            return None, "the card never draws enough for a cap to matter"
        if len(self.points) == 1:
            return self._clamp(self.first_guess_w()), "first guess"
        floor_t = self.floor * top.throughput_tps
        pts = self._collapsed()
        feasible = [p for p in pts if p.throughput_tps >= floor_t and p.power_w > 0]
        best = max(feasible, key=lambda p: p.tokens_per_joule)
        best_e = best.tokens_per_joule
        lowest = feasible[0]
        probed = {int(p.cap_w) for p in self.points}
        if best is not lowest:
            # tokens/J peaks above the floor: a parabola through the best point and its
            # neighbours (golden-section step where the parabola says nothing useful)
            i = pts.index(best)
            lo_p, hi_p = pts[i - 1], pts[i + 1] if i + 1 < len(pts) else None
            if hi_p is None:
                return None, "tokens/J peaks at the natural draw"
            xs = [self._draw_w(p) for p in (lo_p, best, hi_p)]
            es = [p.tokens_per_joule for p in (lo_p, best, hi_p)]
            vertex = _parabola_vertex(xs, es)
            if vertex is not None and vertex[1] <= best_e / (1 - self.tol_rel):
                return None, "no cap left can gain tol_rel"
            a, b = (
                (lo_p.cap_w, best.cap_w)
                if xs[1] - xs[0] > xs[2] - xs[1]
                else (
                    best.cap_w,
                    hi_p.cap_w,
                )
            )
            target = vertex[0] if vertex is not None and xs[0] < vertex[0] < xs[2] else None
            if target is None:
                target = a + GOLDEN * (b - a) if a < best.cap_w else b - GOLDEN * (b - a)
            cap = self._inside(target, lo_p.cap_w, hi_p.cap_w, probed)
            return (cap, "parabola on tokens/J") if cap else (None, "bracket narrower than a watt")
        # tokens/J still rises at the lowest feasible point: the optimum is the floor crossing
        if lowest.cap_w <= self.min_cap_w:
            return None, "feasible down to the minimum cap"
        below = [p for p in pts if p.cap_w < lowest.cap_w]
        lo_w, est_w, _hi_w = self.crossing_w(pts)
        # no cap between the crossing and L gives more tokens/s than L (T falls with the cap)
        bound_e = lowest.throughput_tps / max(est_w if below else lo_w, 1e-9)
        if best_e >= (1 - self.tol_rel) * bound_e:
            return None, "no cap left can gain tol_rel"
        # just above the estimate, so the probe is feasible if the model is right
        lo_cap = below[-1].cap_w if below else self.min_cap_w - 1
        # (the minimum cap itself when the estimate is within a tolerance of it)
        target_w = self.min_cap_w if est_w - self.min_cap_w < tol_w else est_w + tol_w / 2
        cap = self._inside(target_w, lo_cap, lowest.cap_w, probed)
        if cap is None:
            return None, "bracket narrower than a watt"
        if self._draw_w(lowest) < (1 + self.tol_rel) * cap:
            # the probe just above the estimate saves under tol_rel of L's draw. Whether one
            # more probe is worth it is the objective's call, not the probe placement's: the
            # bracket predicts tokens/J floor_t / est_w at the crossing; under tol_rel over the
            # best measured, stop
            if floor_t / max(est_w, 1e-9) < (1 + self.tol_rel) * best_e:
                return None, "the bracket's predicted gain is under tol_rel"
            # else probe where the saving is tol_rel: above the estimate, so feasible if the
            # model is right, and worth a probe if it is
            gain_cap = math.floor(self._draw_w(lowest) / (1 + self.tol_rel))
            cap = self._inside(max(gain_cap, est_w), lo_cap, lowest.cap_w, probed)
            if cap is None:
                return None, "bracket narrower than a watt"
        return cap, "floor crossing"

    def _inside(
        self, target_w: float, lo_cap: float, hi_cap: float, probed: set[int]
    ) -> int | None:
        """``target_w`` as a whole-watt cap strictly inside (lo_cap, hi_cap), unprobed."""
        cap = self._clamp(target_w)
        assert cap is not None
        cap = min(max(cap, math.floor(lo_cap) + 1), math.ceil(hi_cap) - 1)
        if cap in probed or not lo_cap < cap < hi_cap:
            return None
        return cap

    def _clamp(self, proposal_w: float) -> int | None:
        natural_cap = self.natural_cap_w()
        assert natural_cap is not None
        return max(self.min_cap_w, min(natural_cap - 1, math.ceil(proposal_w)))

    def next_cap(self) -> int | None:
        return self.plan()[0]


#: the golden-section step, (3 - √5) / 2 of a bracket
GOLDEN = (3.0 - math.sqrt(5.0)) / 2.0


def _line_root(xs: list[float], ys: list[float]) -> float | None:
    """x where the line through two points crosses zero; None if they are level."""
    (x0, x1), (y0, y1) = xs, ys
    if y1 == y0:
        return None
    return x0 - y0 * (x1 - x0) / (y1 - y0)


def _quadratic_root(xs: list[float], ys: list[float]) -> float | None:
    """The root of the quadratic through three points nearest the middle of their span."""
    if len(set(xs)) < 3:
        return None
    a, b, c = (float(v) for v in np.polyfit(xs, ys, 2))
    if abs(a) < 1e-12:
        return -c / b if b else None
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    roots = [(-b + s * math.sqrt(disc)) / (2 * a) for s in (1.0, -1.0)]
    mid = (min(xs) + max(xs)) / 2
    return min(roots, key=lambda r: abs(r - mid))


def _parabola_vertex(xs: list[float], es: list[float]) -> tuple[float, float] | None:
    """(x, value) of the maximum of the parabola through three points, None if not concave."""
    if len(set(xs)) < 3:
        return None
    a, b, c = (float(v) for v in np.polyfit(xs, es, 2))
    if a >= 0:
        return None
    x = -b / (2 * a)
    return x, c - b * b / (4 * a)


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
