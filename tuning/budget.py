"""Power budgets: PSU and circuit loads, and allocating caps across GPUs inside them.

Load model (every figure is a *cap*, the most a GPU may draw, not a measured draw):

the one budget model, :class:`tuning.core.power.BudgetModel` (PSU DC load = platform + Σ caps
of the GPUs it feeds, over its rating; circuit wall load = Σ DC load / efficiency of its PSUs,
over voltage × breaker × continuous ratio). It is re-exported here.

:func:`allocate` picks one option (cap, throughput, power) per GPU so that every ratio stays
≤ ``1 − headroom`` (transient headroom: GPUs overshoot their cap for milliseconds) and the
policy objective is maximal. It is exact: a knapsack per PSU over integer watts, Pareto
frontiers combined per circuit, and Dinkelbach's iteration for the tokens-per-joule ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from inventory.fields import StrictModel, without_bad_keys
from tuning.backends.base import Gpu
from tuning.core.bus import normalize_bus_id
from tuning.core.power import BudgetModel, Circuit, Psu
from tuning.core.yamlsafe import YamlDocument
from tuning.errors import ConfigError, did_you_mean, read_yaml_config, yaml_path

if TYPE_CHECKING:
    from inventory.schema import HostConfig


# --------------------------------------------------------------------------------------------
# Allocation
# --------------------------------------------------------------------------------------------


class Policy(StrEnum):
    """What the tuner maximises."""

    EFFICIENCY = "efficiency"  # tokens per joule, throughput ≥ floor × uncapped
    THROUGHPUT = "throughput"  # aggregate tokens/s inside budget and heat


@dataclass(frozen=True)
class CapOption:
    """One choice for one GPU: set ``cap_w``, expect ``throughput_tps`` at ``power_w``."""

    cap_w: int
    throughput_tps: float
    power_w: float


@dataclass(frozen=True)
class Allocation:
    """The chosen cap per GPU UUID and what the curves predict for it.

    ``objective``: aggregate tokens/J (efficiency) or tokens/s (throughput);
    ``floor_relaxed``: the floor could not be met inside the budget and was dropped.
    """

    caps_w: dict[str, int]
    throughput_tps: float
    power_w: float
    objective: float
    floor_relaxed: bool = False


class InfeasibleBudget(ValueError):
    """Not even the lowest cap of every GPU fits the budget."""


def objective_value(policy: Policy, throughput_tps: float, power_w: float) -> float:
    """The policy's objective for an aggregate (Σ throughput, Σ power)."""
    if policy is Policy.THROUGHPUT:
        return throughput_tps
    return throughput_tps / power_w if power_w > 0 else 0.0


#: a tie-break weight: among equal-throughput choices prefer the lower power
_EPS_PER_W = 1e-6


def allocate(
    options: Mapping[str, Sequence[CapOption]],
    budget: BudgetModel,
    policy: Policy,
    *,
    headroom: float = 0.10,
    floors_tps: Mapping[str, float] | None = None,
) -> Allocation:
    """Choose one option per GPU maximising the policy objective inside the budget.

    ``floors_tps``: per-GPU minimum throughput (efficiency policy). Options below it are
    dropped; if no combination then fits, the floor is relaxed (``floor_relaxed``) and the
    aggregate throughput is maximised instead — the least loss the budget allows.
    Raises :class:`InfeasibleBudget` when even the lowest caps do not fit.
    """
    limit = 1.0 - headroom
    candidates = {
        uuid: _floored(opts, (floors_tps or {}).get(uuid)) for uuid, opts in options.items()
    }
    relaxed = False
    try:
        choice = _solve(candidates, budget, policy, limit)
    except InfeasibleBudget:
        if floors_tps is None:
            raise
        # the floor cannot hold inside the budget: lose as little throughput as possible
        choice = _solve({u: list(o) for u, o in options.items()}, budget, Policy.THROUGHPUT, limit)
        relaxed = True
    throughput = sum(o.throughput_tps for o in choice.values())
    power = sum(o.power_w for o in choice.values())
    return Allocation(
        caps_w={uuid: o.cap_w for uuid, o in choice.items()},
        throughput_tps=throughput,
        power_w=power,
        objective=objective_value(policy, throughput, power),
        floor_relaxed=relaxed,
    )


def _floored(opts: Sequence[CapOption], floor: float | None) -> list[CapOption]:
    kept = [o for o in opts if floor is None or o.throughput_tps >= floor]
    # keep the best-throughput option so a GPU is never left without a choice
    return kept or [max(opts, key=lambda o: o.throughput_tps)]


