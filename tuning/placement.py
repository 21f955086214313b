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
``Σ priority · throughput``. Throughput is relative, in single-GPU equivalents::

    rate(g)     = throughput_rel(g) · thermal(g)          # profile; 1.0 without one
    throughput  = |S| · min_{g∈S} rate(g) · L^(tp−1) · (PP_EFFICIENCY · L^¼ if pp > 1)

where ``L`` is the factor of the worst link inside S (:data:`LINK_FACTOR`: NVLink >
same switch > several switches > host bridge > NUMA node > cross-socket; any GPU in S with a
degraded PCIe link drops ``L`` to :data:`DEGRADED_LINK_FACTOR`, below cross-socket). TP pays
the link on every layer (all-reduce), PP only passes activations between stages but has a
pipeline bubble: on NVLink wide TP wins, on PCIe beyond 2 GPUs PP wins (vLLM's guidance).
``thermal(g)`` falls from 1 at ≥ 10 °C of headroom under the GPU's thermal target to 0.8
at none, so hot work goes to cool slots.

The solver
----------
:func:`solve` is exact. Exclusive units never share a GPU, so a plan is an exclusive part on
GPUs ``E`` plus a sharing part on GPUs ``S`` with ``E ∩ S = ∅``, coupled only by that and the
power budget of ``E ∪ S``. A DP over exclusive units gives the best exclusive key for every
exact ``E`` (≤ 3^n transitions per unit); the best exclusive part beside each ``S`` follows
(3^n pairs); a branch and bound over the sharing units (priority first, fewest options first;
replicas take options in non-decreasing order) finishes, pruned by two admissible bounds: the
GPU-set bound (best exclusive part beside any final ``S' ⊇ S`` plus each remaining unit's
best option inside ``S'``) and a Lagrangian VRAM bound whose per-GPU multipliers are the
capacity duals of the LP relaxation (scipy's HiGHS), its priority part rounded down to a
reachable sum of priorities. Comparisons are lexicographic with a
1e-9 tolerance; bounds are componentwise, which keeps them safe under it.
:func:`brute_force` enumerates every assignment of every (GPU set, split) to every unit with
no pruning on the objective and is the reference the tests and ``bench/placement.py`` check
the solver against.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inventory.models import ModelsFile, ModelSpec
from tuning.core.pcie import link_rank, nvlink_count
from tuning.core.plan import Placement, Plan, Unplaced, load_plan
from tuning.core.power import BudgetModel, Circuit, Psu
from tuning.core.profile import Profile, load_profile
from tuning.core.rig import GpuInfo, RigSnapshot
from tuning.vram import estimate, gpu_memory_utilization, usable_mib

#: The plan file's types and loader live in :mod:`tuning.core.plan`; re-exported for callers.
__all__ = ["Placement", "Plan", "Unplaced", "load_plan"]

#: Efficiency of the worst link inside a GPU set, per nvidia-smi ``topo -m`` class.
LINK_FACTOR: Mapping[str, float] = {
    "NV": 0.97,
    "PIX": 0.90,
    "PXB": 0.85,
    "PHB": 0.75,
    "NODE": 0.65,
    "SYS": 0.50,
}
#: A degraded PCIe link (narrower or slower than its max under load) ranks below SYS.
DEGRADED_LINK_FACTOR = 0.40
#: A single GPU, or an NVLink set, on a degraded PCIe link loses little (weights load once,
#: GPU-to-GPU traffic rides NVLink): a tie-breaker only.
DEGRADED_SINGLE_FACTOR = 0.98
#: Pipeline-parallel efficiency (the bubble) before the link's small share.
PP_EFFICIENCY = 0.80
#: Draw of a GPU that serves nothing (persistence mode on, P8). Units: W.
IDLE_W = 30.0
#: Links over which CUDA peer-to-peer works (NVLink, PCIe switches without a host bridge).
P2P_LINKS = frozenset({"PIX", "PXB"})
#: Thermal headroom at which a GPU no longer loses throughput. Units: °C.
THERMAL_FULL_HEADROOM_C = 10.0
#: Thermal target assumed when the GPU reports none. Units: °C.
DEFAULT_TARGET_C = 83.0

_EPS = 1e-9


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuHint:
    """What a tuning profile says about one GPU (every field optional)."""

    cap_w: float | None = None
    peak_temp_c: float | None = None
    throughput_rel: float | None = None


@dataclass(frozen=True)
class ProfileHints:
    """The parts of a tuning profile placement uses, keyed by GPU UUID."""

    gpus: Mapping[str, GpuHint] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def from_profile(cls, profile: Profile, source: str | None = None) -> ProfileHints:
        """The per-GPU cap, heat-soak peak and relative throughput of a typed profile."""
        return cls(
            gpus={
                gpu.uuid: GpuHint(
                    cap_w=gpu.cap_w,
                    peak_temp_c=gpu.peak_temp_c,
                    throughput_rel=gpu.throughput_rel,
                )
                for gpu in profile.gpus
            },
            source=source,
        )


def load_profile_hints(path: str | Path) -> ProfileHints:
    """The placement's view of a profile file, read by the one profile loader.

    :func:`tuning.core.profile.load_profile` refuses a malformed profile with every problem
    and its YAML path (a directory means ``DIR/profile.yaml``).
    """
    return ProfileHints.from_profile(load_profile(path), source=str(path))


@dataclass(frozen=True)
class GpuView:
    """Per-GPU planning facts derived from the snapshot and the profile."""

    position: int  # bit position in masks (order of ``RigSnapshot.gpus``)
    index: int
    uuid: str
    memory_total_mib: int
    usable_mib: float
    numa_node: int | None
    cpu_list: tuple[int, ...] | None
    psu: str | None
    degraded: bool
    rate: float
    thermal_factor: float
    power_w: float | None


@dataclass(frozen=True)
class Unit:
    """One replica of one model."""

    model: ModelSpec
    replica: int
    port: int

    @property
    def label(self) -> str:
        return self.model.name if self.model.replicas == 1 else f"{self.model.name}#{self.replica}"


@dataclass(frozen=True)
class Option:
    """A candidate placement of one unit: GPU set (bit mask), split, and what it costs/earns."""

    mask: int
    tp: int
    pp: int
    need_mib: float  # per GPU
    reserve_mib: tuple[float, ...]  # per GPU position in the mask order (for sharing)
    throughput: float
    value: float  # priority · throughput
    worst_link: str


@dataclass(frozen=True)
class Problem:
    """A placement problem: GPUs, units in search order, candidate options per unit."""

    rig_name: str
    fingerprint: str
    gpus: tuple[GpuView, ...]
    units: tuple[Unit, ...]
    options: tuple[tuple[Option, ...], ...]
    no_option_reasons: tuple[str | None, ...]
    headroom_pct: float
    links: Mapping[tuple[int, int], str]
    power_ok: tuple[bool, ...]  # indexed by used-GPU mask
    pin_masks: tuple[int | None, ...] = ()  # per unit; None: not pinned
    psus: tuple[Psu, ...] = ()
    circuits: tuple[Circuit, ...] = ()

    @property
    def n(self) -> int:
        return len(self.gpus)


# --------------------------------------------------------------------------------------------
# Building the problem
# --------------------------------------------------------------------------------------------


def thermal_factor(gpu: GpuInfo, hint: GpuHint | None) -> float:
    """Throughput factor from heat-soak headroom: 1 at ≥ 10 °C below target, 0.8 at none."""
    if hint is None or hint.peak_temp_c is None:
        return 1.0
    thresholds = gpu.thresholds
    if thresholds.target_c is not None:
        limit_c = thresholds.target_c
    elif thresholds.slowdown_c is not None:
        limit_c = thresholds.slowdown_c - 5
    else:
        limit_c = DEFAULT_TARGET_C
    headroom_c = limit_c - hint.peak_temp_c
    if headroom_c >= THERMAL_FULL_HEADROOM_C:
        return 1.0
    return max(0.8, 1 - 0.2 * (THERMAL_FULL_HEADROOM_C - max(headroom_c, 0)) / 10)


def link_factor(link: str | None) -> float:
    """:data:`LINK_FACTOR` of a link name; unknown links count as cross-socket."""
    if link is None:
        return LINK_FACTOR["SYS"]
    if nvlink_count(link):
        return LINK_FACTOR["NV"]
    return LINK_FACTOR.get(link, LINK_FACTOR["SYS"])


def splits(k: int, engine: str) -> list[tuple[int, int]]:
    """All ``(tp, pp)`` with ``tp · pp == k`` the engine can run."""
    pairs = [(tp, k // tp) for tp in range(1, k + 1) if k % tp == 0]
    if engine == "llama.cpp":
        pairs = [(tp, pp) for tp, pp in pairs if tp == 1 or pp == 1]
    return pairs


def split_valid(model: ModelSpec, tp: int, pp: int) -> bool:
    """Head divisibility (TP) and layer count (PP) rules."""
    if model.attention_heads % tp:
        return False
    if model.kv_heads % tp and tp % model.kv_heads:
        return False
    return pp <= model.layers


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _worst_link(mask: int, links: Mapping[tuple[int, int], str]) -> str:
    positions = _bits(mask)
    worst = "X"
    worst_rank = -1
    for a_pos, a in enumerate(positions):
        for b in positions[a_pos + 1 :]:
            link = links.get((a, b), "SYS")
            rank = link_rank(link)
            if rank > worst_rank:
                worst, worst_rank = link, rank
    return worst


def group_throughput(
    gpus: Sequence[GpuView],
    mask: int,
    tp: int,
    pp: int,
    links: Mapping[tuple[int, int], str],
    max_sequences: int | None = None,
) -> tuple[float, str]:
    """Relative throughput of one replica on ``mask`` split ``tp × pp`` and its worst link.

    A pipeline of ``pp`` stages keeps at most ``max_sequences`` of them busy (each in-flight
    sequence occupies one stage), so the stages beyond that add memory, not throughput.
    """
    members = [gpus[i] for i in _bits(mask)]
    busy_stages = pp if max_sequences is None else min(pp, max_sequences)
    base = tp * busy_stages * min(g.rate for g in members)
    if len(members) == 1:
        return base * (DEGRADED_SINGLE_FACTOR if members[0].degraded else 1.0), "X"
    worst = _worst_link(mask, links)
    factor = link_factor(worst)
    degraded = any(g.degraded for g in members)
    if degraded and not nvlink_count(worst):
        factor = min(factor, DEGRADED_LINK_FACTOR)
    efficiency = factor ** (tp - 1)
    if degraded and nvlink_count(worst):
        # GPU↔GPU traffic rides NVLink; only host traffic (loads, inputs) pays the slow link
        efficiency *= DEGRADED_SINGLE_FACTOR
    if pp > 1:
        efficiency *= PP_EFFICIENCY * factor**0.25
    return base * efficiency, worst


def p2p_available(worst_link: str) -> bool:
    """Whether CUDA P2P works across the worst link of a set (NVLink or a PCIe switch)."""
    return worst_link == "X" or bool(nvlink_count(worst_link)) or worst_link in P2P_LINKS


def _gpu_power_w(gpu: GpuInfo, hint: GpuHint | None) -> float | None:
    if hint is not None and hint.cap_w is not None:
        return hint.cap_w
    for value in (gpu.power_limit_w, gpu.power_default_w, gpu.power_max_w):
        if value is not None:
            return value
    return None


def power_violations(
    problem_gpus: Sequence[GpuView],
    psus: Sequence[Psu],
    circuits: Sequence[Circuit],
    used_mask: int,
) -> list[str]:
    """Sentences naming each PSU or circuit over budget when ``used_mask`` GPUs run at cap.

    Used GPUs count at their cap, the others at :data:`IDLE_W`; the load formula is the core
    budget model's (:class:`tuning.core.power.BudgetModel`).
    """
    budget = BudgetModel(
        psus=tuple(psus),
        circuits=tuple(circuits),
        gpu_psu={gpu.position: gpu.psu for gpu in problem_gpus},
    )
    watts = {
        gpu.position: gpu.power_w if used_mask >> gpu.position & 1 else IDLE_W
        for gpu in problem_gpus
        if gpu.power_w is not None
    }
    return [
        f"PSU {over.name} {over.load_w:.0f} W > {over.limit_w:.0f} W"
        if over.kind == "psu"
        else f"circuit {over.name} {over.load_w:.0f} W at the wall > {over.limit_w:.0f} W"
        for over in budget.overloads(watts, slack_w=_EPS)
    ]


def build_problem(
    snapshot: RigSnapshot,
    models: ModelsFile,
    profile: ProfileHints | None = None,
) -> Problem:
    """Derive GPU facts, units and every unit's candidate options (see module docstring)."""
    hints = profile.gpus if profile is not None else {}
    views: list[GpuView] = []
    for position, gpu in enumerate(snapshot.gpus):
        uuid = gpu.uuid or f"GPU-index-{gpu.index}"
        hint = hints.get(uuid)
        thermal = thermal_factor(gpu, hint)
        rel = hint.throughput_rel if hint is not None and hint.throughput_rel else 1.0
        total = gpu.memory_total_mib or 0
        views.append(
            GpuView(
                position=position,
                index=gpu.index,
                uuid=uuid,
                memory_total_mib=total,
                usable_mib=usable_mib(total, models.headroom_pct),
                numa_node=gpu.numa_node,
                cpu_list=gpu.cpu_list,
                psu=gpu.psu,
                degraded=gpu.pcie.degraded,
                rate=rel * thermal,
                thermal_factor=thermal,
                power_w=_gpu_power_w(gpu, hint),
            )
        )
    index_to_pos = {gpu.index: pos for pos, gpu in enumerate(snapshot.gpus)}
    links: dict[tuple[int, int], str] = {}
    for entry in snapshot.topology:
        if entry.a in index_to_pos and entry.b in index_to_pos:
            a, b = sorted((index_to_pos[entry.a], index_to_pos[entry.b]))
            links[(a, b)] = entry.link

    ports = models.ports()
    ordered = sorted(enumerate(models.models), key=lambda item: (-item[1].priority, item[0]))
    units = tuple(
        Unit(model=model, replica=r, port=ports[model.name][r])
        for _, model in ordered
        for r in range(model.replicas)
    )
    n = len(views)
    power_ok = tuple(
        not power_violations(views, snapshot.psus, snapshot.circuits, mask)
        for mask in range(1 << n)
    )
    pin_masks = tuple(_pin_mask(unit.model, snapshot)[0] for unit in units)
    options_cache: dict[str, tuple[tuple[Option, ...], str | None]] = {}
    options: list[tuple[Option, ...]] = []
    reasons: list[str | None] = []
    for unit in units:
        if unit.model.name not in options_cache:
            options_cache[unit.model.name] = _unit_options(unit.model, snapshot, views, links)
        opts, reason = options_cache[unit.model.name]
        options.append(opts)
        reasons.append(reason)
    return Problem(
        rig_name=snapshot.name,
        fingerprint=snapshot.fingerprint(),
        gpus=tuple(views),
        units=units,
        options=tuple(options),
        no_option_reasons=tuple(reasons),
        headroom_pct=models.headroom_pct,
        links=links,
        power_ok=power_ok,
        pin_masks=pin_masks,
        psus=snapshot.psus,
        circuits=snapshot.circuits,
    )


def _pin_mask(model: ModelSpec, snapshot: RigSnapshot) -> tuple[int | None, str | None]:
    if model.gpus is None:
        return None, None
    mask = 0
    for key in model.gpus:
        position = next(
            (pos for pos, g in enumerate(snapshot.gpus) if key in (g.uuid, g.pci_bus_id)), None
        )
        if position is None:
            try:
                found = snapshot.gpu(key)
            except Exception:
                return None, f"pinned GPU {key} is not on rig {snapshot.name!r}; fix 'gpus:'"
            position = snapshot.gpus.index(found)
        mask |= 1 << position
    return mask, None


def candidate_ok(model: ModelSpec, mask: int, tp: int, pp: int, views: Sequence[GpuView]) -> bool:
    """Unit-local rules: split valid and the estimate fits every GPU of ``mask``."""
    if not split_valid(model, tp, pp):
        return False
    need = estimate(model, tp, pp).need_mib
    return all(need <= views[i].usable_mib + _EPS for i in _bits(mask))


def set_allowed(
    model: ModelSpec,
    mask: int,
    fits_any: Mapping[int, bool],
    pin_mask: int | None,
) -> bool:
    """Set-level rules: pins, ``max_gpus`` or minimality (no proper subset fits)."""
    if pin_mask is not None:
        if model.replicas == 1:
            return mask == pin_mask
        if mask & ~pin_mask:
            return False
    if model.max_gpus is not None:
        return mask.bit_count() <= model.max_gpus
    if model.gpus is not None and model.replicas == 1:
        return True
    sub = (mask - 1) & mask
    while sub:
        if fits_any[sub]:
            return False
        sub = (sub - 1) & mask
    return True


def _unit_options(
    model: ModelSpec,
    snapshot: RigSnapshot,
    views: Sequence[GpuView],
    links: Mapping[tuple[int, int], str],
) -> tuple[tuple[Option, ...], str | None]:
    n = len(views)
    pin_mask, pin_reason = _pin_mask(model, snapshot)
    if pin_reason:
        return (), pin_reason
    by_k: dict[int, list[tuple[int, int, float]]] = {}
    for k in range(1, n + 1):
        rows = []
        for tp, pp in splits(k, model.engine):
            if split_valid(model, tp, pp):
                rows.append((tp, pp, estimate(model, tp, pp).need_mib))
        by_k[k] = rows
    min_usable = [0.0] * (1 << n)
    fits_any: dict[int, bool] = {0: False}
    for mask in range(1, 1 << n):
        low = mask & -mask
        pos = low.bit_length() - 1
        rest = mask ^ low
        min_usable[mask] = (
            views[pos].usable_mib if not rest else min(views[pos].usable_mib, min_usable[rest])
        )
        k = mask.bit_count()
        fits_any[mask] = any(need <= min_usable[mask] + _EPS for _, _, need in by_k[k])
    result: list[Option] = []
    for mask in range(1, 1 << n):
        if not fits_any[mask] or not set_allowed(model, mask, fits_any, pin_mask):
            continue
        best: list[Option] = []
        for tp, pp, need in by_k[mask.bit_count()]:
            if need > min_usable[mask] + _EPS:
                continue
            throughput, worst = group_throughput(views, mask, tp, pp, links, model.max_sequences)
            best.append(
                Option(
                    mask=mask,
                    tp=tp,
                    pp=pp,
                    need_mib=need,
                    reserve_mib=_reserve(model, need, mask, views),
                    throughput=throughput,
                    value=model.priority * throughput,
                    worst_link=worst,
                )
            )
        best.sort(key=lambda o: (-o.throughput, o.need_mib, o.tp))
        if model.allow_sharing:
            # keep the Pareto front (throughput up, reservation down): a lower-throughput
            # split that reserves less may be what lets another model share the GPUs
            front: list[Option] = []
            for opt in best:
                if all(max(opt.reserve_mib) < max(f.reserve_mib) - _EPS for f in front):
                    front.append(opt)
            result.extend(front)
        elif best:
            result.append(best[0])
    if result:
        result.sort(key=lambda o: (-o.value, o.mask))
        return tuple(result), None
    return (), _no_fit_reason(model, views, by_k, pin_mask)


def _reserve(
    model: ModelSpec, need: float, mask: int, views: Sequence[GpuView]
) -> tuple[float, ...]:
    """VRAM the engine actually takes on each GPU of ``mask`` when the GPUs are shared.

    vLLM and SGLang reserve one utilisation fraction of *every* GPU's total, so on a mixed
    set the bigger GPUs lose more than the estimate; llama.cpp takes what it needs.
    """
    members = [views[i] for i in _bits(mask)]
    if model.engine == "llama.cpp":
        return tuple(need for _ in members)
    util = max(
        gpu_memory_utilization(need, g.memory_total_mib, headroom_pct=0.0, exclusive=False)
        for g in members
    )
    return tuple(max(need, util * g.memory_total_mib) for g in members)


def _no_fit_reason(
    model: ModelSpec,
    views: Sequence[GpuView],
    by_k: Mapping[int, list[tuple[int, int, float]]],
    pin_mask: int | None,
) -> str:
    if pin_mask is not None:
        pinned = [views[i] for i in _bits(pin_mask)]
        k = len(pinned)
        if model.replicas == 1 and not by_k[k]:
            return (
                f"no TP×PP split of the {k} pinned GPUs suits the model "
                f"(TP must divide {model.attention_heads} attention heads)"
            )
        usable = min(g.usable_mib for g in pinned)
        needs = [need for rows in by_k.values() for _, _, need in rows]
        return (
            f"does not fit the pinned GPUs: needs {min(needs):.0f} MiB per GPU at best, "
            f"the smallest pinned GPU has {usable:.0f} MiB usable "
            f"(after {100 - usable / max(pinned[0].memory_total_mib, 1) * 100:.0f} % headroom)"
        )
    parts = []
    for k, rows in by_k.items():
        if rows:
            tp, pp, need = min(rows, key=lambda row: row[2])
            parts.append(f"{k} GPU(s) {need:.0f} MiB each (tp={tp}, pp={pp})")
    largest = max((g.usable_mib for g in views), default=0)
    if not parts:
        return "no TP×PP split fits the model's heads on this rig"
    return (
        "fits no GPU set of this rig with the VRAM headroom: needs "
        + "; ".join(parts[:4])
        + f"; the largest GPU has {largest:.0f} MiB usable"
    )


# --------------------------------------------------------------------------------------------
# Solving
# --------------------------------------------------------------------------------------------

Key = tuple[float, float]  # (placed priority, priority-weighted throughput)
_NEG: Key = (-math.inf, -math.inf)


@dataclass(frozen=True)
class Solution:
    """The best assignment: per unit an option index or ``None`` (unplaced), and its key."""

    choice: tuple[int | None, ...]
    placed_priority: float
    score: float

    @property
    def key(self) -> Key:
        return (self.placed_priority, self.score)


def _better(a: Key, b: Key) -> bool:
    if a[0] > b[0] + _EPS:
        return True
    if a[0] < b[0] - _EPS:
        return False
    return a[1] > b[1] + _EPS


def solve(problem: Problem, *, exclude: Mapping[int, int] | None = None) -> Solution | None:
    """Exact optimum of ``problem``; ``None`` when no plan meets the power budget.

    ``exclude`` maps a unit position to a GPU mask that unit may not use (used to find the
    best alternative plan).

    Exclusive units never touch a GPU another unit uses, so a plan splits into an exclusive
    part on GPU set ``E`` and a sharing part whose units cover ``S`` with ``E ∩ S = ∅``;
    the two interact only through that and the power budget of ``E ∪ S``:

    1. a DP over exclusive units gives ``f[E]``, the best exclusive key using exactly ``E``
       (≤ 3^n transitions per unit: each option times the subsets of its complement);
    2. ``F[S]`` = best ``f[E]`` with ``E ∩ S = ∅`` and ``power_ok[E | S]`` (3^n pairs);
    3. a branch and bound over sharing units (priority first, few options first) with the
       admissible bound ``max over S' ⊇ S`` of ``F[S']`` plus every remaining unit's best
       option inside ``S'`` (VRAM sharing relaxed); identical units (replicas) take options
       in non-decreasing order, which drops their permutations.
    """
    excluded = exclude or {}
    n = problem.n
    full = (1 << n) - 1
    size = 1 << n
    power_ok = problem.power_ok
    count = len(problem.units)
    opts: list[tuple[tuple[int, Option], ...]] = [
        tuple(
            (j, o)
            for j, o in enumerate(problem.options[u])
            if excluded.get(u) is None or o.mask != excluded[u]
        )
        for u in range(count)
    ]
    exclusive = [u for u in range(count) if opts[u] and not problem.units[u].model.allow_sharing]
    sharing = [u for u in range(count) if opts[u] and problem.units[u].model.allow_sharing]

    # 1. exclusive units: f[E] over exactly-used masks, with back pointers per unit
    f: list[Key | None] = [None] * size
    f[0] = (0.0, 0.0)
    backs: list[list[tuple[int, int] | None]] = []
    for u in exclusive:
        priority = problem.units[u].model.priority
        new = list(f)
        back: list[tuple[int, int] | None] = [None] * size
        for j, option in opts[u]:
            mask = option.mask
            comp = full & ~mask
            sub = comp
            while True:
                prev = f[sub]
                if prev is not None:
                    key = (prev[0] + priority, prev[1] + option.value)
                    target = sub | mask
                    held = new[target]
                    if held is None or _better(key, held):
                        new[target] = key
                        back[target] = (sub, j)
                if not sub:
                    break
                sub = (sub - 1) & comp
        f = new
        backs.append(back)

    # 2. F[S]: best exclusive part beside a sharing part that uses exactly S
    best_excl: list[Key | None] = [None] * size
    best_excl_mask = [0] * size
    for shared_mask in range(size):
        comp = full & ~shared_mask
        sub = comp
        top: Key | None = None
        top_mask = 0
        while True:
            part = f[sub]
            if (
                part is not None
                and power_ok[sub | shared_mask]
                and (top is None or _better(part, top))
            ):
                top, top_mask = part, sub
            if not sub:
                break
            sub = (sub - 1) & comp
        best_excl[shared_mask] = top
        best_excl_mask[shared_mask] = top_mask

    choice: list[int | None] = [None] * count
    share_choice = _search_sharing(problem, sharing, exclusive, opts, best_excl, n)
    if share_choice is None:
        return None
    total, picks, used = share_choice
    for u, j in picks.items():
        choice[u] = j
    mask = best_excl_mask[used]
    for u, back in zip(reversed(exclusive), reversed(backs), strict=True):
        step = back[mask]
        if step is not None:
            mask, choice[u] = step
    return Solution(choice=tuple(choice), placed_priority=total[0], score=total[1])


def _search_sharing(
    problem: Problem,
    units: Sequence[int],
    exclusive: Sequence[int],
    opts: Sequence[tuple[tuple[int, Option], ...]],
    best_excl: Sequence[Key | None],
    n: int,
) -> tuple[Key, dict[int, int], int] | None:
    """Branch and bound over the sharing units on top of ``best_excl`` (see :func:`solve`).

    Two admissible bounds, taken componentwise (placed priority, score), the smaller wins:

    * *sets*: the best exclusive part beside any final sharing GPU set ``S' ⊇ S`` plus each
      remaining sharing unit's best option inside ``S'`` (exact on GPU sets, VRAM relaxed);
    * *VRAM* (Lagrangian): every GPU ``g`` can still take at most ``resid_g`` MiB of
      reservations, so for multipliers ``λ ≥ 0`` the remaining units add at most
      ``Σ_units max(0, max_option(value − Σ_g λ_g·reserve_g)) + Σ_g λ_g·resid_g``; ``λ``
      are the capacity duals of the LP relaxation (HiGHS) at the root. Exclusive units count
      as reserving a whole GPU, which only relaxes them further. Its priority part rounds
      down to the largest subset sum of the open units' priorities (placed priority takes no
      other value), so a fractional 32.7 over an incumbent of 32 defers to the score bound.

    Returns the best total key, each placed sharing unit's option index and the GPUs the
    sharing units use; ``None`` when no combination leaves a plan inside the power budget.
    """
    size = 1 << n
    usable = tuple(g.usable_mib for g in problem.gpus)
    signature = {
        u: (
            problem.units[u].model.priority,
            tuple((o.mask, o.tp, o.pp, o.reserve_mib, o.value) for _, o in opts[u]),
        )
        for u in units
    }
    first_seen: dict[object, int] = {}
    for u in units:
        first_seen.setdefault(signature[u], u)
    # highest priority first; fewest options first; replicas (equal signatures) adjacent
    order = sorted(
        units,
        key=lambda u: (
            -problem.units[u].model.priority,
            len(opts[u]),
            first_seen[signature[u]],
            u,
        ),
    )
    k = len(order)
    twin = [i > 0 and signature[order[i]] == signature[order[i - 1]] for i in range(k)]
    neg = -math.inf

    # bound_p[i][S], bound_s[i][S]: componentwise upper bounds on what units i.. plus the
    # exclusive part can add once the sharing part's GPUs include S (a componentwise bound is
    # safe under the tolerant lexicographic comparison of keys)
    add_p = [0.0] * size
    add_s = [0.0] * size
    bound_p: list[list[float]] = [[]] * (k + 1)
    bound_s: list[list[float]] = [[]] * (k + 1)
    for i in range(k, -1, -1):
        if i < k:
            u = order[i]
            within = [neg] * size
            for _, option in opts[u]:
                within[option.mask] = max(within[option.mask], option.value)
            _subset_max(within, n)
            priority = problem.units[u].model.priority
            for mask in range(size):
                if within[mask] > neg:
                    add_p[mask] += priority
                    add_s[mask] += max(within[mask], 0.0)
        bp = [neg] * size
        bs = [neg] * size
        for mask in range(size):
            key = best_excl[mask]
            if key is not None:
                bp[mask] = key[0] + add_p[mask]
                bs[mask] = key[1] + add_s[mask]
        _superset_max(bp, n)
        _superset_max(bs, n)
        bound_p[i] = bp
        bound_s[i] = bs

    # VRAM bound: per-GPU capacity of all future reservations, LP duals as multipliers
    cap = [
        max(
            [usable[g]]
            + [
                o.reserve_mib[slot]
                for u in units
                for _, o in opts[u]
                for slot, pos in enumerate(_bits(o.mask))
                if pos == g
            ]
        )
        for g in range(n)
    ]
    lam_p, lam_s = _capacity_duals(problem, units, exclusive, opts, cap, n)

    def reduced(u: int, lam: Sequence[float], use_value: bool) -> float:
        top = 0.0
        priority = problem.units[u].model.priority
        shared_unit = problem.units[u].model.allow_sharing
        for _, o in opts[u]:
            gain = o.value if use_value else priority
            for slot, pos in enumerate(_bits(o.mask)):
                gain -= lam[pos] * (o.reserve_mib[slot] if shared_unit else cap[pos])
            top = max(top, gain)
        return top

    tail_p = [0.0] * (k + 1)
    tail_s = [0.0] * (k + 1)
    tail_p[k] = sum(reduced(u, lam_p, False) for u in exclusive)
    tail_s[k] = sum(reduced(u, lam_s, True) for u in exclusive)
    for i in range(k - 1, -1, -1):
        tail_p[i] = tail_p[i + 1] + reduced(order[i], lam_p, False)
        tail_s[i] = tail_s[i + 1] + reduced(order[i], lam_s, True)
    use_lagrange = any(lam_p) or any(lam_s)
    # Placed priority only takes subset sums of the units' priorities, so a fractional
    # Lagrangian bound rounds down to the largest such sum below it: with integer priorities
    # a bound of 32.7 becomes 32, which ties an incumbent at 32 and lets the score decide.
    sums_from = _priority_sums(
        [problem.units[u].model.priority for u in order],
        [problem.units[u].model.priority for u in exclusive],
    )

    prepared = [
        [(j, o.mask, tuple(_bits(o.mask)), o.reserve_mib, o.value) for j, o in opts[order[i]]]
        for i in range(k)
    ]
    priorities = [problem.units[u].model.priority for u in order]
    reserved = [0.0] * n
    picked: list[int] = [-1] * k  # index into prepared[i]; -1: unplaced
    best: list[Any] = [None, None, 0]  # key, picks, used mask

    def dfs(i: int, used: int, cur_p: float, cur_s: float) -> None:
        incumbent = best[0]
        if i == k:
            tail = best_excl[used]
            if tail is None:
                return
            key = (cur_p + tail[0], cur_s + tail[1])
            if incumbent is None or _better(key, incumbent):
                best[0] = key
                best[1] = {order[x]: prepared[x][picked[x]][0] for x in range(k) if picked[x] >= 0}
                best[2] = used
            return
        if use_lagrange and incumbent is not None:
            lag_p = cur_p + tail_p[i]
            lag_s = cur_s + tail_s[i]
            for g in range(n):
                if used >> g & 1:
                    resid = usable[g] - reserved[g]
                    if resid > 0:
                        lag_p += lam_p[g] * resid
                        lag_s += lam_s[g] * resid
                else:
                    lag_p += lam_p[g] * cap[g]
                    lag_s += lam_s[g] * cap[g]
            sums = sums_from[i]
            if sums is not None:
                at = bisect_right(sums, lag_p - cur_p + _SUM_TOL)
                lag_p = cur_p + (sums[at - 1] if at else 0.0)
            if not _better((lag_p, lag_s), incumbent):
                return
        start = 0
        if twin[i]:
            if picked[i - 1] < 0:
                dfs(i + 1, used, cur_p, cur_s)  # a twin after an unplaced one stays unplaced
                return
            start = picked[i - 1]
        priority = priorities[i]
        next_p = bound_p[i + 1]
        next_s = bound_s[i + 1]
        rows = prepared[i]
        for x in range(start, len(rows)):
            _, mask, bits, reserve, value = rows[x]
            after = used | mask
            if next_p[after] == neg:
                continue
            if incumbent is not None:
                # inlined ``not _better(bound, incumbent)``: this loop is the hot spot
                bound_here = cur_p + priority + next_p[after]
                if bound_here < incumbent[0] - _EPS or (
                    bound_here <= incumbent[0] + _EPS
                    and cur_s + value + next_s[after] <= incumbent[1] + _EPS
                ):
                    continue
            fits = True
            for slot, pos in enumerate(bits):
                # alone on a GPU the estimate already fits; reservations add up only once a
                # second sharing unit arrives
                if used >> pos & 1 and reserved[pos] + reserve[slot] > usable[pos] + _EPS:
                    fits = False
                    break
            if not fits:
                continue
            for slot, pos in enumerate(bits):
                reserved[pos] += reserve[slot]
            picked[i] = x
            dfs(i + 1, after, cur_p + priority, cur_s + value)
            picked[i] = -1
            for slot, pos in enumerate(bits):
                reserved[pos] -= reserve[slot]
            incumbent = best[0]
        if bound_p[i + 1][used] > neg and (
            incumbent is None
            or _better((cur_p + bound_p[i + 1][used], cur_s + bound_s[i + 1][used]), incumbent)
        ):
            dfs(i + 1, used, cur_p, cur_s)

    if bound_p[0][0] > neg:
        dfs(0, 0, 0.0, 0.0)
    if best[0] is None:
        return None
    return best[0], best[1], best[2]


#: Sums of the same priorities in another order differ by float error only; such sums merge
#: into one entry (the largest, so rounding never lands below a reachable sum).
_SUM_MERGE = 1e-9
#: Slack when rounding a Lagrangian priority bound down to a reachable sum: far above the
#: float error of the bound and the merges (≤ units · ``_SUM_MERGE``); a larger slack is only
#: a weaker bound, never a wrong one.
_SUM_TOL = 1e-6
#: Most distinct priority sums :func:`_priority_sums` keeps per search depth.
_SUM_LIMIT = 4096


def _priority_sums(
    sharing_priorities: Sequence[float], exclusive_priorities: Sequence[float]
) -> list[list[float] | None]:
    """Per search depth ``i``: the sorted distinct subset sums of the priorities still open.

    Entry ``i`` covers sharing units ``i..`` plus every exclusive unit (the exclusive part is
    settled only at the leaves); ``None`` where there are more than ``_SUM_LIMIT`` sums (no
    rounding there: the bound stays as it was, still admissible).
    """
    k = len(sharing_priorities)
    result: list[list[float] | None] = [None] * (k + 1)

    def add(current: list[float] | None, priority: float) -> list[float] | None:
        if current is None:
            return None
        merged = sorted(set(current) | {value + priority for value in current})
        distinct: list[float] = []
        cluster_low = -math.inf
        for value in merged:
            if value - cluster_low <= _SUM_MERGE:
                distinct[-1] = value  # sorted: the cluster's largest so far
                continue
            cluster_low = value
            distinct.append(value)
        return distinct if len(distinct) <= _SUM_LIMIT else None

    sums: list[float] | None = [0.0]
    for priority in exclusive_priorities:
        sums = add(sums, priority)
    result[k] = sums
    for i in range(k - 1, -1, -1):
        sums = add(sums, sharing_priorities[i])
        result[i] = sums
    return result


def _capacity_duals(
    problem: Problem,
    units: Sequence[int],
    exclusive: Sequence[int],
    opts: Sequence[tuple[tuple[int, Option], ...]],
    cap: Sequence[float],
    n: int,
) -> tuple[list[float], list[float]]:
    """Per-GPU multipliers ``λ ≥ 0`` for the VRAM bound: capacity duals of two LPs.

    The LPs relax every unit to a fractional choice of options (``Σ x ≤ 1`` per unit) under
    ``Σ reserve · x ≤ cap`` per GPU, maximising placed priority and score respectively. Any
    ``λ ≥ 0`` gives a valid bound, so a failed LP just yields zeros (no VRAM bound).
    """
    zeros = [0.0] * n
    if len(units) < 2:
        return zeros, zeros
    try:
        import numpy as np
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix
    except ImportError:  # pragma: no cover - scipy is a core dependency; exact without it
        return zeros, zeros
    rows: list[int] = []
    cols: list[int] = []
    data: list[float] = []
    values: list[float] = []
    priorities: list[float] = []
    column = 0
    everyone = list(units) + list(exclusive)
    for row, u in enumerate(everyone):
        model = problem.units[u].model
        for _, o in opts[u]:
            rows.append(row)
            cols.append(column)
            data.append(1.0)
            for slot, pos in enumerate(_bits(o.mask)):
                rows.append(len(everyone) + pos)
                cols.append(column)
                data.append(o.reserve_mib[slot] if model.allow_sharing else cap[pos])
            values.append(o.value)
            priorities.append(model.priority)
            column += 1
    matrix = coo_matrix((data, (rows, cols)), shape=(len(everyone) + n, column)).tocsr()
    bounds_ub = np.concatenate([np.ones(len(everyone)), np.asarray(cap, dtype=float)])
    duals = []
    for objective in (priorities, values):
        result = linprog(
            -np.asarray(objective), A_ub=matrix, b_ub=bounds_ub, bounds=(0, 1), method="highs"
        )
        if result.status != 0:
            duals.append(zeros)
            continue
        marginals = result.ineqlin.marginals[len(everyone) :]
        duals.append([max(0.0, -float(m)) for m in marginals])
    return duals[0], duals[1]


def _subset_max(values: list[float], n: int) -> None:
    """In place: ``values[m]`` becomes the maximum over the subsets of ``m``."""
    for bit in range(n):
        step = 1 << bit
        for mask in range(len(values)):
            if mask & step and values[mask ^ step] > values[mask]:
                values[mask] = values[mask ^ step]


def _superset_max(values: list[float], n: int) -> None:
    """In place: ``values[m]`` becomes the maximum over the supersets of ``m``."""
    for bit in range(n):
        step = 1 << bit
        for mask in range(len(values)):
            if not mask & step and values[mask | step] > values[mask]:
                values[mask] = values[mask | step]


def evaluate(
    problem: Problem,
    choice: Sequence[tuple[int, int, int] | None],
    facts: dict[tuple[int, int, int, int], tuple[float, tuple[float, ...], float]] | None = None,
) -> Key | None:
    """Check a full assignment from scratch and return its key, or ``None`` if infeasible.

    ``choice[i]`` is ``(mask, tp, pp)`` for unit ``i`` or ``None``. Used by :func:`brute_force`;
    independent of the solver's option lists. ``facts`` memoises the per-candidate numbers
    (estimate, reservation, throughput), which depend on the candidate alone.
    """
    reserved = [0.0] * problem.n
    holders: list[list[int]] = [[] for _ in problem.gpus]
    placed = 0.0
    score = 0.0
    used = 0
    views = problem.gpus
    for i, item in enumerate(choice):
        if item is None:
            continue
        mask, tp, pp = item
        unit = problem.units[i]
        key = (i, mask, tp, pp)
        known = facts.get(key) if facts is not None else None
        if known is None:
            need = estimate(unit.model, tp, pp).need_mib
            reserve = _reserve(unit.model, need, mask, views)
            throughput, _ = group_throughput(
                views, mask, tp, pp, problem.links, unit.model.max_sequences
            )
            known = (need, reserve, throughput)
            if facts is not None:
                facts[key] = known
        need, reserve, throughput = known
        for slot, pos in enumerate(_bits(mask)):
            reserved[pos] += reserve[slot] if unit.model.allow_sharing else need
            holders[pos].append(i)
        used |= mask
        placed += unit.model.priority
        score += unit.model.priority * throughput
    for pos, units_here in enumerate(holders):
        if len(units_here) > 1 and not all(
            problem.units[i].model.allow_sharing for i in units_here
        ):
            return None
        if len(units_here) > 1 and reserved[pos] > problem.gpus[pos].usable_mib + _EPS:
            return None
    if not problem.power_ok[used]:
        return None
    return (placed, score)


def raw_candidates(problem: Problem, unit_pos: int) -> list[tuple[int, int, int]]:
    """Every (mask, tp, pp) the unit-local and set-level rules allow, enumerated afresh."""
    unit = problem.units[unit_pos]
    model = unit.model
    views = problem.gpus
    n = problem.n
    if model.gpus is not None and problem.pin_masks[unit_pos] is None:
        return []  # a pin names a GPU the rig lacks
    pin_mask = problem.pin_masks[unit_pos] if model.gpus is not None else None
    fits_any = {0: False}
    for mask in range(1, 1 << n):
        fits_any[mask] = any(
            candidate_ok(model, mask, tp, pp, views)
            for tp, pp in splits(mask.bit_count(), model.engine)
        )
    out = []
    for mask in range(1, 1 << n):
        if not fits_any[mask] or not set_allowed(model, mask, fits_any, pin_mask):
            continue
        for tp, pp in splits(mask.bit_count(), model.engine):
            if candidate_ok(model, mask, tp, pp, views):
                out.append((mask, tp, pp))
    return out


def brute_force(problem: Problem, *, node_limit: int | None = None) -> Key | None:
    """Reference optimum by exhaustive enumeration (no objective bound, no memo).

    Partial assignments that already put a non-sharing unit on a held GPU are cut (they can
    never become feasible); everything else is enumerated and checked by :func:`evaluate`.
    Raises ``RuntimeError`` after ``node_limit`` leaves.
    """
    candidates = [raw_candidates(problem, i) for i in range(len(problem.units))]
    sharing = [u.model.allow_sharing for u in problem.units]
    best_key: Key | None = None
    facts: dict[tuple[int, int, int, int], tuple[float, tuple[float, ...], float]] = {}
    leaves = 0
    current: list[tuple[int, int, int] | None] = []

    def walk(i: int, excl: int, any_held: int) -> None:
        nonlocal best_key, leaves
        if i == len(candidates):
            leaves += 1
            if node_limit is not None and leaves > node_limit:
                raise RuntimeError("brute force node limit reached")
            key = evaluate(problem, current, facts)
            if key is not None and (best_key is None or _better(key, best_key)):
                best_key = key
            return
        current.append(None)
        walk(i + 1, excl, any_held)
        current.pop()
        for cand in candidates[i]:
            mask = cand[0]
            if mask & excl or (not sharing[i] and mask & any_held):
                continue
            current.append(cand)
            walk(i + 1, excl if sharing[i] else excl | mask, any_held | mask)
            current.pop()

    walk(0, 0, 0)
    return best_key


def _numa_choice(members: Sequence[GpuView]) -> tuple[int | None, tuple[int, ...]]:
    """NUMA node holding most of the set's GPUs (ties: the lowest GPU's) and its CPUs."""
    nodes = [g.numa_node for g in members if g.numa_node is not None]
    if not nodes:
        cpus = sorted({c for g in members for c in (g.cpu_list or ())})
        return None, tuple(cpus)
    node = max(dict.fromkeys(nodes), key=nodes.count)
    cpus = sorted({c for g in members if g.numa_node == node for c in (g.cpu_list or ())})
    return node, tuple(cpus)


def _unplaced_reason(problem: Problem, i: int, solution: Solution) -> str:
    reason = problem.no_option_reasons[i]
    if reason:
        return reason
    options = problem.options[i]
    if all(not problem.power_ok[o.mask] for o in options):
        violations = power_violations(problem.gpus, problem.psus, problem.circuits, options[0].mask)
        return (
            "every GPU set it fits on breaks the power budget ("
            + "; ".join(violations)
            + "); run 'rigforge sweep' and plan with --profile for lower caps"
        )
    holders = set()
    used = 0
    for j, choice in enumerate(solution.choice):
        if choice is None or j == i:
            continue
        mask = problem.options[j][choice].mask
        used |= mask
        if any(o.mask & mask for o in options):
            holders.add(problem.units[j].label)
    free = [o for o in options if not o.mask & used]
    over = [o for o in free if not problem.power_ok[used | o.mask]]
    if free and len(over) == len(free):
        # GPUs are free, but the rig cannot power them next to the models already placed.
        violations = power_violations(
            problem.gpus, problem.psus, problem.circuits, used | over[0].mask
        )
        return (
            "GPUs it fits on are free, but running it there next to the placed models breaks "
            "the power budget (" + "; ".join(violations) + "); run 'rigforge sweep' and plan "
            "with --profile for lower caps, or lower its priority's competitors"
        )
    if holders:
        return (
            "every GPU set it fits on is taken by models placed first ("
            + ", ".join(sorted(holders))
            + "); add GPUs, lower its context/max_sequences, or raise its priority"
        )
    return "no GPU set fits together with the other models inside the power budget"


def make_plan(problem: Problem) -> Plan:
    """Solve ``problem`` and describe the answer (placements, unplaced with reasons, scores)."""
    if not problem.power_ok[0]:
        violations = power_violations(problem.gpus, problem.psus, problem.circuits, 0)
        reason = (
            "the rig is over its power budget with every GPU idle (" + "; ".join(violations) + ")"
        )
        return Plan(
            problem.rig_name,
            problem.fingerprint,
            problem.headroom_pct,
            (),
            tuple(Unplaced(u.model.name, u.replica, reason) for u in problem.units),
            0.0,
            None,
            "no plan: " + reason,
        )
    solution = solve(problem)
    assert solution is not None  # power_ok[0] makes "place nothing" feasible
    used_reserve = [0.0] * problem.n
    for i, choice in enumerate(solution.choice):
        if choice is None:
            continue
        option = problem.options[i][choice]
        for slot, pos in enumerate(_bits(option.mask)):
            used_reserve[pos] += (
                option.reserve_mib[slot]
                if problem.units[i].model.allow_sharing
                else option.need_mib
            )
    holders: dict[int, int] = {}
    for i, choice in enumerate(solution.choice):
        if choice is not None:
            for pos in _bits(problem.options[i][choice].mask):
                holders[pos] = holders.get(pos, 0) + 1
    placements: list[Placement] = []
    unplaced: list[Unplaced] = []
    for i, choice in enumerate(solution.choice):
        unit = problem.units[i]
        if choice is None:
            unplaced.append(
                Unplaced(unit.model.name, unit.replica, _unplaced_reason(problem, i, solution))
            )
            continue
        option = problem.options[i][choice]
        members = [problem.gpus[pos] for pos in _bits(option.mask)]
        shared = any(holders[g.position] > 1 for g in members)
        numa, cpus = _numa_choice(members)
        util = max(
            gpu_memory_utilization(
                option.need_mib,
                g.memory_total_mib,
                headroom_pct=problem.headroom_pct,
                exclusive=not shared,
            )
            for g in members
        )
        placements.append(
            Placement(
                model=unit.model.name,
                replica=unit.replica,
                engine=unit.model.engine,
                weights=unit.model.weights,
                gpus=tuple(g.uuid for g in members),
                gpu_indices=tuple(g.index for g in members),
                tp=option.tp,
                pp=option.pp,
                numa_node=numa,
                cpu_list=cpus,
                vram_mib=math.ceil(option.need_mib),
                vram_free_mib=tuple(
                    int(g.memory_total_mib - used_reserve[g.position]) for g in members
                ),
                port=unit.port,
                p2p=p2p_available(option.worst_link),
                worst_link=option.worst_link,
                throughput=option.throughput,
                gpu_memory_utilization=util,
                context=unit.model.context,
                max_sequences=unit.model.max_sequences,
                kv_cache_bits=unit.model.kv_cache_bits,
                shared=shared,
                extra_args=unit.model.extra_args,
            )
        )
    alternative_score, alternative = _alternative(problem, solution)
    return Plan(
        rig_name=problem.rig_name,
        fingerprint=problem.fingerprint,
        headroom_pct=problem.headroom_pct,
        placements=tuple(placements),
        unplaced=tuple(unplaced),
        score=solution.score,
        alternative_score=alternative_score,
        alternative=alternative,
    )


def _alternative(problem: Problem, solution: Solution) -> tuple[float | None, str]:
    """Best plan in which the first placed unit (highest priority) uses another GPU set."""
    top = next((i for i, c in enumerate(solution.choice) if c is not None), None)
    if top is None:
        return None, "nothing placed"
    choice = solution.choice[top]
    assert choice is not None  # `top` is the first placed unit
    chosen = problem.options[top][choice]
    alt = solve(problem, exclude={top: chosen.mask})
    label = problem.units[top].label
    if alt is None:
        return None, f"no other GPU set for {label} meets the power budget"
    alt_choice = alt.choice[top]
    if alt_choice is None:
        where = "left unplaced"
    else:
        option = problem.options[top][alt_choice]
        idx = ",".join(str(problem.gpus[p].index) for p in _bits(option.mask))
        where = f"on GPUs {idx} (tp={option.tp}, pp={option.pp})"
    return alt.score, (
        f"best plan with {label} on another GPU set: {label} {where}, score {alt.score:.4f} "
        f"vs {solution.score:.4f}"
        + (
            ""
            if abs(alt.placed_priority - solution.placed_priority) < _EPS
            else ", fewer models placed"
        )
    )


def plan(snapshot: RigSnapshot, models: ModelsFile, profile: ProfileHints | None = None) -> Plan:
    """Build the problem and solve it: the one call ``rigforge plan`` makes."""
    return make_plan(build_problem(snapshot, models, profile))


def iter_masks(n: int) -> Iterator[int]:
    """Every non-empty GPU subset of an ``n``-GPU rig as a bit mask."""
    return iter(range(1, 1 << n))
