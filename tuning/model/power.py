"""The power model on a :class:`~tuning.model.step.StepTime`: what a GPU draws doing a step,
and the clock it runs under a power cap (DVFS).

Power follows what the GPU is doing. Per card, at SM clock fraction ``f`` (clock / max clock):

* **Voltage and clock.** Dynamic power of clocked logic is ``C·V²·f``; along the V/f curve the
  voltage falls roughly linearly with the clock, ``v(f) = v_min + (1 - v_min)·f`` (``v(1) = 1``),
  so the dynamic term scales as ``g(f) = f·v(f)²``.
* **Step time at a clock.** Compute time scales with ``1/f``. Memory time barely does: the
  DRAM runs on its own clock; only below ``mem_sat_frac`` are there too few SM cycles to keep
  enough loads in flight, and the achieved bandwidth falls with the clock (a soft corner of
  sharpness ``mem_sat_exp``, :func:`memory_slowdown`). Kernel time is ``max(mem(f), compute_s/f)``
  (roofline); interconnect and host time do not depend on the GPU clock.
* **Busy power** (a kernel running): ``static_w + memory_w·u_mem + g(f)·(clock_w +
  core_w·a)``, with ``u_mem = memory_s / kernel(f)`` (the share of peak bandwidth in use) and
  the SM activity ``a = stall_activity + (1 - stall_activity)·u_comp``, ``u_comp =
  (compute_s/f) / kernel(f)`` (SMs waiting on memory still issue and spin at
  ``stall_activity``).
* **Waiting power** (the card waits on the host, a link or its pipeline neighbour):
  ``static_w + g(f)·clock_w`` (the clock tree stays up; no DRAM traffic, no SM work).
* **Board power** is the time average over the step (the power limiter's window, ~100 ms,
  spans many steps of a few ms to tens of ms): ``P(f) = busy·P_busy(f) + (1 - busy)·P_wait(f)``
  with ``busy`` the share of the step this card runs kernels.
* **DVFS under a cap**: the card runs the highest clock bin whose ``P(f)`` fits the cap, never
  below ``f_min``. A cap above ``P(1)`` (the natural draw) never binds.

The knee of a cap curve is not a parameter: it is the cap at which ``P(f)`` at
``mem_sat_frac`` fits, and that depends on the workload — a memory-bound dense decode that keeps
a card busy draws its natural power and falls off below it; a pipeline stage that waits most of
the step draws less at every clock, so the same cap costs it little.

Parameters per GPU preset live in ``tuning/model/power.yaml``, each cited or marked estimate.
Units: W, s, fractions of the max SM clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from pydantic import Field, ValidationError

from tuning.core.strict import StrictModel
from tuning.core.yamlsafe import load_yaml_file
from tuning.errors import ConfigError
from tuning.model.step import StepTime

POWER_FILE = Path(__file__).with_name("power.yaml")

#: Clock bin width. Units: MHz (NVIDIA boost tables step in 15 MHz bins).
CLOCK_BIN_MHZ = 15.0


class _Shape(StrictModel):
    """The unitless part of a power split, shared by a preset's own entry and a scaled one."""

    stall_activity: float = Field(ge=0, le=1)
    v_min: float = Field(gt=0, le=1)
    mem_sat_frac: float = Field(gt=0, le=1)
    mem_sat_exp: float = Field(ge=1, le=20)
    f_min: float = Field(gt=0, le=1)
    source: dict[str, str]


class PowerParams(_Shape):
    """The power split of one GPU preset (one entry of ``power.yaml``). Units: W, fractions."""

    static_w: float = Field(gt=0, le=2000)
    memory_w: float = Field(ge=0, le=2000)
    clock_w: float = Field(ge=0, le=2000)
    core_w: float = Field(gt=0, le=2000)


class ScaledPowerParams(_Shape):
    """The split of a preset without its own entry: the watts as fractions of its default limit.

    Fields as :class:`PowerParams`, with ``*_frac`` = that term's watts / ``default_w``.
    """

    static_frac: float = Field(gt=0, le=2)
    memory_frac: float = Field(ge=0, le=2)
    clock_frac: float = Field(ge=0, le=2)
    core_frac: float = Field(gt=0, le=2)

    def at(self, default_w: float) -> PowerParams:
        """The split in watts for a card whose default power limit is ``default_w`` (W)."""
        return PowerParams(
            static_w=self.static_frac * default_w,
            memory_w=self.memory_frac * default_w,
            clock_w=self.clock_frac * default_w,
            core_w=self.core_frac * default_w,
            **self.model_dump(include=set(_Shape.model_fields)),
        )


