"""A split under power caps: what one replica of a model serves when every GPU it runs on
holds its own cap (DVFS, :func:`tuning.model.power.under_cap`).

The step-time model (:func:`tuning.model.serving.predict`) gives a replica's step at full
clock. Under caps each GPU of the split runs the highest 15 MHz clock bin whose board power
fits its cap; the GPUs of a split work in lock-step (a TP group waits for its all-reduces, a
pipeline runs at its slowest stage), so the replica runs at its slowest member.

Contract (one definition, shared by the plan and the simulator):

* **the load one GPU carries** (:func:`member_load`): the prediction's step for the phase —
  decode: the whole round (every sequence in flight gains a token; ``tokens`` =
  concurrency), prefill: one chunk through every stage — with its memory and compute time
  per GPU (predict() already divides them by ``tp · pp``), and the **busy scale**
  (:func:`tuning.model.power.at_clock`) ``prediction.busy_frac`` in decode (micro-batches in
  flight / ``pp``: 1 for one GPU or a TP group, ``1/pp`` for a pipeline with one sequence)
  and 1 in prefill (chunks pipeline over the stages, so every stage works);
* **the replica's rate** (:func:`under_caps`): the slowest member's tokens/s at its clock
  under its cap; every time the prediction reports (per-sequence decode, prefill, TTFT)
  scales with it.

Heat is not in here: a card above its target temperature lowers its own limit further (the
simulator's SW thermal slowdown); the tuned caps a plan reads passed a heat-soak, and the
loop's serving run measures what heat takes on top.

Units: W, MHz, tokens/s, seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from tuning.model.power import (
    OperatingPoint,
    PowerParams,
    at_clock,
    memory_slowdown,
    params_for,
    under_cap,
)
from tuning.model.serving import Phase, Prediction
from tuning.model.step import StepTime


@dataclass(frozen=True)
class MemberPower:
    """One GPU of a split as the power model sees it.

    ``cap_w``: its power limit (W; ``None``: uncapped, full clock); ``max_clock_mhz``: its
    preset's max SM clock (MHz).
    """

    params: PowerParams
    cap_w: float | None
    max_clock_mhz: float


def member_power(preset: str, cap_w: float | None) -> MemberPower:
    """The :class:`MemberPower` of a ``presets.yaml`` GPU preset under ``cap_w`` (W)."""
    from tuning.backends.sim_config import load_presets
    from tuning.errors import ConfigError

    presets = load_presets().presets
    if preset not in presets:
        raise ConfigError(f"unknown GPU preset {preset!r}; known: {', '.join(sorted(presets))}")
    p = presets[preset]
    return MemberPower(
        params=params_for(preset, p.power.default_w),
        cap_w=cap_w,
        max_clock_mhz=p.sm_clock_mhz.max,
    )


def member_load(prediction: Prediction, phase: Phase | None = None) -> tuple[StepTime, float]:
    """The step one GPU of the split runs in ``phase`` (default: the prediction's) and its
    busy scale for :func:`tuning.model.power.at_clock` (see the module contract)."""
    if (phase or prediction.phase) == "prefill":
        return prediction.prefill_step, 1.0
    return prediction.decode_step, prediction.busy_frac


def step_at_clock(p: PowerParams, step: StepTime, clock_frac: float) -> StepTime:
    """``step`` (times at full clock) run at SM clock fraction ``clock_frac``: compute time
    scales with ``1/f``, memory time with :func:`tuning.model.power.memory_slowdown`;
    interconnect and host time do not depend on the GPU clock."""
    return StepTime(
        memory_s=step.memory_s * memory_slowdown(p, clock_frac),
        compute_s=step.compute_s / clock_frac,
        interconnect_s=step.interconnect_s,
        host_s=step.host_s,
        tokens=step.tokens,
    )


def _point(member: MemberPower, step: StepTime, busy_scale: float) -> OperatingPoint:
    if member.cap_w is None:
        return at_clock(member.params, step, 1.0, busy_scale=busy_scale)
    return under_cap(member.params, step, member.cap_w, member.max_clock_mhz, busy_scale=busy_scale)


@dataclass(frozen=True)
class CappedSplit:
    """A replica under its GPUs' caps: the prediction at the slowest member's clock, and
    every member's operating point in decode (GPU order of the split)."""

    prediction: Prediction
    members: tuple[OperatingPoint, ...]

    @property
    def clock_frac(self) -> float:
        """The clock fraction the replica runs at in decode (its slowest member's)."""
        if not self.members:
            return 1.0
        return min(self.members, key=lambda m: m.tokens_per_s).clock_frac


def under_caps(prediction: Prediction, members: Sequence[MemberPower]) -> CappedSplit:
    """``prediction`` (full clock) on ``members`` (the split's GPUs) under their caps.

    Decode and prefill each run at their slowest member; per-sequence decode scales with
    decode, prefill tokens/s and TTFT with prefill. The returned prediction's steps are the
    slowest member's at its clock, so their shares say where the capped step goes.
    """
    if not members:
        raise ValueError("a split has at least one GPU")
    decode, busy = member_load(prediction, "decode")
    points = tuple(_point(m, decode, busy) for m in members)
    slow = min(range(len(members)), key=lambda i: points[i].tokens_per_s)
    decode_ratio = points[slow].tokens_per_s / decode.tokens_per_s
    prefill, pbusy = member_load(prediction, "prefill")
    ppoints = [_point(m, prefill, pbusy) for m in members]
    pslow = min(range(len(members)), key=lambda i: ppoints[i].tokens_per_s)
    prefill_ratio = ppoints[pslow].tokens_per_s / prefill.tokens_per_s
    capped = dataclasses.replace(
        prediction,
        tokens_per_s=prediction.tokens_per_s * decode_ratio,
        tokens_per_s_per_seq=prediction.tokens_per_s_per_seq * decode_ratio,
        prefill_tokens_per_s=prediction.prefill_tokens_per_s * prefill_ratio,
        ttft_s=prediction.ttft_s / prefill_ratio,
        decode_step=step_at_clock(members[slow].params, decode, points[slow].clock_frac),
        prefill_step=step_at_clock(members[pslow].params, prefill, ppoints[pslow].clock_frac),
        clock_mhz=tuple(
            p.clock_frac * m.max_clock_mhz for p, m in zip(points, members, strict=True)
        ),
    )
    return CappedSplit(prediction=capped, members=points)
