"""The figure type of ``bench/fidelity.py``: one published number and the model's answer to it.

A figure is either a point on a **curve** (relative throughput at a cap, judged in percentage
points: the bar is 5 pp) or a **ratio / speed** (judged relative to the published value or range:
the bar is 20 %). ``low``/``high`` is the published range (equal for a single value); the error is
0 inside it, else the distance to its nearer end (pp for curves, share of that end otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["curve", "ratio"]

#: The issue's bars: curves within 5 percentage points, ratios and speeds within 20 %.
CURVE_BAR_PP = 5.0
RATIO_BAR = 0.20


@dataclass(frozen=True)
class Figure:
    """One published figure: what was measured, the model's figure, the range, the source."""

    label: str
    kind: Kind
    model: Callable[[], float]
    low: float
    high: float
    unit: str
    source: str

    def error(self, value: float) -> float:
        """Distance outside the published range: pp (curve, values are fractions) or a share."""
        if self.low <= value <= self.high:
            return 0.0
        end = self.low if value < self.low else self.high
        if self.kind == "curve":
            return abs(value - end) * 100.0
        return abs(value - end) / abs(end)

    def within(self, value: float) -> bool:
        """Whether the model's figure meets the bar for its kind."""
        bar = CURVE_BAR_PP if self.kind == "curve" else RATIO_BAR
        return self.error(value) <= bar