def _solve(
    options: Mapping[str, Sequence[CapOption]],
    budget: BudgetModel,
    policy: Policy,
    limit: float,
) -> dict[str, CapOption]:
    if policy is Policy.THROUGHPUT:
        return _best_linear(
            options, budget, limit, lambda o: o.throughput_tps - _EPS_PER_W * o.power_w
        )
    # Dinkelbach: max ΣT/ΣP == the λ at which max Σ(T − λP) is 0; each step is linear.
    lam = 0.0
    choice = _best_linear(options, budget, limit, lambda o: o.throughput_tps)
    for _ in range(50):
        total_t = sum(o.throughput_tps for o in choice.values())
        total_p = sum(o.power_w for o in choice.values())
        new_lam = total_t / total_p if total_p > 0 else 0.0
        if new_lam <= lam * (1 + 1e-12):
            break
        lam = new_lam
        choice = _best_linear(
            options, budget, limit, lambda o, lam=lam: o.throughput_tps - lam * o.power_w
        )
    return choice


@dataclass(frozen=True)
class _Frontier:
    """Pareto frontier: (load W, value, choice) with load ↑ and value strictly ↑."""

    points: tuple[tuple[float, float, tuple[tuple[str, CapOption], ...]], ...]


def _pareto(points: list[tuple[float, float, tuple[tuple[str, CapOption], ...]]]) -> _Frontier:
    points.sort(key=lambda p: (p[0], -p[1]))
    kept: list[tuple[float, float, tuple[tuple[str, CapOption], ...]]] = []
    for point in points:
        if not kept or point[1] > kept[-1][1] + 1e-12:
            kept.append(point)
    return _Frontier(tuple(kept))


def _best_linear(
    options: Mapping[str, Sequence[CapOption]],
    budget: BudgetModel,
    limit: float,
    value,
) -> dict[str, CapOption]:
    """Maximise Σ value(option) subject to every PSU and circuit ratio ≤ ``limit``.

    A knapsack per PSU, then per circuit (each circuit's ``reserved_w`` counted first).
    Redundant PSUs are solved as one pooled PSU (:func:`_pooled`); where such a group spans
    circuits the pooled knapsack binds only the PSUs, and the choice is then checked with
    the budget model itself (:meth:`BudgetModel.fits`, the one load formula).
    """
    original = budget
    budget = _pooled(budget)
    choice = _best_linear_pooled(options, budget, limit, value)
    if not original.fits({u: o.cap_w for u, o in choice.items()}, limit):
        raise InfeasibleBudget(
            "the caps chosen for a redundant PSU group overload one of the circuits it spans; "
            "put the group's PSUs on one circuit or describe them without redundant_group"
        )
    return choice


def _pooled(budget: BudgetModel) -> BudgetModel:
    """``budget`` with each redundant group merged into one PSU for the knapsack: it carries
    every member's GPUs and platform, is rated n × the smallest member (an equal share must
    fit each), converts at the worst member's efficiency (the safe side), and sits on the
    members' circuit when they share one (else on none; :func:`_best_linear` checks)."""
    groups: dict[str, list[Psu]] = {}
    for psu in budget.psus:
        if psu.redundant_group is not None:
            groups.setdefault(psu.redundant_group, []).append(psu)
    if not groups:
        return budget
    merged: list[Psu] = [p for p in budget.psus if p.redundant_group is None]
    rename: dict[str, str] = {}
    for members in groups.values():
        circuits = {m.circuit for m in members}
        name = members[0].name
        merged.append(
            Psu(
                name=name,
                rating_w=len(members) * min(m.rating_w for m in members),
                circuit=circuits.pop() if len(circuits) == 1 else None,
                efficiency=min(m.efficiency for m in members),
                platform_w=sum(m.platform_w for m in members),
            )
        )
        rename.update({m.name: name for m in members})
    mapping = {k: rename.get(v, v) if v is not None else None for k, v in budget.gpu_psu.items()}
    return BudgetModel(psus=tuple(merged), circuits=budget.circuits, gpu_psu=mapping)


