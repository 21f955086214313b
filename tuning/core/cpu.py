"""CPU topology as data: sockets, NUMA nodes, last-level-cache domains, cores, SMT siblings.

One value, :class:`CpuTopology`, says what the CPU plan (:mod:`tuning.cpuplan`) may hand out:
which logical CPUs (the ids the kernel, ``taskset`` and systemd's ``CPUAffinity=`` use) share a
physical core (SMT siblings), which cores share a last-level cache (an AMD CCX/CCD: 8 Zen 3/4
cores with 32 MB of L3), which NUMA node and socket each sits on, and which cpufreq governors
and C-states the host offers. It is built from one record per logical CPU
(:class:`CpuRecord`, what ``lscpu -p`` prints per line) by :func:`build_topology`; the parsers
in :mod:`tuning.captures.cpu` and the rig files' ``cpu:`` section produce those records.

A core is identified by ``(socket, core)``: ``lscpu -p --physical`` prints the kernel's
``core_id``, which restarts at 0 on every socket (util-linux's EPYC 7451 capture).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tuning.core.limits import MAX_CPU_ID
from tuning.errors import ConfigError

#: Logical CPUs one topology may hold: Linux's CONFIG_NR_CPUS maximum on x86_64 (8192,
#: arch/x86/Kconfig); a record list longer than that is refused before anything is built.
MAX_LOGICAL_CPUS = 8192


@dataclass(frozen=True)
class CpuRecord:
    """One logical CPU as ``lscpu -p`` lists it.

    ``core`` is unique per ``socket`` (not necessarily across sockets); ``llc`` the id of its
    last-level cache (``None`` when the source does not say: each core is then its own domain);
    ``node`` its NUMA node (``None``: no NUMA information, node 0 assumed).
    """

    cpu: int
    core: int
    socket: int
    node: int | None = None
    llc: int | None = None
    online: bool = True


@dataclass(frozen=True)
class CState:
    """One cpuidle state (``/sys/devices/system/cpu/cpu0/cpuidle/stateN``): its name, exit
    latency (µs, ``None`` when not known) and whether it is disabled (``None``: not known)."""

    name: str
    latency_us: int | None = None
    disabled: bool | None = None


@dataclass(frozen=True)
class Core:
    """A physical core: its logical CPUs (SMT siblings, ascending), socket, node and LLC."""

    socket: int
    core: int
    cpus: tuple[int, ...]
    node: int
    llc: int

    @property
    def key(self) -> tuple[int, int]:
        """``(socket, core)``: what identifies a core across sockets."""
        return (self.socket, self.core)


@dataclass(frozen=True)
class LlcDomain:
    """Cores sharing one last-level cache (an AMD CCX/CCD, an Intel socket's L3)."""

    llc: int
    socket: int
    node: int
    cores: tuple[tuple[int, int], ...]
    cpus: tuple[int, ...]
    size_mib: float | None = None


@dataclass(frozen=True)
class NumaNode:
    """A NUMA node's CPUs, its sockets and the LLC domains on it.

    Usually one socket; a pre-NUMA two-socket Xeon (front-side bus) shows both sockets in node 0
    (fixture ``cpu/2x-xeon-e5410-lscpu-p-no-l3.txt``).
    """

    node: int
    sockets: tuple[int, ...]
    cpus: tuple[int, ...]
    llcs: tuple[int, ...]


@dataclass(frozen=True)
class CpuTopology:
    """The host's CPUs as the CPU plan sees them. Offline CPUs are left out.

    ``governors``: cpufreq governors the host offers (``scaling_available_governors``);
    ``cstates``: idle states, shallowest first (``/sys/devices/system/cpu/cpu0/cpuidle/``);
    both empty when unknown. ``model`` is the ``lscpu`` model name, ``None`` when not known.
    """

    cores: tuple[Core, ...]
    llcs: tuple[LlcDomain, ...]
    nodes: tuple[NumaNode, ...]
    sockets: tuple[int, ...]
    model: str | None = None
    governors: tuple[str, ...] = ()
    cstates: tuple[CState, ...] = ()

    @property
    def cpus(self) -> tuple[int, ...]:
        """Every online logical CPU, ascending."""
        return tuple(sorted(c for core in self.cores for c in core.cpus))

    @property
    def threads_per_core(self) -> int:
        """The largest number of SMT siblings on one core (1: SMT off)."""
        return max((len(c.cpus) for c in self.cores), default=0)

    def node(self, node: int) -> NumaNode:
        """The NUMA node ``node``; :class:`KeyError` when the host has none such."""
        for entry in self.nodes:
            if entry.node == node:
                return entry
        raise KeyError(node)

    def core_of(self, cpu: int) -> Core:
        """The core logical CPU ``cpu`` belongs to; :class:`KeyError` when offline or absent."""
        for core in self.cores:
            if cpu in core.cpus:
                return core
        raise KeyError(cpu)

    def whole_cores(self, cpus: Iterable[int]) -> bool:
        """True when ``cpus`` holds every SMT sibling of each core it touches."""
        wanted = set(cpus)
        return all(
            set(core.cpus) <= wanted for core in self.cores if wanted.intersection(core.cpus)
        )


def cpu_list_values(text: str) -> tuple[int, ...] | None:
    """A kernel CPU list (``0-55,112-167``, ``6,14,22,30``, ``0 1 2``, ``0-6:2``) as sorted
    CPU ids; ``None`` when the text is empty or not such a list, or names a CPU above
    :data:`~tuning.core.limits.MAX_CPU_ID` (checked before a range is expanded: ``0-2000000000``
    would not fit in memory)."""
    cpus: set[int] = set()
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", part)
        if not match:
            return None
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        stride = int(match.group(3)) if match.group(3) else 1
        if last < first or stride < 1 or last > MAX_CPU_ID:
            return None
        cpus.update(range(first, last + 1, stride))
    return tuple(sorted(cpus)) if cpus else None


def format_cpu_list(cpus: Iterable[int] | None) -> str:
    """Compact ranges: ``(0, 1, 2, 3, 8)`` → ``"0-3,8"``; ``None``/empty → ``"?"``."""
    if not cpus:
        return "?"
    ordered = sorted(set(cpus))
    parts: list[str] = []
    start = prev = ordered[0]
    for cpu in ordered[1:]:
        if cpu == prev + 1:
            prev = cpu
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = cpu
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts)


