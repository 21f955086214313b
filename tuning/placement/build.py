"""Building the placement problem from a rig snapshot, a models file and a profile's hints.

:func:`build_problem` derives per-GPU facts, the units in search order and every unit's
candidate options under the unit-local and set-level rules (VRAM, head divisibility, pins,
minimal sets or ``max_gpus``, sharing reservations), and which used-GPU masks fit the power
budget (:func:`power_violations`, the core budget model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from inventory.models import ModelsFile, ModelSpec
from tuning.core.power import BudgetModel, Circuit, Psu
from tuning.core.rig import GpuInfo, RigSnapshot
from tuning.fabric.links_file import LinksFile
from tuning.model.serving import (
    GpuHardware,
    Link,
    Prediction,
    gpu_for_name,
    gpu_from_preset,
    link_for_topology,
)
from tuning.placement.problem import GpuHint, GpuView, Option, Problem, ProfileHints, Unit
from tuning.placement.scoring import EPS, group_prediction, mask_bits
from tuning.vram import estimate, gpu_memory_utilization, usable_mib

#: Preset whose figures stand in for a GPU no preset names (the plan says so).
NOMINAL_PRESET = "rtx3090"


def gpu_hardware(gpu: GpuInfo) -> tuple[GpuHardware, bool]:
    """The GPU's throughput figures from the preset of its name; nominal ones otherwise."""
    found = gpu_for_name(gpu.name)
    if found is not None:
        return found, True
    return gpu_from_preset(NOMINAL_PRESET), False


#: Draw of a GPU that serves nothing (persistence mode on, P8). Units: W.
IDLE_W = 30.0


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
        for over in budget.overloads(watts, slack_w=EPS)
    ]


def build_problem(
    snapshot: RigSnapshot,
    models: ModelsFile,
    profile: ProfileHints | None = None,
    measured_links: LinksFile | None = None,
) -> Problem:
    """Derive GPU facts, units and every unit's candidate options (see module docstring).

    ``measured_links``: a ``links.yaml`` ``rigforge links`` wrote for this rig; its GPU pairs
    (matched by UUID) replace the nominal link of a GPU set whose every pair it measured."""
    hints = profile.gpus if profile is not None else {}
    views: list[GpuView] = []
    for position, gpu in enumerate(snapshot.gpus):
        uuid = gpu.uuid or f"GPU-index-{gpu.index}"
        hint = hints.get(uuid)
        total = gpu.memory_total_mib or 0
        hardware, known = gpu_hardware(gpu)
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
                power_w=_gpu_power_w(gpu, hint),
                hardware=hardware,
                hardware_known=known,
                # an idle card downshifts its gen to save power: only a gen read under load
                # says what the link carries (a narrow link is narrow loaded or idle)
                pcie_gen=(gpu.pcie.gen_current if gpu.pcie.under_load else None)
                or gpu.pcie.gen_max,
                pcie_width=(gpu.pcie.width_current if gpu.pcie.degraded else None)
                or gpu.pcie.width_max,
            )
        )
    index_to_pos = {gpu.index: pos for pos, gpu in enumerate(snapshot.gpus)}
    measured = measured_pairs(views, measured_links)
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
            options_cache[unit.model.name] = _unit_options(
                unit.model, snapshot, views, links, measured
            )
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
        measured=measured,
        power_ok=power_ok,
        pin_masks=pin_masks,
        psus=snapshot.psus,
        circuits=snapshot.circuits,
    )


