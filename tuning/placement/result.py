"""From a solution to the :class:`~tuning.core.plan.Plan`: placements, why a unit stays
unplaced, the best alternative; :func:`plan` is the one call ``rigforge plan`` makes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from inventory.models import ModelsFile
from tuning.core.plan import Placement, Plan, Unplaced
from tuning.core.rig import RigSnapshot
from tuning.fabric.links_file import LinksFile
from tuning.model.serving import Prediction
from tuning.placement.build import (
    build_problem,
    candidate_ok,
    floor_miss,
    power_violations,
    splits,
)
from tuning.placement.problem import GpuView, Option, Problem, ProfileHints
from tuning.placement.scoring import EPS, group_prediction, mask_bits, p2p_available
from tuning.placement.solver import Solution, solve
from tuning.vram import gpu_memory_utilization


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
        for slot, pos in enumerate(mask_bits(option.mask)):
            used_reserve[pos] += (
                option.reserve_mib[slot]
                if problem.units[i].model.allow_sharing
                else option.need_mib
            )
    holders: dict[int, int] = {}
    for i, choice in enumerate(solution.choice):
        if choice is not None:
            for pos in mask_bits(problem.options[i][choice].mask):
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
        members = [problem.gpus[pos] for pos in mask_bits(option.mask)]
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
                **_prediction_fields(problem, i, option, solution),
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


def _describe(problem: Problem, mask: int, tp: int, pp: int, link: str) -> str:
    idx = ",".join(str(problem.gpus[p].index) for p in mask_bits(mask))
    if tp == pp == 1:
        return f"GPU {idx} alone"
    split = f"TP={tp}" if pp == 1 else (f"PP={pp}" if tp == 1 else f"TP={tp}×PP={pp}")
    where = "" if link == "X" else f" over {link}"
    return f"{split} on GPUs {idx}{where}"


def _prediction_fields(
    problem: Problem, i: int, option: Option, solution: Solution
) -> dict[str, Any]:
    """The chosen option's prediction and the best option it beat (or that lost its GPUs)."""
    pred = option.prediction
    if pred is None:
        return {}
    model = problem.units[i].model
    rivals: list[tuple[float, int, int, int, str, Prediction]] = []
    for tp, pp in splits(option.mask.bit_count(), model.engine):
        if (tp, pp) == (option.tp, option.pp) or not candidate_ok(
            model, option.mask, tp, pp, problem.gpus
        ):
            continue
        other, link = group_prediction(
            problem.gpus, option.mask, tp, pp, problem.links, model, problem.measured
        )
        if floor_miss(model, other) is None:
            rivals.append((other.tokens_per_s, option.mask, tp, pp, link, other))
    for other_opt in problem.options[i]:
        if other_opt.mask != option.mask and other_opt.prediction is not None:
            rivals.append(
                (
                    other_opt.throughput,
                    other_opt.mask,
                    other_opt.tp,
                    other_opt.pp,
                    other_opt.worst_link,
                    other_opt.prediction,
                )
            )
    chosen = _describe(problem, option.mask, option.tp, option.pp, option.worst_link)
    why = "no other split or GPU set fits"
    alt_tps: float | None = None
    if option.mask.bit_count() > 1 and any(r[1].bit_count() == 1 for r in rivals):
        # a split must show what it gains over the best single GPU the model fits on
        rivals = [r for r in rivals if r[1].bit_count() == 1]
    if rivals:
        alt_tps, mask, tp, pp, link, other = max(rivals, key=lambda r: (r[0], -r[1]))
        desc = _describe(problem, mask, tp, pp, link)
        shares = other.breakdown()
        if alt_tps <= option.throughput + EPS:
            ratio = option.throughput / alt_tps if alt_tps > 0 else math.inf
            why = (
                f"{desc}: {alt_tps:.1f} tok/s, {other.bottleneck} "
                f"{shares[other.bottleneck] * 100:.0f} % of the step"
                + (
                    f", interconnect {shares['interconnect'] * 100:.0f} %"
                    if other.bottleneck != "interconnect" and shares["interconnect"] > 0.005
                    else ""
                )
                + (
                    f"; {chosen} is {ratio:.2f}× faster here"
                    if ratio >= 1.005
                    # "1.00× faster" reads as a claim; an equal prediction is a tie
                    else f"; {chosen} is predicted as fast (a tie: either serves it)"
                )
            )
        else:
            holders = sorted(
                {
                    problem.units[j].label
                    for j, c in enumerate(solution.choice)
                    if c is not None and j != i and problem.options[j][c].mask & mask
                }
            )
            why = (
                f"{desc} would serve {alt_tps:.1f} tok/s "
                f"({alt_tps / max(option.throughput, EPS):.2f}× more), but "
                + (
                    f"its GPUs go to {', '.join(holders)}: the plan's weighted total is higher"
                    if holders
                    else "it breaks the power budget next to the other placements"
                )
            )
    return {
        "tokens_per_s": option.throughput,
        "tokens_per_s_per_seq": pred.tokens_per_s_per_seq,
        "prefill_tokens_per_s": pred.prefill_tokens_per_s,
        "ttft_s": pred.ttft_s,
        "bottleneck": pred.bottleneck,
        "breakdown": dict(pred.breakdown()),
        "alternative": why,
        "alternative_tokens_per_s": alt_tps,
        "caps_w": tuple(problem.gpus[p].power_w for p in mask_bits(option.mask)),
        "clock_mhz": pred.clock_mhz,
    }


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
        idx = ",".join(str(problem.gpus[p].index) for p in mask_bits(option.mask))
        where = f"on GPUs {idx} (tp={option.tp}, pp={option.pp})"
    return alt.score, (
        f"best plan with {label} on another GPU set: {label} {where}, "
        f"{alt.score:.1f} vs {solution.score:.1f} priority-weighted tok/s"
        + (
            ""
            if abs(alt.placed_priority - solution.placed_priority) < EPS
            else ", fewer models placed"
        )
    )


def plan(
    snapshot: RigSnapshot,
    models: ModelsFile,
    profile: ProfileHints | None = None,
    links: LinksFile | None = None,
) -> Plan:
    """Build the problem and solve it: the one call ``rigforge plan`` makes (``links``: a
    saved ``links.yaml`` of this rig, whose measured GPU pairs replace the nominal links)."""
    return make_plan(build_problem(snapshot, models, profile, links))
