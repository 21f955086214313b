"""The fabric as far as captured files tell it: where each GPU hangs, and who may peer.

* :func:`parse_lspci_paths` — ``lspci -t``/``-tv``: every device with its bus id, the bridges
  from its root port down to it, and (``-tv``) its description;
* :func:`parse_sysfs_paths` — device paths under ``/sys/devices/pci…`` as ``readlink -f
  /sys/bus/pci/devices/…``, ``ls -l /sys/class/drm`` or any tool prints them;
* :func:`parse_topo_p2p` — ``nvidia-smi topo -p2p r|w|n|a|p`` matrices (``OK``, ``CNS``
  chipset not supported, ``GNS`` GPU not supported, ``TNS``, ``NS``, ``DR``, ``U``).

:func:`captured_fabric` puts them together for the GPUs of a capture set. Below a root port,
bridges come in pairs — a switch's upstream port, then the downstream port the next device
hangs off — so the switches a GPU sits behind are the upstream ports on its path. Lane counts,
root-port widths, host memory and the inter-socket link are not in these files: they stay
unknown (``None``), never filled in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuning.captures.values import clean_text
from tuning.core.bus import normalize_bus_id
from tuning.core.rig import GpuInfo

_ROOT_RE = re.compile(r"\[(?P<dom>[0-9a-fA-F]{4}):(?P<bus>[0-9a-fA-F]{2})\]")
_DEV_RE = re.compile(
    r"(?P<dev>[0-9a-fA-F]{2}\.[0-7])(?:-\[(?P<sec>[0-9a-fA-F]{2})(?:-[0-9a-fA-F]{2})?\])?"
)
_LEAF_DESC_RE = re.compile(r"[0-9a-fA-F]{2}\.[0-7]\s{2,}")
_SYSFS_RE = re.compile(
    r"pci(?P<dom>[0-9a-fA-F]{4}):(?P<bus>[0-9a-fA-F]{2})"
    r"(?P<chain>(?:/[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])+)"
)
_P2P_CODES = frozenset({"OK", "CNS", "GNS", "TNS", "NS", "DR", "U"})
#: What each ``topo -p2p`` status means (nvidia-smi's legend).
P2P_STATUS: dict[str, str] = {
    "OK": "Status Ok",
    "CNS": "Chipset not supported",
    "GNS": "GPU not supported",
    "TNS": "Topology not supported",
    "NS": "Not supported",
    "DR": "Disabled by regkey",
    "U": "Unknown",
}


@dataclass(frozen=True)
class PciPath:
    """One device and the bridges above it: ``bridges[0]`` is its root port (empty for a
    device right on the root bus). Bus ids as ``dddd:bb:dd.f``."""

    bus_id: str
    root_bus: str
    bridges: tuple[str, ...]
    description: str | None = None

    @property
    def root_port(self) -> str | None:
        return self.bridges[0] if self.bridges else None

    @property
    def switches(self) -> tuple[str, ...]:
        """Upstream ports of the switches between the root port and the device."""
        return self.bridges[1::2]


def is_topo_p2p(text: str) -> bool:
    """True for an ``nvidia-smi topo -p2p …`` matrix (status cells, not link names)."""
    text = clean_text(text)
    if "Chipset not supported" in text or "Status Ok" in text:
        return True
    rows = [line.split() for line in text.split("\n") if line.strip().startswith("GPU")]
    cells = [c for row in rows for c in row[1:] if not c.startswith("GPU") and c != "X"]
    return bool(rows) and bool(cells) and all(c in _P2P_CODES for c in cells)


def parse_topo_p2p(text: str) -> dict[tuple[int, int], str]:
    """``{(row GPU, column GPU): status}`` for every off-diagonal cell of the matrix."""
    out: dict[tuple[int, int], str] = {}
    header: list[int] = []
    for line in clean_text(text).split("\n"):
        cells = line.split()
        if not cells:
            continue
        if all(re.fullmatch(r"GPU\d+", c) for c in cells):
            header = [int(c[3:]) for c in cells]
            continue
        if header and re.fullmatch(r"GPU\d+", cells[0]) and len(cells) - 1 == len(header):
            row = int(cells[0][3:])
            for col, status in zip(header, cells[1:], strict=True):
                if status != "X" and status in _P2P_CODES:
                    out[(row, col)] = status
    return out


def is_sysfs_paths(text: str) -> bool:
    """True when at least half the text's lines show a device path under ``/sys/devices/pci…``
    (a document that merely mentions one is not a capture of them)."""
    lines = [line for line in clean_text(text).split("\n") if line.strip()]
    hits = sum(1 for line in lines if "devices/pci" in line and _SYSFS_RE.search(line))
    return bool(lines) and hits * 2 >= len(lines)


def parse_sysfs_paths(text: str) -> tuple[PciPath, ...]:
    """Every ``…/devices/pciDDDD:BB/DDDD:BB:DD.F/…`` path, one per end device (deduplicated)."""
    seen: dict[str, PciPath] = {}
    for match in _SYSFS_RE.finditer(clean_text(text)):
        chain = [normalize_bus_id(p) for p in match.group("chain").strip("/").split("/")]
        root_bus = f"{match.group('dom')}:{match.group('bus')}".lower()
        seen.setdefault(chain[-1], PciPath(chain[-1], root_bus, tuple(chain[:-1])))
    return tuple(seen.values())


def parse_lspci_paths(text: str) -> tuple[PciPath, ...]:
    """Every device of an ``lspci -t``/``-tv`` drawing with the bridges above it.

    lspci draws a device's children to its right; a bridge shows its secondary bus as
    ``-[bb]`` or ``-[bb-ss]``. Columns give the nesting: a device's parent is the nearest
    bridge left of it on a line at or above it.
    """
    devices: list[PciPath] = []
    # stack of (column, bus the children sit on, bridge bus id or None for a root)
    stack: list[tuple[int, str, str | None]] = []
    for raw in clean_text(text).split("\n"):
        if not raw.strip():
            continue
        leaf = _LEAF_DESC_RE.search(raw)
        drawing = raw[: leaf.start() + 4] if leaf else raw
        description = raw[leaf.end() :].strip() if leaf else None
        tokens: list[tuple[int, str, re.Match[str]]] = [
            (m.start(), "root", m) for m in _ROOT_RE.finditer(drawing)
        ]
        tokens += [
            (m.start(), "dev", m)
            for m in _DEV_RE.finditer(drawing)
            if not any(r.start() <= m.start() < r.end() for r in _ROOT_RE.finditer(drawing))
        ]
        for column, kind, match in sorted(tokens, key=lambda t: t[0]):
            while stack and stack[-1][0] >= column:
                stack.pop()
            if kind == "root":
                bus = f"{match.group('dom')}:{match.group('bus')}".lower()
                stack.append((column, bus, None))
                continue
            if not stack:
                continue
            parent_bus = stack[-1][1]
            domain = parent_bus.split(":")[0]
            bus_id = normalize_bus_id(f"{parent_bus}:{match.group('dev')}")
            bridges = tuple(b for _, _, b in stack if b is not None)
            root_bus = next(b for _, b, br in stack if br is None)
            secondary = match.group("sec")
            if secondary is not None:
                stack.append((column, f"{domain}:{secondary.lower()}", bus_id))
            else:
                is_last = leaf is not None and match.start() == leaf.start()
                devices.append(PciPath(bus_id, root_bus, bridges, description if is_last else None))
    return tuple(devices)


@dataclass(frozen=True)
class CapturedGpuPlace:
    """Where one GPU hangs, as far as the captures say; ``None`` where they do not."""

    index: int
    bus_id: str | None
    root_bus: str | None
    root_port: str | None
    switches: tuple[str, ...] | None
    gen: int | None
    width: int | None
    max_gen: int | None
    max_width: int | None


@dataclass(frozen=True)
class CapturedFabric:
    """The fabric the captures show. ``p2p``: ``{op: {(a, b): status}}`` per ``topo -p2p``
    matrix given (op ``r``, ``w``, ``rw``, ``n``, ``a``, ``p`` or ``?`` when not known)."""

    gpus: tuple[CapturedGpuPlace, ...]
    p2p: dict[str, dict[tuple[int, int], str]]

    def to_json(self) -> dict[str, Any]:
        """The ``fabric`` object of ``inspect --from-captures --json``."""
        return {
            "described": False,
            "source": "captures",
            "gpus": [
                {
                    "index": g.index,
                    "bus_id": g.bus_id,
                    "root_bus": g.root_bus,
                    "root_port": g.root_port,
                    "switches": list(g.switches) if g.switches is not None else None,
                    "gen": g.gen,
                    "width": g.width,
                    "max_gen": g.max_gen,
                    "max_width": g.max_width,
                }
                for g in self.gpus
            ],
            "p2p": [
                {"op": op, "a": a, "b": b, "status": status}
                for op, cells in self.p2p.items()
                for (a, b), status in sorted(cells.items())
            ],
            "lanes": None,
        }

    def tree_lines(self) -> list[str]:
        """root bus → root port → switch → GPU, then the P2P statuses that are not OK."""
        lines: list[str] = []
        placed = [g for g in self.gpus if g.root_bus is not None]
        for root in sorted({g.root_bus for g in placed if g.root_bus}):
            lines.append(f"pci{root}")
            for g in (g for g in placed if g.root_bus == root):
                depth = 1
                if g.root_port:
                    lines.append(f"{'  ' * depth}root port {g.root_port}")
                    depth += 1
                for switch in g.switches or ():
                    lines.append(f"{'  ' * depth}switch (upstream port {switch})")
                    depth += 1
                link = f"gen {g.gen or '?'} x{g.width or '?'}"
                lines.append(f"{'  ' * depth}GPU {g.index} ({g.bus_id}): {link}")
        for g in self.gpus:
            if g.root_bus is None:
                lines.append(f"GPU {g.index} ({g.bus_id or '?'}): not in any captured tree")
        for op, cells in self.p2p.items():
            bad = sorted((a, b, s) for (a, b), s in cells.items() if s != "OK")
            if bad:
                shown = ", ".join(f"{a}→{b} {s}" for a, b, s in bad)
                lines.append(f"P2P ({op}): {shown} ({P2P_STATUS[bad[0][2]]}, …)")
            else:
                lines.append(f"P2P ({op}): every pair OK")
        lines.append("Lanes: unknown (the captures do not say how many lanes the CPU has)")
        return lines


def captured_fabric(
    gpus: Sequence[GpuInfo],
    paths: Sequence[PciPath],
    p2p: dict[str, dict[tuple[int, int], str]],
) -> CapturedFabric:
    """Place the capture set's GPUs on the captured paths (joined by bus id).

    With no GPU bus ids known, NVIDIA display functions of an ``lspci -tv`` drawing (``.0``
    functions named NVIDIA, not audio/USB) stand for the GPUs in bus order, as nvidia-smi
    orders them.
    """
    by_bus = {p.bus_id: p for p in paths}
    places: list[CapturedGpuPlace] = []
    if gpus and all(g.pci_bus_id for g in gpus):
        entries = [(g, by_bus.get(normalize_bus_id(g.pci_bus_id or ""))) for g in gpus]
    else:
        nvidia = sorted(
            (p for p in paths if p.description and _is_nvidia_gpu(p.description)),
            key=lambda p: p.bus_id,
        )
        entries = [(gpus[i] if i < len(gpus) else None, path) for i, path in enumerate(nvidia)]  # type: ignore[misc]
    for i, (gpu, path) in enumerate(entries):
        link = gpu.pcie if gpu is not None else None
        places.append(
            CapturedGpuPlace(
                index=gpu.index if gpu is not None else i,
                bus_id=(gpu.pci_bus_id if gpu is not None and gpu.pci_bus_id else None)
                or (path.bus_id if path else None),
                root_bus=path.root_bus if path else None,
                root_port=path.root_port if path else None,
                switches=path.switches if path else None,
                gen=link.gen_current if link else None,
                width=link.width_current if link else None,
                max_gen=link.gen_max if link else None,
                max_width=link.width_max if link else None,
            )
        )
    return CapturedFabric(gpus=tuple(places), p2p=p2p)


def _is_nvidia_gpu(description: str) -> bool:
    if "NVIDIA" not in description:
        return False
    return not any(word in description for word in ("Audio", "USB", "UCSI"))