def measured_pairs(
    views: Sequence[GpuView], links: LinksFile | None
) -> dict[tuple[int, int], Link]:
    """The GPU pairs a ``links.yaml`` measured, by position pair (low, high): one-way GB/s
    is the slower direction, latency the higher; a pair is left out unless both directions
    were measured (a ``--quick`` run measures one)."""
    if links is None:
        return {}
    position = {v.uuid: v.position for v in views}
    out: dict[tuple[int, int], Link] = {}
    for pair in links.p2p:
        a, b = position.get(pair.src), position.get(pair.dst)
        back = links.pair(pair.dst, pair.src)
        if a is None or b is None or a >= b or back is None:
            continue
        latencies = [x for x in (pair.latency_us, back.latency_us) if x is not None]
        latency_us = (
            max(latencies)
            if latencies
            else link_for_topology("NV1" if pair.mode == "nvlink" else "PHB").latency_us
        )
        out[(a, b)] = Link(
            kind=pair.mode if pair.mode == back.mode else "staged",
            bandwidth_gbps=min(pair.gbps, back.gbps),
            latency_us=latency_us,
        )
    return out


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
    return all(need <= views[i].usable_mib + EPS for i in mask_bits(mask))


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
    measured: Mapping[tuple[int, int], Link],
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
        fits_any[mask] = any(need <= min_usable[mask] + EPS for _, _, need in by_k[k])
    result: list[Option] = []
    floor_misses: list[str] = []
    for mask in range(1, 1 << n):
        if not fits_any[mask] or not set_allowed(model, mask, fits_any, pin_mask):
            continue
        best: list[Option] = []
        for tp, pp, need in by_k[mask.bit_count()]:
            if need > min_usable[mask] + EPS:
                continue
            prediction, worst = group_prediction(views, mask, tp, pp, links, model, measured)
            miss = floor_miss(model, prediction)
            if miss:
                idx = ",".join(str(views[p].index) for p in mask_bits(mask))
                floor_misses.append(f"GPUs {idx} tp={tp} pp={pp}: {miss}")
                continue
            throughput = prediction.tokens_per_s
            best.append(
                Option(
                    mask=mask,
                    tp=tp,
                    pp=pp,
                    need_mib=need,
                    reserve_mib=reservation_mib(model, need, mask, views),
                    throughput=throughput,
                    value=model.priority * throughput,
                    worst_link=worst,
                    prediction=prediction,
                )
            )
        best.sort(key=lambda o: (-o.throughput, o.need_mib, o.tp))
        if model.allow_sharing:
            # keep the Pareto front (throughput up, reservation down): a lower-throughput
            # split that reserves less may be what lets another model share the GPUs
            front: list[Option] = []
            for opt in best:
                if all(max(opt.reserve_mib) < max(f.reserve_mib) - EPS for f in front):
                    front.append(opt)
            result.extend(front)
        elif best:
            result.append(best[0])
    if result:
        result.sort(key=lambda o: (-o.value, o.mask))
        return tuple(result), None
    if floor_misses:
        return (), (
            "no GPU set it fits on meets its floors ("
            + "; ".join(floor_misses[:3])
            + "); lower min_tokens_per_s/max_ttft_s, max_sequences or context"
        )
    return (), _no_fit_reason(model, views, by_k, pin_mask)


def floor_miss(model: ModelSpec, prediction: Prediction) -> str | None:
    """Why ``prediction`` misses the model's ``min_tokens_per_s``/``max_ttft_s``; None if not."""
    misses = []
    if model.min_tokens_per_s is not None and (
        prediction.tokens_per_s_per_seq < model.min_tokens_per_s - EPS
    ):
        misses.append(
            f"{prediction.tokens_per_s_per_seq:.1f} tok/s per sequence < min_tokens_per_s "
            f"{model.min_tokens_per_s:g}"
        )
    if model.max_ttft_s is not None and prediction.ttft_s > model.max_ttft_s + EPS:
        misses.append(f"TTFT {prediction.ttft_s:.2f} s > max_ttft_s {model.max_ttft_s:g}")
    return "; ".join(misses) or None


def reservation_mib(
    model: ModelSpec, need: float, mask: int, views: Sequence[GpuView]
) -> tuple[float, ...]:
    """VRAM the engine actually takes on each GPU of ``mask`` when the GPUs are shared.

    vLLM and SGLang reserve one utilisation fraction of *every* GPU's total, so on a mixed
    set the bigger GPUs lose more than the estimate; llama.cpp takes what it needs.
    """
    members = [views[i] for i in mask_bits(mask)]
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
        pinned = [views[i] for i in mask_bits(pin_mask)]
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
