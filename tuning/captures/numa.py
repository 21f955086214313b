"""``numactl -H`` (``--hardware``) and ``lscpu`` → NUMA nodes, their CPUs, and ``HostInfo``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuning.captures.values import clean_text, integer, parse_cpu_list, text_or_none
from tuning.core.rig import HostInfo

_NODE_CPUS_RE = re.compile(r"^node\s+(\d+)\s+cpus:\s*(.*)$")
_NODE_SIZE_RE = re.compile(r"^node\s+(\d+)\s+(size|free):\s*(\d+)\s*MB\s*$")
_LSCPU_NODE_RE = re.compile(r"^NUMA node(\d+) CPU\(s\)$")


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its CPUs and memory. ``numactl`` prints "MB" meaning MiB."""

    node: int
    cpus: tuple[int, ...] = ()
    size_mib: int | None = None
    free_mib: int | None = None


@dataclass(frozen=True)
class NumaTopology:
    """``numactl -H``: nodes and the distance matrix (``distances[i][j]``, 10 = local)."""

    nodes: tuple[NumaNode, ...]
    distances: tuple[tuple[int, ...], ...] = ()

    @property
    def memory_mib(self) -> int | None:
        sizes = [n.size_mib for n in self.nodes]
        return sum(sizes) if sizes and None not in sizes else None  # type: ignore[arg-type]

    def node_cpus(self) -> dict[int, tuple[int, ...]]:
        return {n.node: n.cpus for n in self.nodes}


@dataclass(frozen=True)
class CpuInfo:
    """``lscpu``: model, counts and the NUMA node → CPU map. ``None`` where absent."""

    model: str | None = None
    logical_cpus: int | None = None
    sockets: int | None = None
    cores_per_socket: int | None = None
    threads_per_core: int | None = None
    numa_nodes: int | None = None
    node_cpus: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @property
    def physical_cores(self) -> int | None:
        """Cores × sockets (what "cores" means on a spec sheet)."""
        if self.sockets is None or self.cores_per_socket is None:
            return None
        return self.sockets * self.cores_per_socket


def parse_numactl(text: str) -> NumaTopology:
    """Parse ``numactl -H``; nodes without a ``cpus:`` line are memory-only (empty CPUs)."""
    nodes: dict[int, dict[str, object]] = {}
    distances: list[tuple[int, ...]] = []
    in_distances = False
    for raw in clean_text(text).split("\n"):
        line = raw.strip()
        if m := _NODE_CPUS_RE.match(line):
            nodes.setdefault(int(m.group(1)), {})["cpus"] = parse_cpu_list(m.group(2)) or ()
        elif m := _NODE_SIZE_RE.match(line):
            nodes.setdefault(int(m.group(1)), {})[f"{m.group(2)}_mib"] = int(m.group(3))
        elif line.startswith("node distances"):
            in_distances = True
        elif in_distances and (m := re.match(r"^(\d+):\s+([\d\s]+)$", line)):
            distances.append(tuple(int(v) for v in m.group(2).split()))
    return NumaTopology(
        nodes=tuple(NumaNode(node=k, **v) for k, v in sorted(nodes.items())),  # type: ignore[arg-type]
        distances=tuple(distances),
    )


def parse_lscpu(text: str) -> CpuInfo:
    """Parse ``lscpu`` (the human layout, ``Key: value``; wrapped ``Flags`` lines ignored)."""
    values: dict[str, str] = {}
    node_cpus: list[tuple[int, tuple[int, ...]]] = []
    for raw in clean_text(text).split("\n"):
        key, sep, value = raw.strip().partition(":")
        if not sep:
            continue
        key = key.strip()
        values.setdefault(key, value.strip())
        if m := _LSCPU_NODE_RE.match(key):
            node_cpus.append((int(m.group(1)), parse_cpu_list(value) or ()))
    return CpuInfo(
        model=text_or_none(values.get("Model name")),
        logical_cpus=integer(values.get("CPU(s)")),
        sockets=integer(values.get("Socket(s)")),
        cores_per_socket=integer(values.get("Core(s) per socket")),
        threads_per_core=integer(values.get("Thread(s) per core")),
        numa_nodes=integer(values.get("NUMA node(s)")),
        node_cpus=tuple(sorted(node_cpus)),
    )


def host_info(cpu: CpuInfo | None, numa: NumaTopology | None) -> HostInfo:
    """Merge ``lscpu`` and ``numactl -H`` into the rig model's ``HostInfo``.

    ``cpu_cores`` is physical cores (sockets × cores per socket); ``memory_gib`` the sum of
    the NUMA nodes' memory (MiB / 1024). Missing inputs leave fields ``None``.
    """
    memory_mib = numa.memory_mib if numa else None
    numa_nodes = cpu.numa_nodes if cpu and cpu.numa_nodes is not None else None
    if numa_nodes is None and numa and numa.nodes:
        numa_nodes = len(numa.nodes)
    return HostInfo(
        cpu_model=cpu.model if cpu else None,
        cpu_cores=cpu.physical_cores if cpu else None,
        memory_gib=round(memory_mib / 1024, 1) if memory_mib is not None else None,
        numa_nodes=numa_nodes,
    )
