"""A split's operating point: what one replica of a model serves on its GPUs, each under its
own power cap — the one definition the plan and the simulator share.

A replica runs ``tp × pp`` GPUs, stage-major (members ``0..tp-1`` are stage 0, …). Each
member has its own hardware (bandwidth, tensor TFLOPS), its own power split and max clock, and
its own cap. :func:`split_operating_point` returns the steady state of that split:

* **Stage pass** per member: one micro-batch through the member's share of the layers, from
  the step-time model (:func:`tuning.model.serving.predict`) run on the member's own hardware
  (``predict``'s round over ``pp`` stages, divided by ``pp``): a slower card has a longer pass.
* **Clock and draw** per member: DVFS (:mod:`tuning.model.power`) — the highest 15 MHz clock bin
  whose board power fits the member's cap, where the power depends on how busy the member is,
  and that on the pipeline's rate, and that on every other member's clock. The steady state is
  the fixed point of that update, each member choosing its clock with the others where they
  are (:meth:`RingTables.pace`, :func:`steady_bins`); the simulator takes the same update at
  every step of its virtual clock, so a cold simulated split settles where this says.
* **Pipeline rate**: ``in_flight`` micro-batches circulate over ``pp`` stages (a closed ring);
  TP members of a stage work in lock-step, so a stage takes its slowest member's pass; the
  pipeline completes ``min(in_flight / Σ t_stage, 1 / max t_stage)`` passes per second
  (:func:`ring_passes_per_s`), each yielding ``tokens_per_pass`` tokens. Decode: ``in_flight =
  min(concurrency, pp)``, ``tokens_per_pass = concurrency / in_flight``; prefill: ``in_flight =
  pp`` (prompt chunks keep every stage busy), ``tokens_per_pass`` = one chunk.
* **Tokens/s** aggregate (passes/s · tokens per pass) and per sequence (aggregate /
  concurrency); **prefill** tokens/s (prefill ring); **TTFT**: the prompt's chunks through
  the pipeline (``Σ t_stage + (chunks − 1) · max t_stage``) plus the first token's round
  (``Σ`` over stages of the slowest member's one-token pass), at the prefill clocks.

On identical uncapped GPUs this is ``predict`` exactly (a round is ``pp`` equal passes); the
difference is mixed cards and caps, where a faster card's stage is shorter and every card runs
at its own clock.

Hand-worked example (``tests/unit/test_model_split.py`` works it from the presets' datasheet
bandwidths and ``serving.yaml``): a 30 B model at 8 bits under llama.cpp as PP=3 over an RTX
4090 (1008 GB/s) and two RTX 3090s (936 GB/s). A stage reads 10 GB at 0.62 of the bandwidth:
16.001 ms on the 4090, 17.232 ms on a 3090; with the hand-off and the token's host step spread
over the stages the passes take 16.520 and 17.751 ms. One sequence goes round the ring alone:
``min(1 / (16.520 + 2 · 17.751 ms), 1 / 17.751 ms)`` = 19.22 tok/s — running every stage at the
slowest card's pace would say 18.78. Three sequences (three micro-batches, each pass with its
own host step: 17.553 / 18.784 ms): ``min(3 / 55.12 ms, 1 / 18.784 ms)`` = 53.24 tok/s, paced by
a 3090 stage.

Heat is not in here: a card above its target temperature lowers its own limit further (the
simulator's SW thermal slowdown); the tuned caps a plan reads passed a heat-soak, and the
loop's serving run measures what heat takes on top.

Units: W, MHz, tokens/s, seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TypeVar

import numpy as np

from tuning.model.power import PowerParams, memory_slowdown, params_for, power_terms
from tuning.model.serving import (
    GpuHardware,
    HostShare,
    Link,
    ModelLike,
    Phase,
    Prediction,
    gpu_from_preset,
    predict,
)
from tuning.model.step import StepTime

#: Iterations of the clock update :func:`steady_bins` runs at most (a split settles or enters a
#: limit cycle within a few; one that has done neither by then is taken where it is). A bound
#: on the search, not a figure of the model.
MAX_SETTLE_ITERATIONS = 64

_Num = TypeVar("_Num", float, np.ndarray)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitMember:
    """One GPU of a split: its throughput figures, its power split (``None``: no power model,
    it runs at full clock), its max SM clock (MHz) and its power limit (W; ``None``: uncapped).
    """

    hardware: GpuHardware
    params: PowerParams | None
    max_clock_mhz: float
    cap_w: float | None = None


@cache
def split_member(preset: str, cap_w: float | None) -> SplitMember:
    """The :class:`SplitMember` of a ``presets.yaml`` GPU preset under ``cap_w`` (W)."""
    from tuning.backends.sim_config import load_presets

    hardware = gpu_from_preset(preset)  # names the known presets when ``preset`` is not one
    p = load_presets().presets[preset]
    return SplitMember(
        hardware=hardware,
        params=params_for(preset, p.power.default_w),
        max_clock_mhz=p.sm_clock_mhz.max,
        cap_w=cap_w,
    )


# --------------------------------------------------------------------------------------------
# The pipeline ring
# --------------------------------------------------------------------------------------------


def ring_passes_per_s(sum_s: _Num, max_s: _Num, in_flight: int) -> _Num:
    """Passes per second of ``in_flight`` micro-batches circulating over stages whose times sum
    to ``sum_s`` with the slowest ``max_s``: ``min(in_flight / Σ t, 1 / max t)`` (floats or
    numpy arrays, element-wise)."""
    return np.minimum(in_flight / sum_s, 1.0 / max_s)  # type: ignore[no-any-return]


def pipeline_passes_per_s(stage_s: Sequence[float], in_flight: int) -> float:
    """:func:`ring_passes_per_s` of stages taking ``stage_s`` each. Hand-worked: six stages of
    2 ms with one micro-batch: 1 / 12 ms = 83.3 passes/s; with six: 1 / 2 ms = 500."""
    return float(ring_passes_per_s(math.fsum(stage_s), max(stage_s), in_flight))


@dataclass(frozen=True)
class Ring:
    """A split's pipeline in one phase, at full clock. Units: s, tokens.

    ``passes[i]``: member ``i``'s stage pass (its kernel, link and host time for one
    micro-batch); ``stage[i]``: its stage (stage-major, ``tp`` per stage); ``in_flight``:
    micro-batches circulating; ``tokens_per_pass``: tokens one micro-batch yields per trip.
    """

    passes: tuple[StepTime, ...]
    stage: tuple[int, ...]
    pp: int
    in_flight: int
    tokens_per_pass: float


def mixed_step(pred: Prediction) -> StepTime:
    """``mixed``: the chunked-prefill step of vLLM's and SGLang's mixed batches, every
    sequence's decode token and the prompt tokens :func:`~tuning.model.serving.
    mixed_prefill_tokens` gives, run as one forward pass (:func:`~tuning.model.serving.predict`
    with ``phase="mixed"``): the weights are read once for all of its tokens, their math adds,
    one set of all-reduces carries them, the host schedules one step. Tokens counted: the
    decode (output) tokens only."""
    if pred.mixed_step is None:
        raise ValueError("a mixed step needs a prediction made with phase='mixed'")
    return pred.mixed_step


def _pass(step: StepTime, pp: int) -> StepTime:
    """One stage's share of a round of ``pp`` equal stage steps."""
    return step.scaled(1.0 / pp, step.tokens)


def ring_of(preds: Sequence[Prediction], tp: int, pp: int, concurrency: int, phase: Phase) -> Ring:
    """The :class:`Ring` of ``phase`` from each member's own prediction
    (:func:`member_predictions`)."""
    if phase == "prefill":
        passes = tuple(_pass(p.prefill_step, pp) for p in preds)
        in_flight, per_pass = pp, passes[0].tokens
    else:
        steps = [mixed_step(p) if phase == "mixed" else p.decode_step for p in preds]
        passes = tuple(_pass(s, pp) for s in steps)
        in_flight = min(concurrency, pp)
        per_pass = concurrency / in_flight
    return Ring(
        passes=passes,
        stage=tuple(i // tp for i in range(len(preds))),
        pp=pp,
        in_flight=in_flight,
        tokens_per_pass=per_pass,
    )


# --------------------------------------------------------------------------------------------
# Clocks under caps: the tables both the steady solve and the simulator's steps read
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RingPace:
    """A ring at one set of clock bins. ``passes_per_s``: the pipeline's rate; ``pass_s`` /
    ``kernel_s``: each member's pass and its kernel time at its bin (s); ``power_w``: each
    member's board power at every bin of its own with the others where they are (W, rows of
    :attr:`RingTables.kernel_s`' shape; non-decreasing, ``inf`` past a card's top bin)."""

    passes_per_s: float
    pass_s: np.ndarray
    kernel_s: np.ndarray
    power_w: np.ndarray

    def busy_frac(self) -> np.ndarray:
        """Share of wall time each member runs kernels."""
        return np.minimum(self.kernel_s * self.passes_per_s, 1.0)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RingTables:
    """A :class:`Ring`'s members at every clock bin (numpy arrays ``(members, bins)``, bins
    ascending, padded to a common count: past a card's ``top`` bin its power is ``inf`` and
    its other figures repeat the top bin's). ``kernel_s``: the pass's kernel time at that
    clock (s); ``fixed_s``: its link and host time (s, clock-free); ``wait_w`` / ``work_w``:
    :func:`tuning.model.power.power_terms` (board power at busy share ``b`` is ``wait_w + b ·
    work_w``); ``clock_mhz``: the bin's clock."""

    ring: Ring
    clock_mhz: np.ndarray
    kernel_s: np.ndarray
    fixed_s: np.ndarray
    wait_w: np.ndarray
    work_w: np.ndarray
    pad: np.ndarray
    top: np.ndarray
    stage: np.ndarray
    same_stage: np.ndarray = field(repr=False)
    other_stage: np.ndarray = field(repr=False)

    @classmethod
    def of(
        cls,
        ring: Ring,
        power: Sequence[tuple[PowerParams | None, float]],
        bins: int | None = None,
    ) -> RingTables:
        """The tables of ``ring`` for members with ``(power split, max clock MHz)`` each (a
        member without a power split has one bin: its full clock, drawing nothing the model
        knows). ``bins``: the common bin count (default: the most any member has)."""
        terms = []
        for (params, max_mhz), step in zip(power, ring.passes, strict=True):
            if params is None:
                terms.append(
                    (
                        np.array([max_mhz]),
                        np.array([step.kernel_s]),
                        step.interconnect_s + step.host_s,
                        np.zeros(1),
                        np.zeros(1),
                    )
                )
            else:
                terms.append(_terms(params, step, max_mhz))
        width = bins if bins is not None else max(len(t[0]) for t in terms)
        m = len(terms)
        clock, kernel, wait, work = (np.zeros((m, width)) for _ in range(4))
        pad = np.zeros((m, width), dtype=bool)
        top = np.zeros(m, dtype=int)
        fixed = np.zeros(m)
        for r, (clk, ker, fix, wt, wk) in enumerate(terms):
            nb = len(clk)
            for out, values in ((clock, clk), (kernel, ker), (wait, wt), (work, wk)):
                out[r, :nb], out[r, nb:] = values, values[-1]
            pad[r, nb:] = True
            top[r] = nb - 1
            fixed[r] = fix
        stage = np.asarray(ring.stage)
        return cls(
            ring=ring,
            clock_mhz=clock,
            kernel_s=kernel,
            fixed_s=fixed,
            wait_w=wait,
            work_w=work,
            pad=pad,
            top=top,
            stage=stage,
            same_stage=(stage[:, None] == stage[None, :]) & ~np.eye(m, dtype=bool),
            other_stage=stage[:, None] != np.arange(ring.pp)[None, :],
        )

    def pace(self, idx: np.ndarray) -> RingPace:
        """The ring with member ``i`` at clock bin ``idx[i]``: its rate now, and the power table
        each member's limiter sees (its own clock varied, the others where they are)."""
        rows = np.arange(len(self.stage))
        kernel_now = self.kernel_s[rows, idx]
        t_now = kernel_now + self.fixed_s
        t_stage = np.zeros(self.ring.pp)
        np.maximum.at(t_stage, self.stage, t_now)  # TP members of a stage in lock-step
        total = float(t_stage.sum())
        rate = float(ring_passes_per_s(total, float(t_stage.max()), self.ring.in_flight))
        mate_s = np.max(np.where(self.same_stage, t_now[None, :], 0.0), axis=1)
        own_s = np.maximum(self.kernel_s + self.fixed_s[:, None], mate_s[:, None])
        rest_sum = total - t_stage[self.stage]
        rest_max = np.max(np.where(self.other_stage, t_stage[None, :], 0.0), axis=1)
        rates = ring_passes_per_s(
            rest_sum[:, None] + own_s, np.maximum(rest_max[:, None], own_s), self.ring.in_flight
        )
        busy = np.minimum(self.kernel_s * rates, 1.0)
        power = np.maximum.accumulate(self.wait_w + busy * self.work_w, axis=1)
        power[self.pad] = np.inf
        return RingPace(passes_per_s=rate, pass_s=t_now, kernel_s=kernel_now, power_w=power)


_Terms = tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]

#: :func:`tuning.model.power.power_terms` by (power split identity, pass, max clock); each
#: entry keeps its power split alive, so the ``id`` in its key is not reused meanwhile.
_TERMS: dict[tuple[int, StepTime, float], tuple[PowerParams, _Terms]] = {}
_TERMS_MAX = 8192


def _terms(params: PowerParams, step: StepTime, max_mhz: float) -> _Terms:
    """One member's power terms at every bin (clock, kernel, fixed, wait, work), memoised."""
    key = (id(params), step, max_mhz)
    hit = _TERMS.get(key)
    if hit is not None and hit[0] is params:
        return hit[1]
    t = power_terms(params, step, max_mhz)
    value = (t.clock_mhz, t.kernel_s, t.fixed_s, t.wait_w, t.work_w)
    if len(_TERMS) >= _TERMS_MAX:
        _TERMS.clear()
    _TERMS[key] = (params, value)
    return value


def fitting_bins(power_w: np.ndarray, limit_w: np.ndarray) -> np.ndarray:
    """DVFS: per member the highest bin whose power (a non-decreasing row of ``power_w``) fits
    its limit (W), else the lowest bin."""
    return np.maximum((power_w <= limit_w[:, None] + 1e-9).sum(axis=1) - 1, 0)  # type: ignore[no-any-return]


def steady_bins(
    tables: RingTables, caps_w: Sequence[float | None]
) -> list[tuple[np.ndarray, RingPace]]:
    """The clock bins a split settles at under ``caps_w`` (W per member; ``None``: uncapped):
    every member at the highest bin that fits ``min(cap, its natural draw)`` with the others
    where they are, repeated from full clock until nothing moves. Returns the settled bins
    with the ring paced there (one pair), or the states of the limit cycle the update entered
    (members alternating between neighbouring bins), to be averaged."""
    caps = np.array([math.inf if c is None else c for c in caps_w])
    rows = np.arange(len(caps))
    idx = tables.top.copy()
    seen: list[tuple[np.ndarray, RingPace]] = []
    for _ in range(MAX_SETTLE_ITERATIONS):
        pace = tables.pace(idx)
        nxt = fitting_bins(pace.power_w, np.minimum(caps, pace.power_w[rows, tables.top]))
        if np.array_equal(nxt, idx):
            return [(idx, pace)]
        for k, (state, _) in enumerate(seen):
            if np.array_equal(state, nxt):
                return [*seen[k:], (idx, pace)]
        seen.append((idx, pace))
        idx = nxt
    return [(idx, tables.pace(idx))]


# --------------------------------------------------------------------------------------------
# The operating point
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberPoint:
    """One member in a phase's steady state. Units in the names; ``busy_frac``: share of wall
    time it runs kernels; ``pass_s``: its stage pass at its clock."""

    stage: int
    clock_mhz: float
    power_w: float
    busy_frac: float
    pass_s: float


@dataclass(frozen=True)
class PipelinePoint:
    """A split's steady state in one phase: the ring (full-clock passes), its members, the
    rate (passes/s) and the tokens/s it yields; ``stage_s``: each stage's time (s)."""

    ring: Ring
    members: tuple[MemberPoint, ...]
    passes_per_s: float
    stage_s: tuple[float, ...]

    @property
    def tokens_per_s(self) -> float:
        """Aggregate tokens per second (passes/s · tokens per pass)."""
        return self.passes_per_s * self.ring.tokens_per_pass


@dataclass(frozen=True)
class SplitPoint:
    """A split's operating point (see the module): decode, prefill and, for ``mixed``, the
    mixed ring; ``prediction``: the plan's summary of it (tokens/s, per sequence, prefill,
    TTFT, the binding steps' shares, each member's decode clock)."""

    phase: Phase
    decode: PipelinePoint
    prefill: PipelinePoint
    mixed: PipelinePoint | None
    prediction: Prediction

    @property
    def point(self) -> PipelinePoint:
        """The ring of the phase asked for."""
        if self.phase == "prefill":
            return self.prefill
        if self.phase == "mixed" and self.mixed is not None:
            return self.mixed
        return self.decode


#: Settled rings by (ring, each member's power split identity, max clock, cap): a placement
#: scores hundreds of GPU sets whose members and links repeat. Each entry keeps its members'
#: power splits alive, so an ``id`` in a key is never reused while the entry exists.
_SETTLED: dict[tuple[object, ...], tuple[tuple[PowerParams | None, ...], PipelinePoint]] = {}
_SETTLED_MAX = 8192


def _settle(ring: Ring, members: Sequence[SplitMember]) -> PipelinePoint:
    """The steady :class:`PipelinePoint` of ``ring`` on ``members`` (a limit cycle averaged),
    memoised (:data:`_SETTLED`)."""
    key = (ring, tuple((id(m.params), m.max_clock_mhz, m.cap_w) for m in members))
    hit = _SETTLED.get(key)
    if hit is not None and all(a is m.params for a, m in zip(hit[0], members, strict=True)):
        return hit[1]
    point = _settle_now(ring, members)
    if len(_SETTLED) >= _SETTLED_MAX:
        _SETTLED.clear()
    _SETTLED[key] = (tuple(m.params for m in members), point)
    return point


def _settle_now(ring: Ring, members: Sequence[SplitMember]) -> PipelinePoint:
    tables = RingTables.of(ring, [(m.params, m.max_clock_mhz) for m in members])
    settled = steady_bins(tables, [m.cap_w for m in members])
    states = [idx for idx, _ in settled]
    paces = [pace for _, pace in settled]
    rows = np.arange(len(members))
    n = len(states)

    def mean(values: Sequence[np.ndarray]) -> np.ndarray:
        return np.sum(values, axis=0) / n  # type: ignore[no-any-return]

    clock = mean([tables.clock_mhz[rows, idx] for idx in states])
    power = mean([p.power_w[rows, idx] for p, idx in zip(paces, states, strict=True)])
    busy = mean([p.busy_frac() for p in paces])
    pass_s = mean([p.pass_s for p in paces])
    rate = math.fsum(p.passes_per_s for p in paces) / n
    stage_s = np.zeros(ring.pp)
    np.maximum.at(stage_s, tables.stage, pass_s)
    return PipelinePoint(
        ring=ring,
        members=tuple(
            MemberPoint(
                stage=ring.stage[i],
                clock_mhz=float(clock[i]),
                power_w=float(power[i]),
                busy_frac=float(busy[i]),
                pass_s=float(pass_s[i]),
            )
            for i in range(len(members))
        ),
        passes_per_s=rate,
        stage_s=tuple(float(s) for s in stage_s),
    )


def step_at_clock(member: SplitMember, step: StepTime, clock_mhz: float) -> StepTime:
    """``step`` (times at full clock) run at ``clock_mhz``: compute time scales with ``1/f``,
    memory time with :func:`tuning.model.power.memory_slowdown`; interconnect and host time do
    not depend on the GPU clock. A member without a power split runs at full clock."""
    if member.params is None:
        return step
    f = min(1.0, clock_mhz / member.max_clock_mhz)
    return StepTime(
        memory_s=step.memory_s * memory_slowdown(member.params, f),
        compute_s=step.compute_s / f,
        interconnect_s=step.interconnect_s,
        host_s=step.host_s,
        tokens=step.tokens,
    )


def _binding_step(
    point: PipelinePoint, members: Sequence[SplitMember], tokens: float, tokens_per_s: float
) -> StepTime:
    """The step whose shares say where the split's time goes: each stage's slowest member's
    pass at its clock, summed over the stages when the ring's round binds (``in_flight / Σ
    t``), the slowest stage's alone when it paces the ring; scaled so that ``tokens`` take
    ``tokens / tokens_per_s``."""
    ring = point.ring
    worst: dict[int, int] = {}
    for i, m in enumerate(point.members):
        if m.stage not in worst or m.pass_s > point.members[worst[m.stage]].pass_s:
            worst[m.stage] = i
    steps = [
        step_at_clock(members[i], ring.passes[i], point.members[i].clock_mhz)
        for i in worst.values()
    ]
    total = math.fsum(s.total_s for s in steps)
    if ring.in_flight / total > 1.0 / max(s.total_s for s in steps):
        steps = [max(steps, key=lambda s: s.total_s)]
    summed = StepTime(
        memory_s=math.fsum(s.memory_s for s in steps),
        compute_s=math.fsum(s.compute_s for s in steps),
        interconnect_s=math.fsum(s.interconnect_s for s in steps),
        host_s=math.fsum(s.host_s for s in steps),
        tokens=tokens,
    )
    return summed.scaled(tokens / tokens_per_s / summed.total_s, tokens)


def _hardware_key(hw: GpuHardware) -> tuple[object, ...]:
    return (hw.name, hw.memory_bw_gbps, tuple(sorted(hw.tensor_tflops.items())))


def member_predictions(
    model: ModelLike,
    hardware: Sequence[GpuHardware],
    *,
    tp: int,
    pp: int,
    concurrency: int,
    context: int,
    phase: Phase = "decode",
    link: Link | None = None,
    host: HostShare | None = None,
    prompt_tokens: int | None = None,
    engine: str | None = None,
    input_per_output: float | None = None,
) -> list[Prediction]:
    """Each member's step-time prediction on its own hardware: ``predict`` for the split as
    if every GPU were that member's (one call per distinct card), so its stage pass is the
    round over ``pp`` divided by ``pp`` (:func:`ring_of`). Arguments as
    :func:`split_operating_point`."""
    if not hardware:
        raise ValueError("a split has at least one GPU")
    prompt = prompt_tokens if prompt_tokens is not None else max(context, 1)
    own: dict[tuple[object, ...], Prediction] = {}
    preds = []
    for hw in hardware:
        key = _hardware_key(hw)
        if key not in own:
            own[key] = predict(
                model,
                [hw] * len(hardware),
                tp=tp,
                pp=pp,
                concurrency=concurrency,
                context=context,
                phase=phase,
                link=link,
                host=host,
                prompt_tokens=prompt,
                engine=engine,
                input_per_output=input_per_output,
            )
        preds.append(own[key])
    return preds


def split_operating_point(
    model: ModelLike,
    members: Sequence[SplitMember],
    *,
    tp: int,
    pp: int,
    concurrency: int,
    context: int,
    phase: Phase = "decode",
    link: Link | None = None,
    host: HostShare | None = None,
    prompt_tokens: int | None = None,
    engine: str | None = None,
    input_per_output: float | None = None,
) -> SplitPoint:
    """The operating point of one replica of ``model`` on ``members`` (``tp · pp`` GPUs,
    stage-major) with ``concurrency`` sequences at ``context`` tokens (see the module).

    ``link``: the split's slowest GPU-to-GPU path (default nominal PCIe); ``host``: its CPU
    side; ``prompt_tokens``: the prompt TTFT is for (default ``context``); ``engine``:
    overrides ``model.engine``; ``input_per_output``: in ``mixed``, the prompt tokens each
    step prefills per output token (:func:`tuning.model.serving.mixed_prefill_tokens`; None: a
    whole chunk). Units: tokens/s, seconds, MHz, W.
    """
    prompt = prompt_tokens if prompt_tokens is not None else max(context, 1)
    preds = member_predictions(
        model,
        [m.hardware for m in members],
        tp=tp,
        pp=pp,
        concurrency=concurrency,
        context=context,
        phase=phase,
        link=link,
        host=host,
        prompt_tokens=prompt,
        engine=engine,
        input_per_output=input_per_output,
    )
    decode = _settle(ring_of(preds, tp, pp, concurrency, "decode"), members)
    prefill = _settle(ring_of(preds, tp, pp, concurrency, "prefill"), members)
    mixed = None
    if phase == "mixed":
        mixed = _settle(ring_of(preds, tp, pp, concurrency, "mixed"), members)

    # TTFT: the prompt's chunks through the pipeline, then the first token's round, both at
    # the prefill clocks (each member's one-token pass slowed as its prefill pass is).
    chunk = prefill.ring.tokens_per_pass
    chunks = math.ceil(prompt / chunk)
    first_stage = [0.0] * pp
    for i, (p, m) in enumerate(zip(preds, prefill.members, strict=True)):
        stage_full_s = p.prefill_step.total_s / pp
        first_round_s = max(0.0, p.ttft_s - (chunks + pp - 1) * stage_full_s)
        slowed = m.pass_s / prefill.ring.passes[i].total_s
        first_stage[m.stage] = max(first_stage[m.stage], first_round_s / pp * slowed)
    ttft_s = (
        math.fsum(prefill.stage_s) + (chunks - 1) * max(prefill.stage_s) + math.fsum(first_stage)
    )

    tokens_per_s = decode.tokens_per_s
    prefill_tps = prefill.tokens_per_s
    powered = all(m.params is not None for m in members)
    prediction = Prediction(
        phase=phase,
        tokens_per_s=tokens_per_s,
        tokens_per_s_per_seq=tokens_per_s / concurrency,
        prefill_tokens_per_s=prefill_tps,
        ttft_s=ttft_s,
        decode_step=_binding_step(decode, members, concurrency, tokens_per_s),
        prefill_step=_binding_step(prefill, members, chunk, prefill_tps),
        busy_frac=preds[0].busy_frac,
        dtype=preds[0].dtype,
        clock_mhz=tuple(m.clock_mhz for m in decode.members) if powered else (),
    )
    return SplitPoint(
        phase=phase, decode=decode, prefill=prefill, mixed=mixed, prediction=prediction
    )