class PowerFile(StrictModel):
    """``power.yaml``: per-preset splits and the scaled fallback."""

    presets: dict[str, PowerParams]
    default: ScaledPowerParams


@cache
def load_power_file() -> PowerFile:
    """``power.yaml``, validated; errors name the file and say what to fix."""
    doc = load_yaml_file(POWER_FILE, "power model file")
    try:
        return PowerFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(f"{POWER_FILE}: {exc}; fix the entry (units: W, fractions)") from exc


def load_power_params() -> dict[str, PowerParams]:
    """Every preset's own power split from ``power.yaml``."""
    return dict(load_power_file().presets)


def power_params(preset: str) -> PowerParams:
    """The power split of ``preset``; :class:`ConfigError` naming the known ones otherwise."""
    params = load_power_params()
    if preset not in params:
        known = ", ".join(sorted(params))
        raise ConfigError(f"{POWER_FILE}: no power entry for preset {preset!r}; known: {known}")
    return params[preset]


def params_for(preset: str, default_w: float) -> PowerParams:
    """The preset's own split, else the scaled default at its default limit ``default_w`` (W)."""
    own = load_power_file().presets.get(preset)
    return own if own is not None else load_power_file().default.at(default_w)


def dynamic_scale(p: PowerParams, f: float) -> float:
    """``g(f) = f·v(f)²`` with ``v(f) = v_min + (1 - v_min)·f``; 1 at full clock."""
    v = p.v_min + (1.0 - p.v_min) * f
    return f * v * v


def memory_slowdown(p: PowerParams, f: float) -> float:
    """Memory time at clock ``f`` over memory time at full clock (1 at ``f = 1``).

    The SMs keep ``bytes in flight ∝ f`` (Little's law), so the achieved bandwidth is the smaller
    of the DRAM's peak and a clock-proportional issue rate, with a soft corner of sharpness
    ``n = mem_sat_exp`` at ``f = mem_sat_frac``: ``t(f) ∝ (1 + (mem_sat_frac/f)**n)**(1/n)``,
    normalised to 1 at full clock. Large ``n``: flat above the corner, ``1/f`` below it.
    """
    n = p.mem_sat_exp
    return ((1.0 + (p.mem_sat_frac / f) ** n) / (1.0 + p.mem_sat_frac**n)) ** (1.0 / n)


@dataclass(frozen=True)
class OperatingPoint:
    """One card's state running a step shape at a clock. Units in the names."""

    clock_frac: float
    power_w: float
    step_s: float
    tokens_per_s: float
    busy_frac: float


def at_clock(
    p: PowerParams, step: StepTime, f: float, *, busy_scale: float = 1.0
) -> OperatingPoint:
    """The card at clock fraction ``f`` running steps of shape ``step`` (times at full clock).

    ``busy_scale`` is the share of the step's kernel time spent on *this* card (1 for a single
    card or a tensor-parallel member; ``1/pp`` for one stage of a ``pp``-stage pipeline that
    runs the stages one after another, each holding an equal share of the layers).
    """
    if not 0 < f <= 1:
        raise ValueError(f"clock fraction must be in (0, 1], got {f!r}")
    mem_s = step.memory_s * memory_slowdown(p, f)
    comp_s = step.compute_s / f
    kernel_s = max(mem_s, comp_s)
    total_s = kernel_s + step.interconnect_s + step.host_s
    g = dynamic_scale(p, f)
    if kernel_s > 0:
        u_mem = step.memory_s / kernel_s
        activity = p.stall_activity + (1.0 - p.stall_activity) * comp_s / kernel_s
    else:
        u_mem = activity = 0.0
    busy = busy_scale * kernel_s / total_s
    work_w = p.memory_w * u_mem + g * p.core_w * activity
    power_w = p.static_w + g * p.clock_w + busy * work_w
    return OperatingPoint(
        clock_frac=f,
        power_w=power_w,
        step_s=total_s,
        tokens_per_s=step.tokens / total_s,
        busy_frac=busy,
    )


def clock_bins(max_clock_mhz: float, f_min: float) -> list[float]:
    """Clock fractions of the 15 MHz bins from ``f_min`` up to the max clock, ascending."""
    top = math.floor(max_clock_mhz / CLOCK_BIN_MHZ + 1e-9)
    low = max(1, math.ceil(f_min * max_clock_mhz / CLOCK_BIN_MHZ - 1e-9))
    return [k * CLOCK_BIN_MHZ / max_clock_mhz for k in range(low, top + 1)]