def _best_linear_pooled(
    options: Mapping[str, Sequence[CapOption]],
    budget: BudgetModel,
    limit: float,
    value,
) -> dict[str, CapOption]:
    psu_names = {psu.name for psu in budget.psus}
    by_psu: dict[str | None, list[str]] = {}
    for uuid in options:
        name = budget.gpu_psu.get(uuid)
        by_psu.setdefault(name if name in psu_names else None, []).append(uuid)

    choice: dict[str, CapOption] = {}
    # GPUs on no described PSU are unconstrained: each takes its own best option.
    for uuid in by_psu.pop(None, []):
        choice[uuid] = max(options[uuid], key=value)

    # Per PSU: a knapsack over the GPUs it feeds, DC watts as weight.
    frontiers: dict[str, _Frontier] = {}
    for psu in budget.psus:
        uuids = by_psu.get(psu.name, [])
        cap_dc = psu.rating_w * limit - psu.platform_w
        frontier = _Frontier(((0.0, 0.0, ()),))
        for uuid in uuids:
            points = [
                (load + opt.cap_w, val + value(opt), (*picked, (uuid, opt)))
                for load, val, picked in frontier.points
                for opt in options[uuid]
                if load + opt.cap_w <= cap_dc + 1e-9
            ]
            if not points:
                raise InfeasibleBudget(f"PSU {psu.name}: the lowest caps exceed its budget")
            frontier = _pareto(points)
        # express the load as wall watts so circuits can add PSUs of different efficiency
        frontiers[psu.name] = _Frontier(
            tuple((psu.wall_w(psu.platform_w + load), v, c) for load, v, c in frontier.points)
        )

    circuit_names = {c.name for c in budget.circuits}
    for circuit in budget.circuits:
        members = [p.name for p in budget.psus if p.circuit == circuit.name]
        # the circuit's other loads (reserved_w) are there before any PSU's
        combined = _Frontier(((circuit.reserved_w, 0.0, ()),))
        for name in members:
            points = [
                (wa + wb, va + vb, ca + cb)
                for wa, va, ca in combined.points
                for wb, vb, cb in frontiers[name].points
                if wa + wb <= circuit.budget_w * limit + 1e-9
            ]
            if not points:
                raise InfeasibleBudget(f"circuit {circuit.name}: the lowest caps exceed its budget")
            combined = _pareto(points)
        best = max(combined.points, key=lambda p: p[1])
        choice.update(dict(best[2]))
    # PSUs on no described circuit: only their own rating binds.
    for psu in budget.psus:
        if psu.circuit not in circuit_names:
            best = max(frontiers[psu.name].points, key=lambda p: p[1])
            choice.update(dict(best[2]))
    missing = set(options) - set(choice)
    for uuid in missing:  # a PSU with no frontier entry cannot happen; belt and braces
        choice[uuid] = max(options[uuid], key=value)
    return choice


def round_up_w(power_w: float, step_w: int = 1) -> int:
    """Round a wattage up to a whole ``step_w``. Units: W."""
    return int(math.ceil(power_w / step_w - 1e-9) * step_w)


# --------------------------------------------------------------------------------------------
# Budget files: the PSUs and circuits of a real rig (NVML knows nothing of them)
# --------------------------------------------------------------------------------------------

#: Where ``deploys/tune.py`` installs a host's budget; ``rigforge sweep|apply --rig nvml``
#: read it when no ``--budget``/``--inventory`` is given.
DEFAULT_BUDGET_PATH = Path("/etc/rigforge/budget.yaml")


class _Strict(StrictModel):
    """Unknown keys, control characters, booleans as numbers and ``.inf``/``.nan`` refused."""


class _BudgetDocument(_Strict):
    psus: list[Psu] = Field(min_length=1)
    circuits: list[Circuit] = Field(default_factory=list)
    gpus: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class RigBudget:
    """PSUs, circuits and which PSU feeds each GPU, as a person described them.

    ``gpu_psu`` is keyed by GPU UUID or PCI bus id (resolved against a live rig by
    :meth:`psu_map`); ``source`` names where the budget came from (for messages).
    """

    psus: tuple[Psu, ...]
    circuits: tuple[Circuit, ...] = ()
    gpu_psu: Mapping[str, str] = field(default_factory=dict)
    source: str = "budget"

    def psu_map(self, gpus: Sequence[Gpu]) -> dict[str, str]:
        """``{uuid: psu name}`` for every GPU of a live rig.

        A GPU the budget does not name is fed by the only PSU when there is one; with
        several PSUs it is an error (a GPU on no PSU would be outside every budget), and so
        is a key that names no GPU of the rig. Raises :class:`ConfigError`.
        """
        mapping: dict[str, str] = {}
        for key, psu in self.gpu_psu.items():
            gpu = next((g for g in gpus if g.uuid == key or _same_bus(key, g.pci_bus_id)), None)
            if gpu is None:
                raise ConfigError(
                    f"{self.source}: gpus.{key}: no GPU with this UUID or PCI bus id on this "
                    f"rig (it has {', '.join(g.uuid for g in gpus)}); fix the key"
                )
            mapping[gpu.uuid] = psu
        unmapped = [g for g in gpus if g.uuid not in mapping]
        if unmapped and len(self.psus) == 1:
            mapping.update({g.uuid: self.psus[0].name for g in unmapped})
        elif unmapped:
            raise ConfigError(
                f"{self.source}: gpus: GPU(s) {', '.join(g.uuid for g in unmapped)} are fed by "
                f"no PSU; with {len(self.psus)} PSUs every GPU needs an entry "
                "(<uuid or bus id>: <psu name>), or it would run outside every budget"
            )
        return mapping

    def model(self, gpus: Sequence[Gpu]) -> BudgetModel:
        """The :class:`BudgetModel` of this budget on a live rig's GPUs."""
        return BudgetModel(self.psus, self.circuits, self.psu_map(gpus))


