"""``lscpu -p``, ``lscpu -e`` and ``…/cache/index3/shared_cpu_list`` → a CPU topology.

Each parser returns one :class:`~tuning.core.cpu.CpuRecord` per logical CPU;
:func:`cpu_topology` groups them (with ``numactl -H``'s nodes where the records lack them) into
a :class:`~tuning.core.cpu.CpuTopology`. The last-level cache is the highest cache column the
capture has (``L3`` on every current x86 part; ``L2`` on a Core 2 era Xeon without L3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from tuning.captures.errors import CaptureFormatError
from tuning.captures.numa import NumaTopology
from tuning.captures.values import boolean, clean_text, parse_cpu_list
from tuning.core.cpu import MAX_LOGICAL_CPUS, CpuRecord, CpuTopology, build_topology
from tuning.core.limits import MAX_CPU_ID

_CACHE_RE = re.compile(r"^L(\d)[di]?$", re.IGNORECASE)
_SHARED_RE = re.compile(r"cpu(\d+)/cache/index\d+/shared_cpu_list\s*:\s*(.*)$")


def _int_cell(cell: str, what: str, line_no: int, source: str) -> int | None:
    cell = cell.strip()
    if cell in ("", "-"):
        return None
    if not cell.isdigit() or len(cell) > 6 or int(cell) > MAX_CPU_ID:
        raise CaptureFormatError(
            f"{source}:{line_no}: {what} {cell!r} is not an id in 0–{MAX_CPU_ID}; "
            "capture `lscpu -p` (or `lscpu -e`) unchanged"
        )
    return int(cell)


def _record(values: Mapping[str, int | None], online: bool, line_no: int, source: str) -> CpuRecord:
    cpu, core, socket = values.get("cpu"), values.get("core"), values.get("socket")
    if cpu is None or core is None or socket is None:
        raise CaptureFormatError(
            f"{source}:{line_no}: a CPU line needs CPU, Core and Socket ids; capture `lscpu -p`"
        )
    return CpuRecord(
        cpu=cpu,
        core=core,
        socket=socket,
        node=values.get("node"),
        llc=values.get("llc"),
        online=online,
    )


def _check_count(count: int, source: str) -> None:
    if count > MAX_LOGICAL_CPUS:
        raise CaptureFormatError(
            f"{source}: more than {MAX_LOGICAL_CPUS} CPU lines; that is no Linux host"
        )


def parse_lscpu_p(text: str, source: str = "lscpu -p") -> tuple[CpuRecord, ...]:
    """Parse ``lscpu -p`` (``--parse``): the last ``#`` comment names the columns.

    Example (util-linux's EPYC 7451 capture, first line): header
    ``# CPU,Core,Socket,Node,,L1d,L1i,L2,L3`` and ``0,0,0,0,,0,0,0,0`` → CPU 0, core 0,
    socket 0, node 0, LLC (L3) 0. An empty Node cell (no NUMA) stays ``None``.
    """
    columns: list[str] = []
    records: list[CpuRecord] = []
    for line_no, raw in enumerate(clean_text(text).split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if "," in body and body.split(",")[0].strip().lower() == "cpu":
                columns = [c.strip().lower() for c in body.split(",")]
            continue
        if not columns:
            raise CaptureFormatError(
                f"{source}:{line_no}: no '# CPU,Core,Socket,…' header before the first CPU "
                "line; capture `lscpu -p` with its comment lines"
            )
        cells = line.split(",")
        if len(cells) != len(columns):
            raise CaptureFormatError(
                f"{source}:{line_no}: {len(cells)} cells under {len(columns)} columns"
            )
        _check_count(len(records) + 1, source)
        values, online = _columns(columns, cells, line_no, source)
        if online or None not in (values.get("core"), values.get("socket")):
            records.append(_record(values, online, line_no, source))
    if not records:
        raise CaptureFormatError(f"{source}: no CPU lines; capture `lscpu -p`")
    return tuple(records)


def parse_lscpu_e(text: str, source: str = "lscpu -e") -> tuple[CpuRecord, ...]:
    """Parse ``lscpu -e`` (``--extended``): a header row, then one row per CPU.

    The cache column ``L1d:L1i:L2:L3`` is split on ``:``; its last field is the LLC. The
    ``ONLINE`` column is translated by the locale (``да`` in a Russian one): a word that is
    neither a known yes nor a known no counts as online, since ``lscpu -e`` lists offline CPUs
    with ``-`` caches and ``no``.
    """
    lines = [ln for ln in clean_text(text).split("\n") if ln.strip()]
    if not lines or not lines[0].split() or lines[0].split()[0].upper() != "CPU":
        raise CaptureFormatError(f"{source}:1: expected a 'CPU NODE SOCKET CORE …' header")
    header = lines[0].split()
    columns: list[str] = []
    for name in header:
        if ":" in name:
            columns.append("caches:" + name.lower())
        else:
            columns.append(name.lower())
    records: list[CpuRecord] = []
    for line_no, line in enumerate(lines[1:], start=2):
        cells = line.split()
        if len(cells) < len(columns):
            raise CaptureFormatError(
                f"{source}:{line_no}: {len(cells)} cells under {len(columns)} columns"
            )
        _check_count(len(records) + 1, source)
        values, online = _columns(columns, cells[: len(columns)], line_no, source)
        if online or None not in (values.get("core"), values.get("socket")):
            records.append(_record(values, online, line_no, source))
    if not records:
        raise CaptureFormatError(f"{source}: no CPU rows; capture `lscpu -e`")
    return tuple(records)


def _columns(
    columns: Sequence[str], cells: Sequence[str], line_no: int, source: str
) -> tuple[dict[str, int | None], bool]:
    values: dict[str, int | None] = {}
    online = True
    best_level = -1
    for name, cell in zip(columns, cells, strict=True):
        if name in ("cpu", "core", "socket", "node"):
            values[name] = _int_cell(cell, name, line_no, source)
        elif name == "online":
            online = boolean(cell) is not False
        elif name.startswith("caches:"):
            levels = name.removeprefix("caches:").split(":")
            ids = cell.split(":")
            if len(ids) == len(levels):
                values["llc"] = _int_cell(ids[-1], levels[-1], line_no, source)
            elif cell.strip() == "-":
                values["llc"] = None
            else:
                raise CaptureFormatError(
                    f"{source}:{line_no}: cache cell {cell!r} does not match {name[7:]!r}"
                )
        elif (m := _CACHE_RE.match(name)) and int(m.group(1)) >= best_level:
            best_level = int(m.group(1))
            values["llc"] = _int_cell(cell, name, line_no, source)
    return values, online


def parse_shared_cpu_lists(text: str, source: str = "shared_cpu_list") -> dict[int, int]:
    """CPU → LLC id from ``grep . /sys/devices/system/cpu/cpu*/cache/index3/shared_cpu_list``.

    Each line is ``…/cpuN/cache/index3/shared_cpu_list:LIST``; CPUs sharing one list share one
    cache. Ids are numbered by each list's lowest CPU. Example::

        /sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list:0-7,64-71
        /sys/devices/system/cpu/cpu8/cache/index3/shared_cpu_list:8-15,72-79

    gives ``{0: 0, …, 7: 0, 64: 0, …, 71: 0, 8: 1, …}``. A list the kernel would not print
    (``0-2000000000``) is refused without being expanded.
    """
    groups: dict[tuple[int, ...], None] = {}
    for line_no, raw in enumerate(clean_text(text).split("\n"), start=1):
        if not raw.strip():
            continue
        match = _SHARED_RE.search(raw.strip())
        cpus = parse_cpu_list(match.group(2)) if match else None
        if match is None or cpus is None or int(match.group(1)) not in cpus:
            raise CaptureFormatError(
                f"{source}:{line_no}: expected '…/cpuN/cache/index3/shared_cpu_list:LIST' "
                f"holding cpuN, got {raw.strip()[:80]!r}"
            )
        groups[cpus] = None
    out: dict[int, int] = {}
    for llc, cpus in enumerate(sorted(groups, key=lambda g: g[0])):
        for cpu in cpus:
            if cpu in out and out[cpu] != llc:
                raise CaptureFormatError(f"{source}: CPU {cpu} is in two L3 lists")
            out[cpu] = llc
    return out


def cpu_topology(
    records: Sequence[CpuRecord],
    *,
    source: str,
    numa: NumaTopology | None = None,
    llc_of: Mapping[int, int] | None = None,
    model: str | None = None,
    governors: Sequence[str] = (),
    cstates: Sequence[str] = (),
) -> CpuTopology:
    """Records plus optional ``numactl -H`` nodes and ``shared_cpu_list`` LLCs → a topology.

    ``numa`` fills nodes the records leave empty; ``llc_of`` (from
    :func:`parse_shared_cpu_lists`) overrides the records' LLC ids.
    """
    node_of = {cpu: n.node for n in numa.nodes for cpu in n.cpus} if numa else {}
    merged = [
        CpuRecord(
            cpu=r.cpu,
            core=r.core,
            socket=r.socket,
            node=r.node if r.node is not None else node_of.get(r.cpu),
            llc=llc_of.get(r.cpu, r.llc) if llc_of else r.llc,
            online=r.online,
        )
        for r in records
    ]
    return build_topology(merged, source=source, model=model, governors=governors, cstates=cstates)
