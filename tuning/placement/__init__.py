"""Model placement: which GPUs serve which model, with which TP × PP split, on which NUMA node.

The problem
-----------
Each model of the models file is expanded into ``replicas`` *units*. A unit gets a GPU set S
and a split ``tp × pp == |S|`` or stays unplaced. Constraints:

* VRAM: the per-GPU estimate (:mod:`tuning.vram`) fits every GPU of S with the headroom;
* ``tp`` divides ``attention_heads`` and ``kv_heads`` divides ``tp`` or ``tp`` divides
  ``kv_heads``; llama.cpp splits either by layer (``tp == 1``) or by row (``pp == 1``);
* a GPU serves one unit, unless every unit on it has ``allow_sharing`` and their
  reservations fit together;
* pins: one replica runs on exactly the pinned GPUs, several replicas draw from them;
* a unit uses a *minimal* GPU set (no proper subset would fit) unless the model sets
  ``max_gpus``, which allows any fitting set of up to that many GPUs;
* power: every used GPU at its cap (the profile's ``cap_w``, else its power limit), every idle
  GPU at :data:`IDLE_W`, plus each PSU's platform load, within each PSU's rating and each
  circuit's continuous budget.

The objective
-------------
Lexicographic: first the total priority of the units placed (a placeable model is never
dropped to give another more GPUs), then the priority-weighted estimated throughput
``Σ priority · throughput`` in tokens/s. Throughput is the serving step-time model's predicted
aggregate decode tokens/s (:mod:`tuning.model.serving`; :mod:`tuning.placement.scoring` says
with which context, concurrency and link), under every GPU's cap (the profile's, else its
current limit): the split's operating point (:func:`tuning.model.split.split_operating_point`:
each card's stage on its own hardware at the highest clock whose power fits its cap, the
pipeline paced by its stages — as the simulator runs it). TP pays an all-reduce per layer over the
set's worst link, PP a hand-off per stage and idles when fewer sequences are in flight than
stages; so whether TP, PP or one bigger card wins follows from bandwidth, links and
``max_sequences`` instead of fixed factors. Options below a model's ``min_tokens_per_s`` or
above its ``max_ttft_s`` are not candidates.

The solver
----------
:func:`solve` is exact. Exclusive units never share a GPU, so a plan is an exclusive part on
GPUs ``E`` plus a sharing part on GPUs ``S`` with ``E ∩ S = ∅``, coupled only by that and the
power budget of ``E ∪ S``. A DP over exclusive units gives the best exclusive key for every
exact ``E`` (≤ 3^n transitions per unit); the best exclusive part beside each ``S`` follows
(3^n pairs); a branch and bound over the sharing units (priority first, fewest options first;
replicas take options in non-decreasing order) finishes, pruned by two admissible bounds: the
GPU-set bound (best exclusive part beside any final ``S' ⊇ S`` plus each remaining unit's
best option inside ``S'``) and a Lagrangian VRAM bound taken on each such final set ``S'``
(options inside it, its GPUs' residual VRAM) whose per-GPU multipliers are the capacity
duals of the LP relaxation (scipy's HiGHS), its priority part rounded down to a reachable
sum of priorities. Comparisons are lexicographic with a
1e-9 tolerance; bounds are componentwise, which keeps them safe under it.
:func:`brute_force` enumerates every assignment of every (GPU set, split) to every unit with
no pruning on the objective and is the reference the tests and ``bench/placement.py`` check
the solver against.

Modules, one concern each: :mod:`~tuning.placement.scoring` (the objective),
:mod:`~tuning.placement.problem` (its values), :mod:`~tuning.placement.build` (the
rules that make one: VRAM, splits, pins, sharing, power),
:mod:`~tuning.placement.solver` (DP + branch and bound), :mod:`~tuning.placement.bounds`
(LP/Lagrangian and subset-sum bounds), :mod:`~tuning.placement.oracle` (brute force),
:mod:`~tuning.placement.result` (the Plan and its explanations); the plan file's types and
loader are :mod:`tuning.core.plan`. The names below are the package's public interface.
"""

from tuning.core.plan import Placement, Plan, Unplaced, load_plan
from tuning.placement.build import build_problem
from tuning.placement.oracle import brute_force, evaluate
from tuning.placement.problem import (
    GpuHint,
    GpuView,
    Option,
    Problem,
    ProfileHints,
    Unit,
    load_profile_hints,
)
from tuning.placement.result import make_plan, plan
from tuning.placement.scoring import Key, group_throughput
from tuning.placement.solver import Solution, solve

__all__ = [
    "GpuHint",
    "GpuView",
    "Key",
    "Option",
    "Placement",
    "Plan",
    "Problem",
    "ProfileHints",
    "Solution",
    "Unit",
    "Unplaced",
    "brute_force",
    "build_problem",
    "evaluate",
    "group_throughput",
    "load_plan",
    "load_profile_hints",
    "make_plan",
    "plan",
    "solve",
]