def _same_bus(key: str, bus_id: str) -> bool:
    return ":" in key and normalize_bus_id(key) == normalize_bus_id(bus_id)


def parse_budget(document: Any, source: str, positions: YamlDocument | None = None) -> RigBudget:
    """Validate a budget document (see :func:`load_budget_file`); every error in one pass,
    each with its YAML path (and line, when ``positions`` — the parsed file — is given)."""

    def where(path: str) -> str:
        line = positions.line_of(path) if positions is not None else None
        return f"{source}:{line}" if line is not None else source

    problems: list[str] = []
    try:
        doc = _BudgetDocument.model_validate(document)
    except ValidationError as error:
        problems += [
            f"{yaml_path(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in error.errors()
        ]
        # A bad value in one entry must not hide the cross-checks of the others.
        repaired, _ = without_bad_keys(_BudgetDocument, document, error.errors())
        if repaired is None:
            raise ConfigError(
                f"{source}: {len(problems)} problem(s) in the power budget:\n"
                + "\n".join(f"{where(p.split(':')[0])}: {p}" for p in problems)
            ) from None
        doc = repaired
    psu_names = [p.name for p in doc.psus]
    circuit_names = [c.name for c in doc.circuits]
    for what, names in (("psus", psu_names), ("circuits", circuit_names)):
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.append(f"{what}[{i}].name: duplicate name {name!r}")
    for i, psu in enumerate(doc.psus):
        if psu.circuit is not None and psu.circuit not in circuit_names:
            problems.append(
                f"psus[{i}].circuit: unknown circuit {psu.circuit!r}"
                f"{did_you_mean(psu.circuit, circuit_names)} (circuits: "
                f"{', '.join(circuit_names) or 'none'})"
            )
    for key, psu_name in doc.gpus.items():
        if psu_name not in psu_names:
            problems.append(
                f"gpus.{key}: unknown PSU {psu_name!r}{did_you_mean(psu_name, psu_names)} "
                f"(psus: {', '.join(psu_names)})"
            )
    if problems:
        raise ConfigError(
            f"{source}: {len(problems)} problem(s) in the power budget:\n"
            + "\n".join(f"{where(p.split(': ')[0])}: {p}" for p in problems)
        )
    return RigBudget(
        psus=tuple(doc.psus),
        circuits=tuple(doc.circuits),
        gpu_psu=dict(doc.gpus),
        source=source,
    )


def load_budget_file(path: Path) -> RigBudget:
    """Read a budget YAML file::

        psus: [{name: psu-a, rating_w: 1600, circuit: c1, efficiency: 0.92, platform_w: 250}]
        circuits: [{name: c1, voltage_v: 120, breaker_a: 20, continuous_ratio: 0.8}]
        gpus: {GPU-8c1f…: psu-a, "0000:41:00.0": psu-a}   # UUID or PCI bus id → PSU

    Units: W, V, A. Raises :class:`ConfigError` naming the file and the YAML path of every
    problem.
    """
    parsed = read_yaml_config(path, "power budget")
    return parse_budget(parsed.data, str(path), parsed)


def host_budget_document(host: HostConfig) -> dict[str, Any] | None:
    """A budget document (:func:`load_budget_file`'s format) from an inventory host entry.

    ``None`` when the host describes no PSU. GPUs are keyed by UUID, else PCI bus id.
    """
    if not host.psus:
        return None
    return {
        "psus": [p.model_dump() for p in host.psus],
        "circuits": [c.model_dump() for c in host.circuits],
        "gpus": {
            (gpu.uuid or gpu.pci_bus_id): gpu.psu
            for gpu in host.gpu_list
            if gpu.psu is not None and (gpu.uuid or gpu.pci_bus_id)
        },
    }


def load_inventory_budget(path: Path, host_name: str) -> RigBudget:
    """The budget of inventory host ``host_name`` (its ``psus``, ``circuits``, ``gpus[].psu``).

    The inventory is validated first (every error, with its YAML path). Raises
    :class:`ConfigError` for an unknown host or a host without PSUs.
    """
    from inventory.validate import load_inventory

    hosts = load_inventory(path, check_ssh_files=False).hosts
    if host_name not in hosts:
        raise ConfigError(
            f"{path}: no host {host_name!r}{did_you_mean(host_name, hosts)} "
            f"(hosts: {', '.join(hosts)})"
        )
    document = host_budget_document(hosts[host_name])
    if document is None:
        raise ConfigError(
            f"{path}: hosts.{host_name}.psus: empty; describe the host's PSUs and circuits "
            "so the tuner knows its power budget"
        )
    return parse_budget(document, f"{path} (hosts.{host_name})")
