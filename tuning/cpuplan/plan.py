"""The CPU plan: housekeeping CPUs, and for each serving unit its own whole cores near its GPUs.

Input: the host's :class:`~tuning.core.cpu.CpuTopology`, each GPU's NUMA node, and the serving
units (a model's engine and GPUs, optionally pinned ``cpus:``). Output: a :class:`CpuPlan`.

The rules, in order:

1. **Checks** (before anything is planned): each pin names only CPUs the host has; no two pins
   share a CPU; every unit's GPUs have a known NUMA node.
2. **Housekeeping**: on every socket, the first ``cores_per_socket`` whole cores
   (``engines.yaml``) not pinned by a unit, on the socket's node with the fewest GPUs (lowest
   node id on a tie). They take the OS, sshd, irqbalance and every non-GPU interrupt.
3. **Pinned units** keep their CPUs exactly as written.
4. **Other units**, largest need first (file order on a tie), get ``cores = api + tokenizer +
   engine + per_gpu × GPUs`` whole cores (both SMT siblings) from the NUMA nodes of their GPUs.
   Whole LLC domains first, in domain order, while the need is at least a domain; the rest
   from a domain no one uses yet (so the unit has that L3 to itself), else from the partly used
   domain with the fewest free cores that still fits, else from the fullest partly used
   domain, and so on. Cores are taken in ascending order inside a domain.
5. **Interrupts**: each GPU's IRQs go to its unit's CPUs; a GPU no unit uses sends them to the
   housekeeping CPUs.

A unit that does not fit is refused (:class:`CpuPlanRefused`) naming the model, the cores it
needs and the free CPUs of its node.

Example (``sim:reference``, a 5995WX in NPS1: 8 CCDs of 8 cores, core k = CPUs k and k+64)::

    housekeeping: cores 0–1 → CPUs 0-1,64-65 (CCD 0)
    unit a (vllm, 2 GPUs): 1 + 0 + 1 + 1×2 = 4 cores
    unit b (llama.cpp, 1 GPU): 1 + 0 + 4 + 0 = 5 cores → planned first (larger need)
    b: CCD 1 is unused → cores 8–12 → CPUs 8-12,72-76
    a: CCD 2 is unused → cores 16–19 → CPUs 16-19,80-83
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tuning.captures.values import format_cpu_list
from tuning.core.cpu import Core, CpuTopology
from tuning.core.plan import GpuIrqCpus
from tuning.cpuplan.rules import CpuRules, load_rules
from tuning.errors import RigforgeError


class CpuPlanRefused(RigforgeError):
    """The CPU plan cannot be made as asked; the message names the model and the CPUs.

    ``unit``: the unit refused (its :class:`CpuUnit` name), so a caller can point at the
    models-file entry; ``pin``: True when its ``cpus:`` pin is what is refused.
    """

    def __init__(self, message: str, *, unit: str | None = None, pin: bool = False) -> None:
        super().__init__(message)
        self.unit = unit
        self.pin = pin


@dataclass(frozen=True)
class CpuUnit:
    """A serving unit as the CPU plan sees it: a model, its engine and its GPUs (bus ids or
    UUIDs, keys of the GPU → node map), and the ``cpus:`` pin from the models file, if any."""

    name: str
    engine: str
    gpus: tuple[str, ...]
    pinned_cpus: tuple[int, ...] | None = None


@dataclass(frozen=True)
class UnitCpus:
    """One unit's share: its CPUs (ascending), whole cores, LLC domains and NUMA nodes.

    ``threads``: compute threads per engine process
    (:meth:`~tuning.cpuplan.rules.EngineRule.threads`: llama.cpp's ``--threads``, a
    vLLM/SGLang worker's ``OMP_NUM_THREADS``). ``rule`` says how the size was reached.
    """

    name: str
    engine: str
    gpus: tuple[str, ...]
    cpus: tuple[int, ...]
    cores: int
    llcs: tuple[int, ...]
    nodes: tuple[int, ...]
    pinned: bool
    threads: int
    rule: str

    @property
    def cpu_list(self) -> str:
        """The CPUs as the kernel writes a list (``8-11,72-75``): ``CPUAffinity=``'s form."""
        return format_cpu_list(self.cpus)


@dataclass(frozen=True)
class CpuPlan:
    """Housekeeping CPUs, each unit's CPUs, each GPU's IRQ CPUs, and the CPUs nobody holds."""

    housekeeping_cpus: tuple[int, ...]
    units: tuple[UnitCpus, ...]
    irqs: tuple[GpuIrqCpus, ...]
    spare_cpus: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        """The plan as JSON: CPU lists in the kernel's form (``8-11,72-75``)."""
        return {
            "housekeeping_cpus": format_cpu_list(self.housekeeping_cpus),
            "units": [
                {
                    "name": u.name,
                    "engine": u.engine,
                    "gpus": list(u.gpus),
                    "cpus": u.cpu_list,
                    "cores": u.cores,
                    "threads": u.threads,
                    "llcs": list(u.llcs),
                    "nodes": list(u.nodes),
                    "pinned": u.pinned,
                    "rule": u.rule,
                }
                for u in self.units
            ],
            "irqs": [{"gpu": i.gpu, "cpus": format_cpu_list(i.cpus)} for i in self.irqs],
            "spare_cpus": format_cpu_list(self.spare_cpus) if self.spare_cpus else "",
        }

    def unit(self, name: str) -> UnitCpus:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise KeyError(name)


def plan_cpus(
    topo: CpuTopology,
    gpu_nodes: Mapping[str, int],
    units: Sequence[CpuUnit],
    rules: CpuRules | None = None,
) -> CpuPlan:
    """Make the CPU plan (rules in the module docstring). Raises :class:`CpuPlanRefused`."""
    rules = rules or load_rules()
    host = set(topo.cpus)
    _check(topo, gpu_nodes, units, rules, host)
    pinned = {cpu for u in units if u.pinned_cpus for cpu in u.pinned_cpus}
    taken: set[tuple[int, int]] = set()
    for core in topo.cores:
        if pinned.intersection(core.cpus):
            taken.add(core.key)
    housekeeping = _housekeeping(topo, gpu_nodes, rules, taken)
    taken.update(c.key for c in housekeeping)

    planned: dict[str, UnitCpus] = {}
    for unit in units:
        if unit.pinned_cpus:
            cores = {topo.core_of(c).key: topo.core_of(c) for c in unit.pinned_cpus}
            planned[unit.name] = UnitCpus(
                name=unit.name,
                engine=unit.engine,
                gpus=unit.gpus,
                cpus=tuple(sorted(unit.pinned_cpus)),
                cores=len(cores),
                llcs=tuple(sorted({c.llc for c in cores.values()})),
                nodes=tuple(sorted({c.node for c in cores.values()})),
                pinned=True,
                threads=rules.engines[unit.engine].threads(len(cores), pinned=True),
                rule="pinned by cpus: in the models file",
            )
    auto = [u for u in units if not u.pinned_cpus]
    order = sorted(
        range(len(auto)),
        key=lambda i: (-rules.engines[auto[i].engine].cores_for(len(auto[i].gpus)), i),
    )
    for i in order:
        unit = auto[i]
        rule = rules.engines[unit.engine]
        need = rule.cores_for(len(unit.gpus))
        nodes = tuple(sorted({gpu_nodes[g] for g in unit.gpus}))
        free = [c for c in topo.cores if c.node in nodes and c.key not in taken]
        if len(free) < need:
            have = sorted(cpu for c in free for cpu in c.cpus)
            raise CpuPlanRefused(
                f"model {unit.name!r} ({unit.engine}, {len(unit.gpus)} GPU(s) on NUMA node(s) "
                f"{', '.join(map(str, nodes))}) needs {need} whole cores "
                f"({rule.describe(len(unit.gpus))}) but only {len(free)} are free there: "
                f"CPUs {format_cpu_list(have) if have else 'none'}; give the box fewer units "
                "on that node, move a model's GPUs, or pin its cpus:",
                unit=unit.name,
            )
        chosen = _pick(need, free, topo)
        taken.update(c.key for c in chosen)
        planned[unit.name] = UnitCpus(
            name=unit.name,
            engine=unit.engine,
            gpus=unit.gpus,
            cpus=tuple(sorted(cpu for c in chosen for cpu in c.cpus)),
            cores=len(chosen),
            llcs=tuple(sorted({c.llc for c in chosen})),
            nodes=nodes,
            pinned=False,
            threads=rule.threads(len(chosen), pinned=False),
            rule=rule.describe(len(unit.gpus)),
        )
    ordered = tuple(planned[u.name] for u in units)
    hk_cpus = tuple(sorted(cpu for c in housekeeping for cpu in c.cpus))
    irq_of: dict[str, tuple[int, ...]] = {}
    for share in ordered:
        for gpu in share.gpus:
            irq_of.setdefault(gpu, share.cpus)
    irqs = tuple(GpuIrqCpus(gpu=g, cpus=irq_of.get(g, hk_cpus)) for g in gpu_nodes)
    used = set(hk_cpus).union(*(set(u.cpus) for u in ordered))
    return CpuPlan(
        housekeeping_cpus=hk_cpus,
        units=ordered,
        irqs=irqs,
        spare_cpus=tuple(sorted(host - used)),
    )


def _check(
    topo: CpuTopology,
    gpu_nodes: Mapping[str, int],
    units: Sequence[CpuUnit],
    rules: CpuRules,
    host: set[int],
) -> None:
    node_ids = {n.node for n in topo.nodes}
    owner: dict[int, str] = {}
    names: set[str] = set()
    for unit in units:
        if unit.name in names:
            raise CpuPlanRefused(f"model {unit.name!r} is listed twice; plan each unit once")
        names.add(unit.name)
        if unit.engine not in rules.engines:
            raise CpuPlanRefused(
                f"model {unit.name!r}: engine {unit.engine!r} has no CPU rule; known: "
                + ", ".join(sorted(rules.engines))
            )
        for gpu in unit.gpus:
            if gpu not in gpu_nodes:
                raise CpuPlanRefused(f"model {unit.name!r}: GPU {gpu} has no known NUMA node")
            if gpu_nodes[gpu] not in node_ids:
                raise CpuPlanRefused(
                    f"model {unit.name!r}: GPU {gpu} is on NUMA node {gpu_nodes[gpu]}, which "
                    f"has no CPUs on this host (nodes {sorted(node_ids)})"
                )
        if unit.pinned_cpus is None:
            continue
        check_pin_on_host(unit.name, unit.pinned_cpus, host)
        for cpu in unit.pinned_cpus:
            if cpu in owner:
                shared = sorted(c for c in unit.pinned_cpus if owner.get(c) == owner[cpu])
                raise CpuPlanRefused(
                    f"models {owner[cpu]!r} and {unit.name!r} both pin CPUs "
                    f"{format_cpu_list(shared)}; give each its own CPUs",
                    unit=unit.name,
                    pin=True,
                )
        owner.update(dict.fromkeys(unit.pinned_cpus, unit.name))


def check_pin_on_host(name: str, pinned: Iterable[int], host: Iterable[int]) -> None:
    """Refuse a ``cpus:`` pin naming CPUs the host lacks (:class:`CpuPlanRefused`)."""
    have = set(host)
    missing = sorted(set(pinned) - have)
    if missing:
        raise CpuPlanRefused(
            f"model {name!r}: cpus: pins CPUs {format_cpu_list(missing)} the host "
            f"lacks (it has {format_cpu_list(have)}); pin CPUs the host has",
            unit=name,
            pin=True,
        )


def _housekeeping(
    topo: CpuTopology,
    gpu_nodes: Mapping[str, int],
    rules: CpuRules,
    taken: set[tuple[int, int]],
) -> list[Core]:
    per_socket = rules.housekeeping.cores_per_socket
    gpus_on = {n.node: 0 for n in topo.nodes}
    for node in gpu_nodes.values():
        if node in gpus_on:
            gpus_on[node] += 1
    chosen: list[Core] = []
    for socket in topo.sockets:
        nodes = sorted(
            (n.node for n in topo.nodes if socket in n.sockets), key=lambda n: (gpus_on[n], n)
        )
        picked: list[Core] = []
        for node in nodes:
            for core in topo.cores:
                if len(picked) == per_socket:
                    break
                if core.socket == socket and core.node == node and core.key not in taken:
                    picked.append(core)
        if per_socket and not picked:
            raise CpuPlanRefused(
                f"the cpus: pins take every core of socket {socket}, leaving none for the OS, "
                f"sshd and the non-GPU interrupts ({per_socket} core(s) per socket, "
                "engines.yaml housekeeping); leave some of its cores unpinned"
            )
        chosen += picked
    return chosen


def _pick(need: int, free: Iterable[Core], topo: CpuTopology) -> list[Core]:
    """``need`` cores out of ``free`` by rule 4 of the module docstring."""
    size = {d.llc: len(d.cores) for d in topo.llcs}
    order = {d.llc: i for i, d in enumerate(topo.llcs)}
    by_llc: dict[int, list[Core]] = {}
    for core in free:
        by_llc.setdefault(core.llc, []).append(core)
    for cores in by_llc.values():
        cores.sort(key=lambda c: c.cpus[0])
    chosen: list[Core] = []
    for llc in sorted(by_llc, key=order.__getitem__):
        cores = by_llc[llc]
        if len(cores) == size[llc] and need >= len(cores):
            chosen += cores
            need -= len(cores)
            by_llc[llc] = []
    while need > 0:
        open_ = [llc for llc, cores in by_llc.items() if cores]
        fitting = [llc for llc in open_ if len(by_llc[llc]) >= need]
        if fitting:
            llc = min(
                fitting,
                key=lambda d: (
                    len(by_llc[d]) != size[d],  # an unused domain first
                    len(by_llc[d]),  # then the tightest fit
                    order[d],
                ),
            )
        else:
            llc = max(open_, key=lambda d: (len(by_llc[d]), -order[d]))
        take = by_llc[llc][:need]
        by_llc[llc] = by_llc[llc][len(take) :]
        chosen += take
        need -= len(take)
    return chosen
