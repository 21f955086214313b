"""This host's CPU topology, read from sysfs under a root that tests point at a scratch tree.

What ``lscpu -p`` prints, read from the files it reads (util-linux's lscpu uses the same
``topology/`` and ``cache/`` files): ``cpu/online``; per online CPU ``topology/core_id``,
``topology/physical_package_id`` and the highest-level cache's ``shared_cpu_list``;
``node/nodeN/cpulist``; ``cpu0/cpufreq/scaling_available_governors``; ``cpu0/cpuidle/stateN``.
Only reads; nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from tuning.captures.errors import CaptureFormatError
from tuning.captures.values import parse_cpu_list
from tuning.core.cpu import CpuRecord, CpuTopology, CState, build_topology

_INDEX_RE = re.compile(r"^index(\d{1,2})$")
_NODE_RE = re.compile(r"^node(\d{1,4})$")
_STATE_RE = re.compile(r"^state(\d{1,2})$")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _small_int(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text is not None and text.isdigit() and len(text) <= 6 else None


def _llc_cpus(cpu_dir: Path) -> tuple[int, ...] | None:
    """The CPUs sharing this CPU's highest-level cache, from its ``shared_cpu_list``."""
    best: tuple[int, Path] | None = None
    cache = cpu_dir / "cache"
    if not cache.is_dir():
        return None
    for entry in cache.iterdir():
        if not _INDEX_RE.match(entry.name):
            continue
        level = _small_int(entry / "level")
        if level is not None and (best is None or level > best[0]):
            best = (level, entry)
    return parse_cpu_list(_read(best[1] / "shared_cpu_list")) if best else None


def read_host_topology(root: Path = Path("/")) -> CpuTopology:
    """The topology of the host whose sysfs sits under ``root``.

    Raises :class:`~tuning.captures.errors.CaptureFormatError` when ``cpu/online`` is missing
    or is no CPU list (a list like ``0-2000000000`` is refused before it is expanded), or a
    CPU lacks its topology files.
    """
    cpu_root = root / "sys/devices/system/cpu"
    source = str(cpu_root)
    online = parse_cpu_list(_read(cpu_root / "online"))
    if not online:
        raise CaptureFormatError(f"{source}/online: missing or not a CPU list")
    node_of: dict[int, int] = {}
    node_root = root / "sys/devices/system/node"
    if node_root.is_dir():
        for entry in sorted(node_root.iterdir()):
            if (m := _NODE_RE.match(entry.name)) is not None:
                for cpu in parse_cpu_list(_read(entry / "cpulist")) or ():
                    node_of[cpu] = int(m.group(1))
    llc_groups: dict[tuple[int, ...], int] = {}
    records: list[CpuRecord] = []
    for cpu in online:
        cpu_dir = cpu_root / f"cpu{cpu}"
        core = _small_int(cpu_dir / "topology/core_id")
        socket = _small_int(cpu_dir / "topology/physical_package_id")
        if core is None or socket is None:
            raise CaptureFormatError(
                f"{cpu_dir}/topology: core_id or physical_package_id missing; is {root} a "
                "sysfs root?"
            )
        shared = _llc_cpus(cpu_dir)
        llc = llc_groups.setdefault(shared, len(llc_groups)) if shared else None
        records.append(
            CpuRecord(cpu=cpu, core=core, socket=socket, node=node_of.get(cpu, 0), llc=llc)
        )
    governors = (_read(cpu_root / "cpu0/cpufreq/scaling_available_governors") or "").split()
    cstates: list[tuple[int, CState]] = []
    idle = cpu_root / "cpu0/cpuidle"
    if idle.is_dir():
        for entry in idle.iterdir():
            if (m := _STATE_RE.match(entry.name)) is None:
                continue
            name = _read(entry / "name")
            if name:
                disable = _read(entry / "disable")
                cstates.append(
                    (
                        int(m.group(1)),
                        CState(
                            name=name,
                            latency_us=_small_int(entry / "latency"),
                            disabled=None if disable is None else disable == "1",
                        ),
                    )
                )
    return build_topology(
        records,
        source=source,
        governors=governors,
        cstates=[state for _, state in sorted(cstates, key=lambda s: s[0])],
    )
