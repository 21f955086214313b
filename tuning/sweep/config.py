"""What decides a sweep's outcome: its configuration (also the journal's resume key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuning.budget import Policy
from tuning.telemetry import SoakPredictionPolicy, SteadyStatePolicy


@dataclass(frozen=True)
class SweepConfig:
    """Everything that decides a sweep's outcome (the journal's resume key is built from it).

    ``headroom``: transient margin kept free on every PSU/circuit by the allocation (ratio
    ≤ 1 − headroom). ``sweep_limit_ratio``: the live-cap ceiling while probing.
    ``fixed_probe_s``: when set, every probe lasts exactly this long (the naive reference);
    ``max_parallel``: probes running at once (``None``: as many as the budget allows).
    ``tps_regex``: a ``cmd:`` workload's tokens/s regex (``None``: llama-bench's).
    ``heat_soak_s``: the longest a heat-soak round runs (s); it ends earlier once every GPU's
    steady temperature is confidently predicted (``prediction``;
    :func:`~tuning.telemetry.predict_steady`) unless ``full_soak``.
    """

    workload: str = "decode"
    policy: Policy = Policy.EFFICIENCY
    floor: float = 0.95
    strategy: str = "adaptive"
    step_w: int = 5
    seed: int | None = None
    headroom: float = 0.10
    sweep_limit_ratio: float = 0.95
    heat_soak_s: float = 1800.0
    full_soak: bool = False
    prediction: SoakPredictionPolicy = field(default_factory=SoakPredictionPolicy)
    max_soak_rounds: int = 6
    sample_period_s: float = 1.0
    steady: SteadyStatePolicy = field(default_factory=SteadyStatePolicy)
    watchdog_margin_c: float = 5.0
    fixed_probe_s: float | None = None
    max_parallel: int | None = None
    tps_regex: str | None = None

    def __post_init__(self) -> None:
        # The sweep tests the policy by identity (``is Policy.EFFICIENCY``): a plain string
        # from a library caller would match neither branch and run a third, unnamed policy
        # (no floor, yet not the throughput objective). Coerce, or refuse an unknown name.
        try:
            policy = Policy(self.policy)
        except ValueError:
            names = ", ".join(p.value for p in Policy)
            raise ValueError(f"SweepConfig.policy {self.policy!r}: use one of {names}") from None
        object.__setattr__(self, "policy", policy)

    def resume_key(self, rig_spec: str) -> dict[str, Any]:
        """What a journaled sweep must match to have its completed probes reused."""
        return {
            "rig": rig_spec,
            "workload": self.workload,
            # another regex reads other figures from the same runs: not the same probes
            "tps_regex": self.tps_regex,
            "policy": str(self.policy),
            "floor": self.floor,
            "strategy": self.strategy,
            "step_w": self.step_w,
            "seed": self.seed,
        }
