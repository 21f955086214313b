"""``nvidia-smi topo -m`` → GPU×GPU links, NIC links and per-GPU CPU/NUMA affinity.

Handles every form seen in the wild: TAB-separated (what nvidia-smi writes), padded with
spaces (copied from a terminal), ANSI underline escapes on the header (``ESC[4m``…``ESC[0m``,
emitted even without a tty), NIC rows and the NIC legend, headers with or without the
``GPU NUMA ID`` column, old ``NUMA Affinity``-only headers, headers trimmed to ``NUMA``, empty
affinity cells (Windows) and strided CPU lists (``0-55,112-167``, ``6,14,22,30``).

nvidia-smi writes one extra empty cell after ``NUMA Affinity`` in its TAB form
(``0-23\\t0\\t\\tN/A``); the parser drops surplus empty cells before reading affinity columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuning.captures.errors import CaptureFormatError
from tuning.captures.values import clean_text, integer, parse_cpu_list
from tuning.core.pcie import TopologyLink

#: Cells a topo matrix may hold: self, NVLink bonds and the PCIe path classes. ``SOC`` is the
#: pre-2017 spelling of ``SYS``; ``PSB`` appears on some old drivers for PXB.
_LINK_RE = re.compile(r"^(X|NV\d+|PIX|PXB|PHB|NODE|SYS|SOC|PSB|N/A)$")
_AFFINITY_RE = re.compile(r"CPU Affinity|GPU NUMA ID|NUMA Affinity|NUMA")
_GPU_RE = re.compile(r"^GPU(\d+)$")
_NIC_LEGEND_RE = re.compile(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$")


@dataclass(frozen=True)
class TopoGpu:
    """One GPU row's affinity cells. ``None`` where the cell was empty, ``N/A`` or absent.

    ``numa_affinity``: the NUMA node(s) the GPU is local to; ``gpu_numa_id``: the NUMA node
    of the GPU's own memory (only set on coherent platforms such as Grace Hopper).
    """

    index: int
    cpu_list: tuple[int, ...] | None = None
    numa_affinity: tuple[int, ...] | None = None
    gpu_numa_id: int | None = None

    @property
    def numa_node(self) -> int | None:
        """The single NUMA node the GPU is local to, ``None`` when unknown or several."""
        if self.numa_affinity is not None and len(self.numa_affinity) == 1:
            return self.numa_affinity[0]
        return None


@dataclass(frozen=True)
class NicLink:
    """How GPU ``gpu`` reaches NIC ``nic`` (``NIC0`` or an old-style ``mlx5_0`` column)."""

    gpu: int
    nic: str
    link: str


@dataclass(frozen=True)
class TopoMatrix:
    """A parsed ``topo -m``: device order, raw cells, GPU links, NIC links, affinity.

    ``cells[i][j]`` is the link from ``devices[i]`` to ``devices[j]`` (``None`` if the row
    was short). ``links`` holds each unordered GPU pair once (``a < b``), in nvidia-smi names.
    ``nics`` maps NIC column names to device names from the NIC legend (``NIC0`` → ``mlx5_0``).
    """

    devices: tuple[str, ...]
    cells: tuple[tuple[str | None, ...], ...]
    gpus: tuple[TopoGpu, ...]
    links: tuple[TopologyLink, ...]
    nic_links: tuple[NicLink, ...]
    nics: tuple[tuple[str, str], ...] = ()
    affinity_columns: tuple[str, ...] = ()

    def cell(self, row: str, column: str) -> str | None:
        """The raw cell from device ``row`` to device ``column`` (names as in the header)."""
        i, j = self.devices.index(row), self.devices.index(column)
        return self.cells[i][j]

    def is_symmetric(self) -> bool:
        """True when every present cell equals its mirror (as nvidia-smi always prints)."""
        n = len(self.devices)
        return all(
            self.cells[i][j] is None
            or self.cells[j][i] is None
            or self.cells[i][j] == self.cells[j][i]
            for i in range(n)
            for j in range(n)
        )


def _split_row(line: str) -> list[str]:
    if "\t" in line:
        cells = [cell.strip() for cell in line.split("\t")]
        # nvidia-smi starts the header with a TAB; a row starts with its label.
        if cells and cells[0] == "":
            cells = cells[1:]
        return cells
    return line.split()


def _header_index(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        tokens = line.replace("\t", " ").split()
        if (
            tokens
            and tokens[0] == "GPU0"
            and (
                _AFFINITY_RE.search(line)
                or (i + 1 < len(lines) and lines[i + 1].split()[:1] == ["GPU0"])
            )
        ):
            return i
    raise CaptureFormatError(
        "no 'nvidia-smi topo -m' header (a line starting with GPU0) found; capture the "
        "output of 'nvidia-smi topo -m' unchanged"
    )


def parse_topo(text: str) -> TopoMatrix:
    """Parse ``nvidia-smi topo -m`` output (any of the forms in the module docstring).

    Raises :class:`CaptureFormatError` when there is no matrix header or no GPU row.
    """
    lines = clean_text(text).split("\n")
    start = _header_index(lines)
    header = lines[start]
    first_affinity = _AFFINITY_RE.search(header)
    device_part = header[: first_affinity.start()] if first_affinity else header
    devices = tuple(device_part.replace("\t", " ").split())
    affinity_columns = (
        tuple(m.group(0) for m in _AFFINITY_RE.finditer(header[first_affinity.start() :]))
        if first_affinity
        else ()
    )

    rows: dict[str, list[str]] = {}
    affinity: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.strip().startswith("Legend"):
            break
        if not line.strip():
            continue
        cells = _split_row(line)
        if not cells or cells[0] not in devices:
            continue
        links, rest = cells[1 : 1 + len(devices)], cells[1 + len(devices) :]
        if any(c and not _LINK_RE.match(c) for c in links) and "\t" in line:
            # A TAB form whose padding got mixed with spaces: fall back to whitespace.
            cells = line.split()
            links, rest = cells[1 : 1 + len(devices)], cells[1 + len(devices) :]
        bad = [c for c in links if c and not _LINK_RE.match(c)]
        if bad:
            raise CaptureFormatError(
                f"topo row {cells[0]!r} has cells that are not link names: {bad!r}"
            )
        rows[cells[0]] = links
        affinity[cells[0]] = rest

    gpu_names = [d for d in devices if _GPU_RE.match(d) and d in rows]
    if not gpu_names:
        raise CaptureFormatError("the topo matrix has no GPU rows")

    matrix = tuple(
        tuple(
            (rows[d][j] or None) if d in rows and j < len(rows[d]) else None
            for j in range(len(devices))
        )
        for d in devices
    )
    gpus = tuple(_gpu_affinity(name, affinity[name], affinity_columns) for name in gpu_names)

    index_of = {name: int(_GPU_RE.match(name).group(1)) for name in gpu_names}  # type: ignore[union-attr]
    pairs: list[TopologyLink] = []
    nic_links: list[NicLink] = []
    for i, row_name in enumerate(devices):
        if row_name not in index_of:
            continue
        for j, col_name in enumerate(devices):
            value = matrix[i][j]
            if value is None or value == "X":
                continue
            if col_name in index_of and index_of[row_name] < index_of[col_name]:
                pairs.append(TopologyLink(index_of[row_name], index_of[col_name], value))
            elif not _GPU_RE.match(col_name):
                nic_links.append(NicLink(index_of[row_name], col_name, value))

    nics = tuple((m.group(1), m.group(2)) for line in lines if (m := _NIC_LEGEND_RE.match(line)))
    return TopoMatrix(
        devices=devices,
        cells=matrix,
        gpus=gpus,
        links=tuple(pairs),
        nic_links=tuple(nic_links),
        nics=nics,
        affinity_columns=affinity_columns,
    )


def _gpu_affinity(name: str, cells: list[str], columns: tuple[str, ...]) -> TopoGpu:
    cells = list(cells)
    # Surplus cells are the empty spacer nvidia-smi writes after NUMA Affinity.
    while len(cells) > len(columns):
        empties = [k for k in range(1, len(cells)) if cells[k] == ""]
        if not empties:
            break
        del cells[empties[-1]]
    if len(cells) < len(columns):
        # Space-padded copies lose empty cells; what is left is the right-hand columns.
        cells = [""] * (len(columns) - len(cells)) + cells
    values = dict(zip(columns, cells, strict=False))
    numa_text = values.get("NUMA Affinity", values.get("NUMA"))
    return TopoGpu(
        index=int(_GPU_RE.match(name).group(1)),  # type: ignore[union-attr]
        cpu_list=parse_cpu_list(values.get("CPU Affinity")),
        numa_affinity=parse_cpu_list(numa_text),
        gpu_numa_id=integer(values.get("GPU NUMA ID")),
    )
