"""Per-GPU cap search: which caps to probe, and when to stop.

A search is a small state machine, independent of time and hardware: :meth:`CapSearch.next_cap`
proposes the next cap (``None``: done), :meth:`CapSearch.record` takes the measurement. Its
state is only the list of measurements, so a sweep interrupted at probe *k* resumes by
replaying the journal's measurements into a fresh search.

**Adaptive** (the default) maximises tokens/J among caps that keep throughput T ≥ floor × T₀:

1. Probe the top of the range. The card draws its *natural* power P₀ there; every cap ≥ P₀
   gives the same throughput T₀ and needs no probe. A card that stays under its maximum
   cap is memory-bound (decode: a plateau, then a cliff near 75 % of P₀); one that draws its
   cap is compute-bound or batched.
2. A first guess from that alone: 72 % of P₀ for memory-bound cards (just under the
   plateau's end, so the probe lands on the cliff and its throughput says how far the knee
   is), 80 % for power-limited ones.
3. Under the lowest plateau point (T ≥ 99 % of T₀) the curve is modelled locally as a power
   law T = T_low·(P/P_low)^γ, γ measured from the two highest points under the plateau (a
   prior until there are two). tokens/J ∝ P^(γ−1) there, so for γ > 1 (a cliff) the optimum
   is the knee P_low·(T₀/T_low)^(1/γ) and for γ < 1 the floor crossing. The next probe goes
   just above that estimate (so it is feasible), clamped inside the bracket.
4. Stop when the best measured tokens/J is within ``tol_rel`` (1.5 %) of the best any cap
   could reach over the γ the data still allow (for a cliff: the knee's lower bound with
   the steepest believable γ) — the objective decides the resolution, not a fixed watt
   count. The search is a pure function of its points: resuming replays the journal.

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
    """Find the cap that maximises tokens/J (above the floor) in a handful of probes.

    A pure function of the recorded points (no hidden state), so a resumed sweep replays
    the journal's measurements and proposes exactly the cap the interrupted one would have.
    See the module docstring for the model; ``tol_rel``: the tokens/J share a further probe
    must be able to gain (default 1 %); ``max_probes``: a hard stop, counting the top probe.
    """

    tol_rel: float = 0.015
    max_probes: int = 7
    #: T within this share of the uncapped throughput counts as "on the plateau"
    plateau_tol: float = 0.01
    #: steepest local exponent d ln T / d ln P believed possible on a cliff (bounds the knee)
    gamma_max: float = 5.0

    def tolerance_w(self) -> float:
        """The cap resolution that matters: ``tol_rel`` of the natural draw, at least 2 W."""
        natural = self.natural_draw_w or self.constraints.max_w
        return max(2.0, self.tol_rel * natural)

    def power_limited_at_top(self) -> bool:
        """True when the top probe drew its cap: the workload would draw more (compute-bound)."""
        top = self.uncapped
        return top is not None and top.power_w >= 0.97 * self.max_cap_w

    def first_guess_w(self) -> float:
        """Where the second probe goes, from the natural-draw probe alone. Units: W.

        A card that stays well under its maximum cap uncapped is memory-bound: its plateau
        ends near 75 % of the natural draw (the RTX 3090 decode sweep in presets.yaml is flat
        from 320 W down to 250 W, then falls off a cliff). Aim just under it so the probe lands
        on the cliff, where its throughput says how far away the knee is. A card drawing its
        cap is compute-bound or batched: the floor crossing sits 5-15 % under the cap.
        """
        natural = self.natural_draw_w or self.constraints.max_w
        return (0.8 if self.power_limited_at_top() else 0.72) * natural

    def _collapsed(self) -> list[ProbeMeasurement]:
        """Points by cap, those at or above the natural draw merged into the top probe."""
        natural_cap = self.natural_cap_w()
        assert natural_cap is not None
        top = self.uncapped
        below = [p for p in self.points if p.cap_w < natural_cap and p is not top]
        return sorted(below, key=lambda p: p.cap_w) + ([top] if top else [])

    def slope_exponent(self, below: list[ProbeMeasurement]) -> float:
        """Local d ln T / d ln P under the knee: measured from the two highest points under
        the plateau when they are apart, else a prior by workload family."""
        if len(below) >= 2:
            lo, hi = below[-2], below[-1]
            if hi.power_w > lo.power_w * 1.01 and hi.throughput_tps > lo.throughput_tps > 0:
                gamma = math.log(hi.throughput_tps / lo.throughput_tps) / math.log(
                    hi.power_w / lo.power_w
                )
                return min(max(gamma, 0.2), self.gamma_max)
        return 1.5 if self.power_limited_at_top() else 3.0

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
        t0 = top.throughput_tps
        floor_t = self.floor * t0
        pts = self._collapsed()
        plateau = [p for p in pts if p.throughput_tps >= (1 - self.plateau_tol) * t0]
        high = min(plateau, key=lambda p: p.cap_w) if plateau else top
        below = [p for p in pts if p.cap_w < high.cap_w]
        if not below:
            # the plateau reaches lower than the prior said: step down by 15 % of the draw
            if high.cap_w <= self.min_cap_w:
                return None, "flat down to the minimum cap"
            return self._clamp(high.power_w - 0.15 * top.power_w), "step down"
        low = below[-1]
        measured = len(below) >= 2
        gamma = self.slope_exponent(below)
        p_high = min(high.power_w, float(high.cap_w))
        # the tokens/J a cap in the unmeasured region could reach, over the slope exponents
        # the data still allow; stop once the best measured point is within tol_rel of it
        gammas = (
            (gamma / 1.4, gamma, min(gamma * 1.4, self.gamma_max))
            if measured
            else (0.5, 1.0, 2.0, 3.0, self.gamma_max)
        )
        bound = max(self._model(low, high, g)[1] for g in gammas)
        feasible = [p for p in pts if p.throughput_tps >= floor_t]
        best = max((p.throughput_tps / p.power_w for p in feasible if p.power_w > 0), default=0.0)
        if best >= (1 - self.tol_rel) * bound:
            return None, "no cap left can gain tol_rel"
        target_w, _ = self._model(low, high, gamma)
        if target_w < low.power_w:
            lo_cap, hi_cap = float(self.min_cap_w - 1), float(low.cap_w)
        else:
            lo_cap, hi_cap = low.cap_w, high.cap_w
        proposal = target_w + self.tolerance_w() / 2
        if proposal >= hi_cap - self.tolerance_w() / 2:
            # the estimate sits on the bracket's top: probe under it instead, where a point
            # on the cliff close to the knee pins the knee from below
            knee_lo = self._model(low, high, self.gamma_max)[0]
            proposal = (knee_lo + p_high) / 2
        # stay inside the bracket by a twentieth of its width so every probe shrinks it
        margin = max(1.0, 0.05 * (hi_cap - lo_cap))
        proposal = min(max(proposal, lo_cap + margin), hi_cap - margin)
        cap = self._clamp(proposal)
        if cap is None or cap in {int(p.cap_w) for p in self.points} or not lo_cap < cap < hi_cap:
            return None, "bracket narrower than a watt"
        return cap, "model estimate"

    def _model(
        self, low: ProbeMeasurement, high: ProbeMeasurement, gamma: float
    ) -> tuple[float, float]:
        """(draw W, tokens/J) of the best feasible cap if T = T_low·(P/P_low)^γ up to T0.

        γ > 1: tokens/J rises towards the end of the plateau (the knee); γ < 1: it rises as
        the cap falls, down to the floor crossing (or the minimum cap).
        """
        top = self.uncapped
        assert top is not None
        t0, floor_t = top.throughput_tps, self.floor * top.throughput_tps
        p_low, t_low = max(low.power_w, 1e-9), max(low.throughput_tps, 1e-9)
        p_high = min(high.power_w, float(high.cap_w))
        knee = min(max(p_low * (t0 / t_low) ** (1 / gamma), p_low), p_high)
        knee_e = high.throughput_tps / max(p_high, 1e-9) if knee >= p_high else t0 / knee
        if gamma >= 1.0:
            return knee, knee_e
        crossing = max(p_low * (floor_t / t_low) ** (1 / gamma), float(self.min_cap_w))
        crossing = min(crossing, knee)
        t_cross = min(t0, t_low * (crossing / p_low) ** gamma)
        cross_e = t_cross / crossing
        return (crossing, cross_e) if cross_e > knee_e else (knee, knee_e)

    def _clamp(self, proposal_w: float) -> int | None:
        natural_cap = self.natural_cap_w()
        assert natural_cap is not None
        return max(self.min_cap_w, min(natural_cap - 1, math.ceil(proposal_w)))

    def next_cap(self) -> int | None:
        return self.plan()[0]


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
