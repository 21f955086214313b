"""The ``cpu:`` section of a rig file: the simulated host's CPU layout, built into a topology.

A simulated CPU is described the way a datasheet describes it — sockets, last-level-cache
domains per socket (AMD CCDs/CCXs), cores per domain, threads per core, L3 per domain — plus
the BIOS's NUMA-nodes-per-socket setting (AMD "NPS1/NPS2/NPS4"). :func:`cpu_topology_of`
numbers the logical CPUs as Linux does on these parts (util-linux's EPYC 7451 capture,
``tests/fixtures/real/cpu/2x-epyc7451-8numa-lscpu-p.txt``): the first thread of every core
socket by socket, cores in cache-domain order (CPUs 0 … N−1), then the second threads in the
same order (N … 2N−1). The domains of a socket are split evenly over its nodes, in order.

Example: a 5995WX (8 CCDs × 8 cores, SMT 2) in NPS4 → node 0 holds CCDs 0–1, CPUs
``0-15,64-79``; node 3 holds CCDs 6–7, CPUs ``48-63,112-127``.
"""

from __future__ import annotations

from pydantic import Field

from inventory.fields import StrictModel
from tuning.captures.values import format_cpu_list, parse_cpu_list
from tuning.core.cpu import MAX_LOGICAL_CPUS, CpuRecord, CpuTopology, build_topology

#: cpufreq governors Linux ships (Documentation/admin-guide/pm/cpufreq.rst).
GOVERNORS = ("performance", "powersave", "userspace", "ondemand", "conservative", "schedutil")


class RigCpuSpec(StrictModel):
    """A rig's CPU: the layout, the governors and C-states its kernel offers, sources."""

    model: str
    sockets: int = Field(ge=1, le=8)
    numa_nodes_per_socket: int = Field(default=1, ge=1, le=8)
    llcs_per_socket: int = Field(ge=1, le=64)
    cores_per_llc: int = Field(ge=1, le=64)
    threads_per_core: int = Field(default=2, ge=1, le=4)
    llc_mib: float = Field(gt=0, le=4096)
    governors: list[str] = Field(default_factory=lambda: ["performance", "powersave"])
    cstates: list[str] = Field(default_factory=lambda: ["POLL", "C1", "C2"])
    sources: dict[str, str] = Field(min_length=1)

    @property
    def cores(self) -> int:
        """Physical cores in the box (all sockets)."""
        return self.sockets * self.llcs_per_socket * self.cores_per_llc

    @property
    def logical_cpus(self) -> int:
        return self.cores * self.threads_per_core

    @property
    def numa_nodes(self) -> int:
        return self.sockets * self.numa_nodes_per_socket


def check_cpu_spec(spec: RigCpuSpec, path: str = "cpu") -> list[tuple[str, str]]:
    """Cross-field problems as ``(yaml path, message)``; empty when the layout can be built."""
    problems: list[tuple[str, str]] = []
    if spec.llcs_per_socket % spec.numa_nodes_per_socket:
        problems.append(
            (
                f"{path}.numa_nodes_per_socket",
                f"{spec.numa_nodes_per_socket} nodes cannot split {spec.llcs_per_socket} "
                "LLC domains evenly; use a divisor of llcs_per_socket",
            )
        )
    if spec.logical_cpus > MAX_LOGICAL_CPUS:
        problems.append(
            (path, f"{spec.logical_cpus} logical CPUs; Linux has at most {MAX_LOGICAL_CPUS}")
        )
    for i, name in enumerate(spec.governors):
        if name not in GOVERNORS:
            problems.append(
                (
                    f"{path}.governors[{i}]",
                    f"{name!r} is no cpufreq governor; use one of " + ", ".join(GOVERNORS),
                )
            )
    return problems


def cpu_topology_of(spec: RigCpuSpec, source: str = "rig cpu") -> CpuTopology:
    """The topology a host with this CPU shows Linux (numbering as in the module docstring).

    Call only on a spec :func:`check_cpu_spec` passed.
    """
    cores_per_socket = spec.llcs_per_socket * spec.cores_per_llc
    llcs_per_node = spec.llcs_per_socket // spec.numa_nodes_per_socket
    records: list[CpuRecord] = []
    for thread in range(spec.threads_per_core):
        for socket in range(spec.sockets):
            for local in range(cores_per_socket):
                core = socket * cores_per_socket + local
                llc_local = local // spec.cores_per_llc
                records.append(
                    CpuRecord(
                        cpu=thread * spec.cores + core,
                        core=core,
                        socket=socket,
                        node=socket * spec.numa_nodes_per_socket + llc_local // llcs_per_node,
                        llc=socket * spec.llcs_per_socket + llc_local,
                    )
                )
    return build_topology(
        records,
        source=source,
        model=spec.model,
        llc_size_mib=spec.llc_mib,
        governors=spec.governors,
        cstates=spec.cstates,
    )


def check_rig_cpu(
    spec: RigCpuSpec,
    *,
    host_cores: int | None,
    host_numa_nodes: int | None,
    gpus: list[tuple[int | None, str | None]],
) -> list[tuple[str, str]]:
    """The ``cpu:`` section against the rest of the rig file: ``host.cpu_cores`` and
    ``host.numa_nodes`` when given, and each GPU's ``(numa_node, cpus)``: the node must exist
    and ``cpus`` must be that node's CPUs, as the kernel's ``local_cpulist`` would say."""
    problems = check_cpu_spec(spec)
    if problems:
        return problems
    topo = cpu_topology_of(spec)
    if host_cores is not None and host_cores != spec.cores:
        problems.append(
            (
                "host.cpu_cores",
                f"{host_cores} cores, but cpu: describes {spec.cores}; make them agree",
            )
        )
    if host_numa_nodes is not None and host_numa_nodes != spec.numa_nodes:
        problems.append(
            (
                "host.numa_nodes",
                f"{host_numa_nodes} nodes, but cpu: describes {spec.numa_nodes}; make them agree",
            )
        )
    for i, (node, cpus) in enumerate(gpus):
        if node is None:
            continue
        if node >= spec.numa_nodes:
            problems.append(
                (
                    f"gpus[{i}].numa_node",
                    f"node {node} does not exist; cpu: describes nodes 0–{spec.numa_nodes - 1}",
                )
            )
            continue
        wanted = topo.node(node).cpus
        if cpus is not None and parse_cpu_list(cpus) not in (None, wanted):
            problems.append(
                (
                    f"gpus[{i}].cpus",
                    f"{cpus!r} is not NUMA node {node}'s CPUs "
                    f"{format_cpu_list(wanted)!r} as cpu: lays them out; write those",
                )
            )
    return problems
