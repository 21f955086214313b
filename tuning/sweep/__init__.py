"""The sweep: probe caps on every GPU in parallel inside the power budget, allocate, heat-soak.

Phases (all times on the rig's clock — virtual on a simulated rig, locked to wall time when
the workload runs outside the process: ``cmd:``, ``openai:``, synthetic workers; see
:meth:`~tuning.backends.base.Clock.follow_wall_time`):

1. **Park**: every GPU is idled and capped at its minimum (lowering caps can only reduce load,
   so this is safe in any order; stock caps on some rigs do not fit the circuits).
2. **Probe**: each GPU's :class:`~tuning.search.CapSearch` proposes caps. A probe starts only
   when the live caps of every PSU and circuit, with it raised, stay within
   ``sweep_limit_ratio`` of their budgets; otherwise the GPU waits parked. Every cap change
   is recorded in a :class:`~tuning.telemetry.CapTrace`, so ``max_psu_load_ratio`` is
   computed from the trace, not asserted. A probe lasts until its window is steady.
3. **Allocate**: :func:`tuning.budget.allocate` picks one measured point per GPU.
4. **Heat-soak**: the chosen caps run at most ``heat_soak_s`` (30 min) of sustained load on
   every GPU at once (:class:`~tuning.sustained.SustainedSampler`). Any throttle event
   (SW/HW thermal, HW slowdown, power brake; :mod:`tuning.sustained`) rejects the config (the
   round stops at the first). Unless ``full_soak``, the round also stops once every GPU's
   steady temperature is confidently predicted from its transient
   (:func:`~tuning.telemetry.predict_steady`): a predicted throttle rejects like an event.
   Each GPU's temperature transient is fitted with a
   first-order exponential (:func:`~tuning.telemetry.fit_first_order`); every card whose
   predicted asymptote is over its SW thermal target − 1.5 °C gets its cap cut by the watts
   that move the asymptote there (resistance estimated from the same fit), and the soak
   starts again; after ``max_soak_rounds`` the slot is flagged.

The caller owns safety (a :class:`~tuning.apply.session.SafetySession` around :meth:`Sweep.run`).

One concern a module: :mod:`~tuning.sweep.config` (:class:`SweepConfig`),
:mod:`~tuning.sweep.run` (:class:`Sweep`, the phases above), :mod:`~tuning.sweep.result`
(:class:`SweepResult` and its parts). The names below are the package's public interface.
"""

from tuning.sweep.config import SweepConfig
from tuning.sweep.result import GpuResult, SoakRound, SweepResult
from tuning.sweep.run import Progress, Sweep

__all__ = ["GpuResult", "Progress", "SoakRound", "Sweep", "SweepConfig", "SweepResult"]