def build_topology(
    records: Sequence[CpuRecord],
    *,
    source: str,
    model: str | None = None,
    llc_size_mib: float | None = None,
    governors: Sequence[str] = (),
    cstates: Sequence[CState] = (),
) -> CpuTopology:
    """Group per-CPU records into cores, LLC domains, NUMA nodes and sockets.

    ``source`` names the input in errors. Refused (:class:`ConfigError`): no online CPU, more
    records than :data:`MAX_LOGICAL_CPUS`, a CPU listed twice, a core whose siblings sit on
    different nodes or LLCs, an LLC domain spanning sockets or nodes.

    Example (a 2-core, SMT-2 part, siblings at +2 as AMD and Intel number them)::

        >>> recs = [CpuRecord(cpu=c, core=c % 2, socket=0, node=0, llc=0) for c in range(4)]
        >>> topo = build_topology(recs, source="example")
        >>> [c.cpus for c in topo.cores]
        [(0, 2), (1, 3)]
        >>> topo.llcs[0].cpus, topo.threads_per_core
        ((0, 1, 2, 3), 2)
    """
    if len(records) > MAX_LOGICAL_CPUS:
        raise ConfigError(
            f"{source}: {len(records)} CPUs listed; Linux has at most {MAX_LOGICAL_CPUS}"
        )
    seen: set[int] = set()
    by_core: dict[tuple[int, int], list[CpuRecord]] = {}
    for rec in records:
        if rec.cpu in seen:
            raise ConfigError(f"{source}: CPU {rec.cpu} is listed twice; list each CPU once")
        seen.add(rec.cpu)
        if rec.online:
            by_core.setdefault((rec.socket, rec.core), []).append(rec)
    if not by_core:
        raise ConfigError(f"{source}: no online CPU listed")
    cores: list[Core] = []
    for (socket, core_id), recs in sorted(by_core.items()):
        nodes = {0 if r.node is None else r.node for r in recs}
        llcs = {r.llc for r in recs}
        cpus = tuple(sorted(r.cpu for r in recs))
        if len(nodes) > 1 or len(llcs) > 1:
            raise ConfigError(
                f"{source}: core {core_id} of socket {socket} (CPUs {_fmt(cpus)}) spans NUMA "
                f"nodes {sorted(nodes)} / LLCs {sorted(llcs, key=str)}; SMT siblings share both"
            )
        (llc,) = llcs
        cores.append(
            Core(
                socket=socket,
                core=core_id,
                cpus=cpus,
                node=nodes.pop(),
                # No LLC id: each core is its own domain, numbered after every real id.
                llc=llc if llc is not None else -1,
            )
        )
    cores = _number_missing_llcs(cores)
    cores.sort(key=lambda c: c.cpus[0])
    domains = _group_llcs(cores, source, llc_size_mib)
    return CpuTopology(
        cores=tuple(cores),
        llcs=domains,
        nodes=_group_nodes(cores, domains),
        sockets=tuple(sorted({c.socket for c in cores})),
        model=model,
        governors=tuple(governors),
        cstates=tuple(cstates),
    )


def _number_missing_llcs(cores: list[Core]) -> list[Core]:
    top = max((c.llc for c in cores), default=-1)
    out: list[Core] = []
    for core in cores:
        if core.llc < 0:
            top += 1
            core = Core(core.socket, core.core, core.cpus, core.node, top)
        out.append(core)
    return out


def _group_llcs(
    cores: Sequence[Core], source: str, size_mib: float | None
) -> tuple[LlcDomain, ...]:
    groups: dict[int, list[Core]] = {}
    for core in cores:
        groups.setdefault(core.llc, []).append(core)
    out = []
    for llc, members in sorted(groups.items(), key=lambda kv: min(kv[1][0].cpus)):
        sockets = {c.socket for c in members}
        if len(sockets) > 1:
            raise ConfigError(
                f"{source}: LLC {llc} spans sockets {sorted(sockets)}; a cache sits on one socket"
            )
        nodes = {c.node for c in members}
        if len(nodes) > 1:
            raise ConfigError(
                f"{source}: LLC {llc} spans NUMA nodes {sorted(nodes)}; a CCD sits on one node"
            )
        out.append(
            LlcDomain(
                llc=llc,
                socket=members[0].socket,
                node=members[0].node,
                cores=tuple(c.key for c in members),
                cpus=tuple(sorted(cpu for c in members for cpu in c.cpus)),
                size_mib=size_mib,
            )
        )
    return tuple(out)


def _group_nodes(cores: Sequence[Core], llcs: Sequence[LlcDomain]) -> tuple[NumaNode, ...]:
    groups: dict[int, list[Core]] = {}
    for core in cores:
        groups.setdefault(core.node, []).append(core)
    out = []
    for node, members in sorted(groups.items()):
        out.append(
            NumaNode(
                node=node,
                sockets=tuple(sorted({c.socket for c in members})),
                cpus=tuple(sorted(cpu for c in members for cpu in c.cpus)),
                llcs=tuple(d.llc for d in llcs if d.node == node),
            )
        )
    return tuple(out)


def _fmt(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
