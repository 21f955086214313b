"""``--from-captures DIR``: recognise each capture by its content and merge them into one rig.

:func:`detect_kind` names what a text is (file names are never trusted); :func:`merge_captures`
is the pure merge (texts in, :class:`CaptureSet` out) that pyinfra facts can reuse;
:func:`load_captures` reads a folder and calls it.

Joining: GPUs from ``-q`` and ``--query-gpu`` join by PCI bus id, then UUID, then nvidia-smi
index (the row / block order when no index column was captured). ``topo -m`` rows join by
index (``GPU3`` is index 3). lspci devices and kernel link-limit lines join by bus id; when no
other capture carries bus ids they are matched only if they are all the GPUs there are
(nvidia-smi orders GPUs by bus id), and otherwise left out with a warning. Values are taken
field by field from the first capture that knows them (``-q``, then ``--query-gpu``, then
lspci, then the kernel log); nothing missing is invented.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from tuning.captures.errors import CaptureFormatError
from tuning.captures.fabric import (
    CapturedFabric,
    PciPath,
    captured_fabric,
    is_sysfs_paths,
    is_topo_p2p,
    parse_lspci_paths,
    parse_sysfs_paths,
    parse_topo_p2p,
)
from tuning.captures.lspci import (
    LinkLimit,
    LspciDevice,
    has_link_limits,
    is_lspci_tree,
    parse_dmesg_pcie,
    parse_lspci,
    parse_lspci_tree,
)
from tuning.captures.numa import CpuInfo, NumaTopology, host_info, parse_lscpu, parse_numactl
from tuning.captures.query_gpu import looks_like_header, parse_query_gpu
from tuning.captures.records import GpuRecord
from tuning.captures.smi_q import is_xml, parse_smi_q
from tuning.captures.topo import TopoGpu, TopoMatrix, parse_topo
from tuning.captures.values import clean_text
from tuning.core.bus import normalize_bus_id
from tuning.core.limits import MAX_GPU_MEMORY_MIB, MAX_GPU_POWER_W, MAX_TEMP_C, MIN_READING_C
from tuning.core.pcie import LinkStatus, PcieLink, TopologyLink
from tuning.core.rig import GpuInfo, RigSnapshot, Thresholds
from tuning.core.yamlsafe import YamlRefused, read_text_file

_T = TypeVar("_T")

#: Files larger than this are not captures of these commands. Units: bytes.
MAX_CAPTURE_BYTES = 16 * 1024 * 1024


class CaptureKind(StrEnum):
    """What a capture file holds, recognised from its content."""

    QUERY_GPU = "query_gpu"
    TOPO = "topo"
    SMI_Q = "smi_q"
    SMI_Q_XML = "smi_q_xml"
    LSPCI = "lspci"
    LSPCI_TREE = "lspci_tree"
    DMESG_PCIE = "dmesg_pcie"
    NUMACTL = "numactl"
    LSCPU = "lscpu"
    SMI_TABLE = "smi_table"
    TOPO_P2P = "topo_p2p"
    SYSFS_PATHS = "sysfs_paths"


_SMI_Q_RE = re.compile(r"^GPU\s+[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]\s*$", re.M)
_TOPO_RE = re.compile(r"^\s*GPU0(\s|$).*$", re.M)
_LNK_RE = re.compile(r"^\s*Lnk(Sta|Cap):\s.*Speed\s", re.M)
_NUMACTL_RE = re.compile(r"^available:\s+\d+\s+nodes?", re.M)
_SMI_TABLE_RE = re.compile(r"NVIDIA-SMI\s+[\d.]+.*Driver Version")
_ZERO_UUID_RE = re.compile(r"^GPU-0{8}-0{4}-0{4}-0{4}-0{12}$", re.I)


def detect_kind(text: str) -> CaptureKind | None:
    """Name the kind of capture ``text`` is, or ``None`` when it is none rigforge reads."""
    text = clean_text(text)
    if is_xml(text):
        return CaptureKind.SMI_Q_XML
    if "NVSMI LOG" in text or (_SMI_Q_RE.search(text) and "Product Name" in text):
        return CaptureKind.SMI_Q
    if _SMI_TABLE_RE.search(text):
        return CaptureKind.SMI_TABLE
    if is_topo_p2p(text):
        return CaptureKind.TOPO_P2P
    topo = _TOPO_RE.search(text)
    if topo and ("Affinity" in text or "Legend" in text or re.search(r"^GPU0\s+X\b", text, re.M)):
        return CaptureKind.TOPO
    if has_link_limits(text):
        return CaptureKind.DMESG_PCIE
    if is_lspci_tree(text):
        return CaptureKind.LSPCI_TREE
    if _LNK_RE.search(text):
        return CaptureKind.LSPCI
    if _NUMACTL_RE.search(text):
        return CaptureKind.NUMACTL
    if is_sysfs_paths(text):
        return CaptureKind.SYSFS_PATHS
    if re.search(r"^Architecture:", text, re.M) and re.search(r"^\s*CPU\(s\):", text, re.M):
        return CaptureKind.LSCPU
    first = next((line for line in text.split("\n") if line.strip()), "")
    if "," in first or looks_like_header([first]):
        cells = [c.strip() for c in first.split(",")]
        if looks_like_header(cells):
            return CaptureKind.QUERY_GPU
    return None


@dataclass(frozen=True)
class CaptureFile:
    """One input: its name (relative to the folder) and what it was recognised as."""

    name: str
    kind: CaptureKind | None


@dataclass(frozen=True)
class CaptureSet:
    """The merged rig, what each file was taken as, and notes a person should read.

    ``warnings``: files ignored (and why), captures that disagree, devices that could not be
    joined, upstream link limits the GPU's own link does not show.
    """

    snapshot: RigSnapshot
    files: tuple[CaptureFile, ...]
    warnings: tuple[str, ...] = ()
    topology: TopoMatrix | None = None
    link_limits: tuple[LinkLimit, ...] = ()
    fabric: CapturedFabric | None = None


@dataclass
class _Slot:
    """One GPU being assembled from several captures."""

    index: int | None = None
    bus_key: str | None = None
    uuid: str | None = None
    records: list[GpuRecord] = field(default_factory=list)
    lspci: list[LspciDevice] = field(default_factory=list)
    limits: list[LinkLimit] = field(default_factory=list)


@dataclass
class _Parsed:
    records: list[list[GpuRecord]] = field(default_factory=list)  # -q logs first, then CSVs
    topo: TopoMatrix | None = None
    lspci: list[LspciDevice] = field(default_factory=list)
    limits: list[LinkLimit] = field(default_factory=list)
    cpu: CpuInfo | None = None
    numa: NumaTopology | None = None
    tree_gpus: int | None = None
    paths: list[PciPath] = field(default_factory=list)
    p2p: dict[str, dict[tuple[int, int], str]] = field(default_factory=dict)


def _uuid_key(uuid: str | None) -> str | None:
    # Collectors that mask UUIDs print all zeros; those identify nothing.
    if uuid is None or _ZERO_UUID_RE.match(uuid):
        return None
    return uuid.lower()


def merge_captures(texts: Mapping[str, str], name: str = "captures") -> CaptureSet:
    """Merge the captures of ONE machine (``{file name: content}``) into a :class:`CaptureSet`.

    Pure: no I/O. Unrecognised texts and texts their parser rejects are skipped with a
    warning; nothing raises for bad input.
    """
    warnings: list[str] = []
    files: list[CaptureFile] = []
    parsed = _Parsed()
    smi_records: list[list[GpuRecord]] = []
    csv_records: list[list[GpuRecord]] = []
    for file_name in sorted(texts):
        text = texts[file_name]
        kind = detect_kind(text)
        files.append(CaptureFile(file_name, kind))
        if kind is None:
            warnings.append(f"{file_name}: not a capture rigforge reads; ignored")
            continue
        try:
            _parse_into(kind, text, parsed, smi_records, csv_records, file_name, warnings)
        except CaptureFormatError as error:
            warnings.append(f"{file_name}: {error}; ignored")
    parsed.records = smi_records + csv_records
    gpus, topology = _merge_gpus(parsed, warnings)
    snapshot = RigSnapshot(
        name=name,
        gpus=gpus,
        topology=topology,
        host=host_info(parsed.cpu, parsed.numa),
    )
    fabric = captured_fabric(gpus, parsed.paths, parsed.p2p) if parsed.paths or parsed.p2p else None
    return CaptureSet(
        snapshot=snapshot,
        files=tuple(files),
        warnings=tuple(warnings),
        topology=parsed.topo,
        link_limits=tuple(parsed.limits),
        fabric=fabric,
    )


def _parse_into(
    kind: CaptureKind,
    text: str,
    parsed: _Parsed,
    smi_records: list[list[GpuRecord]],
    csv_records: list[list[GpuRecord]],
    file_name: str,
    warnings: list[str],
) -> None:
    if kind in (CaptureKind.SMI_Q, CaptureKind.SMI_Q_XML):
        smi_records.append(list(parse_smi_q(text)))
    elif kind is CaptureKind.QUERY_GPU:
        csv_records.append(list(parse_query_gpu(text)))
    elif kind is CaptureKind.TOPO:
        if parsed.topo is not None:
            warnings.append(f"{file_name}: a second topo -m capture; the first one is used")
        else:
            parsed.topo = parse_topo(text)
    elif kind is CaptureKind.LSPCI:
        parsed.lspci.extend(parse_lspci(text))
    elif kind is CaptureKind.LSPCI_TREE:
        parsed.tree_gpus = parse_lspci_tree(text).nvidia_display_devices
        parsed.paths.extend(parse_lspci_paths(text))
    elif kind is CaptureKind.SYSFS_PATHS:
        parsed.paths.extend(parse_sysfs_paths(text))
    elif kind is CaptureKind.TOPO_P2P:
        # the file does not say which of r/w/n/a/p it answers: numbered in file order
        parsed.p2p[f"matrix {len(parsed.p2p) + 1} ({file_name})"] = parse_topo_p2p(text)
    elif kind is CaptureKind.DMESG_PCIE:
        parsed.limits.extend(parse_dmesg_pcie(text))
    elif kind is CaptureKind.NUMACTL:
        parsed.numa = parsed.numa or parse_numactl(text)
    elif kind is CaptureKind.LSCPU:
        parsed.cpu = parsed.cpu or parse_lscpu(text)
    elif kind is CaptureKind.SMI_TABLE:
        warnings.append(
            f"{file_name}: the default nvidia-smi table is not read; capture "
            "'nvidia-smi -q' or '--query-gpu=... --format=csv' instead"
        )


def _find_slot(slots: list[_Slot], record: GpuRecord) -> _Slot | None:
    bus, uuid = record.bus_key, _uuid_key(record.uuid)
    index = record.index if record.index is not None else record.position
    for slot in slots:
        if bus and slot.bus_key == bus:
            return slot
    for slot in slots:
        if uuid and slot.uuid == uuid:
            return slot
    for slot in slots:
        conflict = (bus and slot.bus_key and slot.bus_key != bus) or (
            uuid and slot.uuid and slot.uuid != uuid
        )
        if slot.index == index and not conflict:
            return slot
    return None


def _merge_gpus(
    parsed: _Parsed, warnings: list[str]
) -> tuple[tuple[GpuInfo, ...], tuple[TopologyLink, ...]]:
    slots: list[_Slot] = []
    for capture in parsed.records:
        for record in capture:
            slot = _find_slot(slots, record)
            if slot is None:
                index = record.index if record.index is not None else record.position
                slot = _Slot(index=index)
                slots.append(slot)
            slot.records.append(record)
            slot.bus_key = slot.bus_key or record.bus_key
            slot.uuid = slot.uuid or _uuid_key(record.uuid)

    topo_gpus = {g.index: g for g in parsed.topo.gpus} if parsed.topo else {}
    if parsed.topo and slots and len(topo_gpus) != len(slots):
        warnings.append(
            f"topo -m lists {len(topo_gpus)} GPUs but nvidia-smi lists {len(slots)}; "
            "are these captures from the same machine?"
        )
    for index in sorted(topo_gpus):
        if not any(slot.index == index for slot in slots):
            slots.append(_Slot(index=index))

    _attach_by_bus(
        slots,
        [d for d in parsed.lspci if d.bus_id is not None and d.is_nvidia_gpu],
        "lspci",
        warnings,
        lambda slot, item: slot.lspci.append(item),
        lambda item: item.bus_id or "",
    )
    anonymous = [d for d in parsed.lspci if d.bus_id is None]
    for device in anonymous:
        if len(slots) == 0:
            slots.append(_Slot(index=0))
        if len(slots) == 1:
            slots[0].lspci.append(device)
        else:
            warnings.append(
                "lspci link lines without a device header cannot be matched to one of "
                f"{len(slots)} GPUs; capture 'lspci -vv -s BUS' with its header line"
            )
    _attach_by_bus(
        slots,
        [limit for limit in parsed.limits if limit.is_nvidia_gpu is not False],
        "kernel log",
        warnings,
        lambda slot, item: slot.limits.append(item),
        lambda item: item.bus_id,
    )

    node_cpus = _node_cpus(parsed)
    ordered = sorted(slots, key=lambda s: (s.index is None, s.index or 0, s.bus_key or ""))
    used = {s.index for s in ordered if s.index is not None}
    next_free = 0
    gpus = []
    for slot in ordered:
        if slot.index is None:
            while next_free in used:
                next_free += 1
            slot.index = next_free
            used.add(next_free)
        gpus.append(_gpu_info(slot, topo_gpus.get(slot.index), node_cpus, warnings))
    topology = parsed.topo.links if parsed.topo else ()
    return tuple(gpus), topology


def _attach_by_bus(
    slots: list[_Slot],
    items: Sequence[_T],
    source: str,
    warnings: list[str],
    attach: Callable[[_Slot, _T], None],
    bus_of: Callable[[_T], str],
) -> None:
    if not items:
        return
    by_bus = {s.bus_key: s for s in slots if s.bus_key}
    unmatched = []
    for item in items:
        slot = by_bus.get(normalize_bus_id(bus_of(item)))
        if slot is not None:
            attach(slot, item)
        else:
            unmatched.append(item)
    if not unmatched:
        return
    bare = [s for s in slots if not s.bus_key]
    if not slots:
        # Nothing else describes the GPUs: these devices are the GPUs, in bus order.
        for position, item in enumerate(sorted(unmatched, key=bus_of)):
            slot = _Slot(index=position, bus_key=normalize_bus_id(bus_of(item)))
            attach(slot, item)
            slots.append(slot)
    elif by_bus == {} and len(bare) == len(unmatched):
        # nvidia-smi numbers GPUs in PCI bus order, so a complete set maps by order.
        for slot, item in zip(
            sorted(bare, key=lambda s: s.index or 0), sorted(unmatched, key=bus_of), strict=True
        ):
            slot.bus_key = normalize_bus_id(bus_of(item))
            attach(slot, item)
    else:
        for item in unmatched:
            warnings.append(
                f"{source}: NVIDIA device {bus_of(item)} matches no GPU in the nvidia-smi "
                "captures (no bus ids there, or the GPU is missing from nvidia-smi)"
            )


def _node_cpus(parsed: _Parsed) -> dict[int, tuple[int, ...]]:
    if parsed.numa is not None:
        return {k: v for k, v in parsed.numa.node_cpus().items() if v}
    if parsed.cpu is not None:
        return {k: v for k, v in parsed.cpu.node_cpus if v}
    return {}


def _first(*values: _T | None) -> _T | None:
    for value in values:
        if value is not None:
            return value
    return None


#: Ranges outside which a captured reading is a corrupted or edited capture, not a GPU:
#: (field, lowest, highest, unit). Bounds from :mod:`tuning.core.limits`.
_PLAUSIBLE: tuple[tuple[str, float, float, str], ...] = (
    ("memory_total_mib", 1, MAX_GPU_MEMORY_MIB, "MiB"),
    ("power_min_w", 1, MAX_GPU_POWER_W, "W"),
    ("power_max_w", 1, MAX_GPU_POWER_W, "W"),
    ("power_default_w", 1, MAX_GPU_POWER_W, "W"),
    ("power_limit_w", 1, MAX_GPU_POWER_W, "W"),
    ("power_draw_w", 0, MAX_GPU_POWER_W, "W"),
    ("temp_c", MIN_READING_C, MAX_TEMP_C, "°C"),
)


def _plain(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"


def _without_impossible_values(info: GpuInfo, warnings: list[str]) -> GpuInfo:
    """``info`` with physically impossible readings (1e20 MiB, −100 W, −273 °C) set to
    unknown, each noted in ``warnings``: an unknown is honest, an impossible number is not."""
    changes: dict[str, Any] = {}
    for name, low, high, unit in _PLAUSIBLE:
        value = getattr(info, name)
        if value is not None and not low <= value <= high:
            warnings.append(
                f"GPU {info.index} ({info.pci_bus_id or info.uuid or '?'}): {name} "
                f"{_plain(value)} {unit} is outside what a GPU can report ({_plain(low)}–"
                f"{_plain(high)} {unit}); taken as unknown — is the capture damaged or edited?"
            )
            changes[name] = None
    return replace(info, **changes) if changes else info


def _gpu_info(
    slot: _Slot,
    topo_gpu: TopoGpu | None,
    node_cpus: dict[int, tuple[int, ...]],
    warnings: list[str],
) -> GpuInfo:
    records = slot.records
    assert slot.index is not None  # assigned by the caller

    def pick(attribute: str) -> Any:
        return _first(*(getattr(r, attribute) for r in records))

    links = [r.pcie for r in records]
    links += [d.pcie for d in slot.lspci]
    links += [limit.pcie for limit in slot.limits]
    reading = next((r for r in records if r.pcie_gen_current is not None), None)
    pcie = PcieLink(
        gen_current=_first(*(link.gen_current for link in links)),
        gen_max=_first(*(link.gen_max for link in links)),
        width_current=_first(*(link.width_current for link in links)),
        width_max=_first(*(link.width_max for link in links)),
        under_load=reading.under_load if reading is not None else None,
    )
    thresholds = Thresholds(
        slowdown_c=_first(*(r.thresholds.slowdown_c for r in records)),
        shutdown_c=_first(*(r.thresholds.shutdown_c for r in records)),
        max_operating_c=_first(*(r.thresholds.max_operating_c for r in records)),
        target_c=_first(*(r.thresholds.target_c for r in records)),
    )
    numa_node = _first(topo_gpu.numa_node if topo_gpu else None, *(d.numa_node for d in slot.lspci))
    cpu_list = topo_gpu.cpu_list if topo_gpu else None
    if cpu_list is None and numa_node is not None:
        cpu_list = node_cpus.get(numa_node)
    bus_id = pick("pci_bus_id") or _first(
        *(d.bus_id for d in slot.lspci), *(limit.bus_id for limit in slot.limits)
    )
    info = GpuInfo(
        index=slot.index,
        uuid=pick("uuid"),
        name=pick("name") or _first(*(d.product_name for d in slot.lspci)),
        pci_bus_id=bus_id,
        memory_total_mib=pick("memory_total_mib"),
        power_min_w=pick("power_min_w"),
        power_max_w=pick("power_max_w"),
        power_default_w=pick("power_default_w"),
        power_limit_w=pick("power_limit_w"),
        power_draw_w=pick("power_draw_w"),
        temp_c=pick("temp_c"),
        thresholds=thresholds,
        pcie=pcie,
        numa_node=numa_node,
        cpu_list=cpu_list,
        slot=_first(*(d.slot_number for d in slot.lspci)),
        persistence_mode=pick("persistence_mode"),
        utilization_pct=pick("utilization_pct"),
        pstate=pick("pstate"),
    )
    info = _without_impossible_values(info, warnings)
    for limit in slot.limits:
        if info.pcie.status is not LinkStatus.DEGRADED and limit.pcie.degraded:
            warnings.append(
                f"GPU {slot.index} ({bus_id}): the kernel reports its path limited to "
                f"gen {limit.limited_gen} x{limit.limited_width} at {limit.limiting_port} "
                f"(capable of gen {limit.capable_gen} x{limit.capable_width}) although its "
                "own link looks fine; check the switch or riser upstream"
            )
            info = replace(info, pcie=limit.pcie)
    return info


def load_captures(directory: str | Path) -> CaptureSet:
    """Read every regular file under ``directory`` (hidden files skipped) and merge them.

    Raises :class:`CaptureFormatError` when ``directory`` is not a folder; unreadable, binary
    or oversized files become warnings.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CaptureFormatError(f"--from-captures {directory!s}: not a folder")
    texts: dict[str, str] = {}
    skipped: list[str] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_dir() and not path.is_symlink():
            continue
        if path.lstat().st_size > MAX_CAPTURE_BYTES:
            skipped.append(f"{relative}: larger than {MAX_CAPTURE_BYTES} bytes; ignored")
            continue
        try:
            # Regular files only (a FIFO would block, /proc/self/mem cannot be read), strict
            # UTF-8, bounded: the one safe reader.
            texts[relative] = read_text_file(path, "capture", allow_control=True)
        except YamlRefused as refused:
            skipped.append(f"{relative}: {refused.reason}; ignored")
    result = merge_captures(texts, name=root.resolve().name)
    return replace(
        result,
        files=result.files + tuple(CaptureFile(s.partition(":")[0], None) for s in skipped),
        warnings=tuple(skipped) + result.warnings,
    )