def under_cap(
    p: PowerParams,
    step: StepTime,
    cap_w: float,
    max_clock_mhz: float,
    *,
    busy_scale: float = 1.0,
) -> OperatingPoint:
    """DVFS: the highest 15 MHz clock bin whose board power fits ``cap_w`` (else ``f_min``)."""
    bins = clock_bins(max_clock_mhz, p.f_min)
    for f in reversed(bins):
        point = at_clock(p, step, f, busy_scale=busy_scale)
        if point.power_w <= cap_w:
            return point
    return at_clock(p, step, bins[0], busy_scale=busy_scale)


def natural_power_w(p: PowerParams, step: StepTime, *, busy_scale: float = 1.0) -> float:
    """What the card draws uncapped at its max clock (a cap above this never binds). Units: W."""
    return at_clock(p, step, 1.0, busy_scale=busy_scale).power_w


@dataclass(frozen=True)
class PowerTable:
    """A card's operating points at every clock bin, ascending (numpy arrays, same length).

    ``power_w`` is made non-decreasing (a running maximum), so "the highest bin whose power
    fits" is the count of bins that fit, minus one.
    """

    clock_mhz: np.ndarray
    power_w: np.ndarray
    tokens_per_s: np.ndarray


@dataclass(frozen=True)
class PowerTerms:
    """The parts of :func:`at_clock` at every clock bin (numpy arrays, same length), for a
    card whose busy share is set from outside (a pipeline stage paced by its neighbours).

    Board power at a busy share ``b`` is ``wait_w + b · work_w``; ``kernel_s`` is the step's
    kernel time at that clock and ``fixed_s`` its interconnect + host time (clock-free).
    """

    clock_mhz: np.ndarray
    kernel_s: np.ndarray
    fixed_s: float
    wait_w: np.ndarray
    work_w: np.ndarray


def power_terms(p: PowerParams, step: StepTime, max_clock_mhz: float) -> PowerTerms:
    """:func:`at_clock`'s waiting and working power and kernel time at every 15 MHz bin from
    ``f_min`` to the max clock, vectorised (the one place the formulas are evaluated in bulk)."""
    f = np.asarray(clock_bins(max_clock_mhz, p.f_min), dtype=float)
    n = p.mem_sat_exp
    slow = ((1.0 + (p.mem_sat_frac / f) ** n) / (1.0 + p.mem_sat_frac**n)) ** (1.0 / n)
    mem_s = step.memory_s * slow
    comp_s = step.compute_s / f
    kernel_s = np.maximum(mem_s, comp_s)
    v = p.v_min + (1.0 - p.v_min) * f
    g = f * v * v
    safe = np.where(kernel_s > 0, kernel_s, 1.0)
    u_mem = np.where(kernel_s > 0, step.memory_s / safe, 0.0)
    activity = np.where(
        kernel_s > 0, p.stall_activity + (1.0 - p.stall_activity) * comp_s / safe, 0.0
    )
    return PowerTerms(
        clock_mhz=f * max_clock_mhz,
        kernel_s=kernel_s,
        fixed_s=step.interconnect_s + step.host_s,
        wait_w=p.static_w + g * p.clock_w,
        work_w=p.memory_w * u_mem + g * p.core_w * activity,
    )


def power_table(
    p: PowerParams, step: StepTime, max_clock_mhz: float, *, busy_scale: float = 1.0
) -> PowerTable:
    """:func:`at_clock` at every 15 MHz bin from ``f_min`` to the max clock, vectorised."""
    t = power_terms(p, step, max_clock_mhz)
    total_s = t.kernel_s + t.fixed_s
    busy = busy_scale * t.kernel_s / total_s
    return PowerTable(
        clock_mhz=t.clock_mhz,
        power_w=np.maximum.accumulate(t.wait_w + busy * t.work_w),
        tokens_per_s=step.tokens / total_s,
    )


def busy_scale_of(step: StepTime, busy_frac: float) -> float:
    """The ``busy_scale`` of a card that works ``busy_frac`` of each step (the step-time
    model's :attr:`~tuning.model.serving.Prediction.busy_frac`): ``busy_frac · total / kernel``,
    so that :func:`at_clock` at full clock gives that card exactly ``busy_frac`` busy."""
    if not 0 <= busy_frac <= 1:
        raise ValueError(f"busy_frac must be in [0, 1], got {busy_frac!r}")
    if step.kernel_s <= 0:
        return 0.0
    return busy_frac * step.total_s / step.kernel_s
