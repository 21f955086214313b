"""What a sweep returns: per-GPU results, the heat-soak rounds, the ``--json`` document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuning.budget import Allocation
from tuning.sustained import ThrottleEvent
from tuning.sweep.config import SweepConfig
from tuning.telemetry import ProbeMeasurement


@dataclass(frozen=True)
class SoakRound:
    """One heat-soak attempt."""

    caps_w: dict[str, float]
    sim_seconds: float
    throttle_events: tuple[ThrottleEvent, ...]
    peak_temp_c: dict[str, float]
    throughput_tps: dict[str, float]
    power_w: dict[str, float]
    temp_trace: dict[str, tuple[tuple[float, float], ...]]
    last_temp_c: dict[str, float] = field(default_factory=dict)
    #: each GPU's fitted steady temperature (°C; :func:`~tuning.telemetry.predict_steady`)
    predicted_steady_c: dict[str, float] = field(default_factory=dict)
    #: the GPUs confidently predicted to settle above their SW thermal target
    predicted_throttle: tuple[str, ...] = ()
    #: the round stopped before ``heat_soak_s`` because every GPU's verdict was known
    ended_by_prediction: bool = False
    #: each GPU's time constant (s) where this round's rise fitted it well enough for later
    #: rounds to reuse (:meth:`~tuning.telemetry.SoakPredictionPolicy.reusable_tau_s`)
    fitted_tau_s: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No throttle event was seen and none is predicted at steady state."""
        return not self.throttle_events and not self.predicted_throttle


@dataclass(frozen=True)
class GpuResult:
    """One GPU's outcome. ``throughput_rel``: heat-soak throughput / uncapped probe throughput."""

    uuid: str
    name: str
    pci_bus_id: str
    min_w: float
    max_w: float
    stock_cap_w: float
    natural_draw_w: float
    uncapped_tps: float
    uncapped_tokens_per_joule: float
    cap_w: float
    probes: int
    curve: tuple[ProbeMeasurement, ...]
    throughput_tps: float
    power_w: float
    peak_temp_c: float
    flagged: bool = False

    @property
    def throughput_rel(self) -> float:
        return self.throughput_tps / self.uncapped_tps if self.uncapped_tps > 0 else 0.0

    @property
    def tokens_per_joule(self) -> float:
        return self.throughput_tps / self.power_w if self.power_w > 0 else 0.0

    @property
    def tokens_per_joule_gain(self) -> float:
        """Relative tokens/J improvement over uncapped (0.25 = 25 % more tokens per joule)."""
        base = self.uncapped_tokens_per_joule
        return self.tokens_per_joule / base - 1.0 if base > 0 else 0.0


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: per-GPU results, the soak rounds, the trace's verdict."""

    config: SweepConfig
    rig_name: str
    rig_spec: str
    fingerprint: str
    gpus: tuple[GpuResult, ...]
    sweep_sim_s: float
    soak_rounds: tuple[SoakRound, ...]
    max_psu_load_ratio: float
    allocation: Allocation
    objective: float
    resumed_probes: int = 0
    #: the PSUs/circuits (``"psu:NAME"``, ``"circuit:NAME"``) that the floor's caps overload
    #: when ``allocation.floor_relaxed`` (the caps then maximise throughput instead)
    floor_blocked_by: tuple[str, ...] = ()
    #: rig-clock time of the whole tune: park, probes, every soak round and cool-down (s);
    #: None: not measured (then probes + soak rounds)
    rig_s: float | None = None
    #: GPUs swept as one split (one cap searched for all, each GPU gets it), by UUID
    swept_together: tuple[tuple[str, ...], ...] = ()

    @property
    def rig_seconds(self) -> float:
        """Rig time of the whole tune, probes plus thermal validation. Units: s."""
        return self.rig_s if self.rig_s is not None else self.sweep_sim_s + self.soak_sim_s

    @property
    def floor_relaxed(self) -> bool:
        """The efficiency floor did not fit the power budget and was dropped."""
        return self.allocation.floor_relaxed

    @property
    def final_soak(self) -> SoakRound | None:
        return self.soak_rounds[-1] if self.soak_rounds else None

    @property
    def validation_passed(self) -> bool:
        """The final heat-soak saw no throttle event and no GPU is flagged (a flagged GPU
        could not be brought under its thermal target by any soak round)."""
        final = self.final_soak
        return final is not None and final.passed and not self.flagged_uuids

    @property
    def flagged_uuids(self) -> tuple[str, ...]:
        """The GPUs still throttling (or headed over target) after every soak round."""
        return tuple(g.uuid for g in self.gpus if g.flagged)

    @property
    def soak_sim_s(self) -> float:
        return sum(r.sim_seconds for r in self.soak_rounds)

    @property
    def total_probes(self) -> int:
        """Probes run: a split's probe caps all its GPUs at once and counts once."""
        grouped = {u for group in self.swept_together for u in group}
        alone = sum(g.probes for g in self.gpus if g.uuid not in grouped)
        firsts = {group[0] for group in self.swept_together}
        return alone + sum(g.probes for g in self.gpus if g.uuid in firsts)

    def to_json(self) -> dict[str, Any]:
        """The ``rigforge sweep --json`` document."""
        final = self.final_soak
        return {
            "gpus": [
                {
                    "uuid": g.uuid,
                    "name": g.name,
                    "cap_w": g.cap_w,
                    "probes": g.probes,
                    "throughput_rel": round(g.throughput_rel, 4),
                    "tokens_per_joule": round(g.tokens_per_joule, 5),
                    "tokens_per_joule_gain": round(g.tokens_per_joule_gain, 4),
                    "peak_temp_c": g.peak_temp_c,
                    "predicted_steady_c": (
                        round(final.predicted_steady_c[g.uuid], 1)
                        if final and g.uuid in final.predicted_steady_c
                        else None
                    ),
                    "flagged": g.flagged,
                }
                for g in self.gpus
            ],
            "totals": {
                "probes": self.total_probes,
                "sim_seconds": round(self.sweep_sim_s, 1),
                "heat_soak_sim_seconds": round(self.soak_sim_s, 1),
                "rig_seconds": round(self.rig_seconds, 1),
                "soak_ended_by_prediction": bool(final and final.ended_by_prediction),
                "soak_rounds": len(self.soak_rounds),
                "throttle_events": len(final.throttle_events) if final else 0,
                "throttle_events_all_rounds": sum(len(r.throttle_events) for r in self.soak_rounds),
                "max_psu_load_ratio": round(self.max_psu_load_ratio, 4),
                "objective": round(self.objective, 6),
                "policy": str(self.config.policy),
                "validation_passed": self.validation_passed,
                "resumed_probes": self.resumed_probes,
                "floor_relaxed": self.floor_relaxed,
                "floor_blocked_by": list(self.floor_blocked_by),
            },
            "swept_together": [list(group) for group in self.swept_together],
        }
