"""``lspci -vv``/``-vvv`` link state, ``lspci -tv`` trees, and the kernel's bandwidth lines.

* ``parse_lspci``: device blocks (``01:00.0 VGA compatible controller: NVIDIA …``) or bare
  ``grep LnkCap|LnkSta`` lines (one device without a bus id) → :class:`LspciDevice` with the
  link capability vs status (speed GT/s → gen: 2.5→1, 5→2, 8→3, 16→4, 32→5, 64→6; width),
  the ``(downgraded)`` markers lspci prints, ASPM from ``LnkCtl``, NUMA node and slot.
* ``parse_lspci_tree``: recognises ``lspci -tv`` and counts domains and NVIDIA devices.
* ``parse_dmesg_pcie``: ``… available PCIe bandwidth, limited by 8.0 GT/s PCIe x4 link at
  0000:00:03.1 (capable of … 32.0 GT/s PCIe x16 link)`` → :class:`LinkLimit` records
  (``pcie_report_downtraining()`` in the kernel's drivers/pci/pci.c prints them at probe).

lspci cannot know whether the GPU was busy, so its links carry ``under_load=None``: a width
below capability is degraded, a speed below capability is "recheck under load".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuning.captures.values import clean_text, gts_to_gen
from tuning.core.bus import normalize_bus_id
from tuning.core.pcie import PcieLink

#: A device header line, optionally behind a label a grep or a script added (``Card: 01:00.0
#: VGA compatible controller: …``, ``lspci.txt:01:00.0 …`` from ``grep -H``): the label has no
#: whitespace-free ``xx:yy.z`` of its own and ends in ``:`` plus whitespace or right before
#: the bus id.
_DEVICE_RE = re.compile(
    r"^(?:[A-Za-z][\w .-]*:\s+|[\w.-]+\.(?:txt|log|out):)?"
    r"(?P<bus>(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+"
    r"(?P<cls>[^:]+):\s*(?P<desc>.*)$"
)
_LNKCAP_RE = re.compile(
    r"LnkCap:.*?Speed\s+(?P<speed>[\d.]+)GT/s.*?Width\s+x(?P<width>\d+)(?:,\s*ASPM\s+(?P<aspm>[^,]+))?"
)
_LNKSTA_RE = re.compile(
    r"LnkSta:.*?Speed\s+(?P<speed>[\d.]+)GT/s(?P<sdown>\s*\(downgraded\))?"
    r".*?Width\s+x(?P<width>\d+)(?P<wdown>\s*\(downgraded\))?"
)
_LNKCTL_ASPM_RE = re.compile(r"LnkCtl:\s*ASPM\s+(?P<aspm>[^;]+);")
_TREE_ROOT_RE = re.compile(r"\[([0-9a-fA-F]{4}:[0-9a-fA-F]{2})\]")
_DMESG_LIMIT_RE = re.compile(
    r"(?P<bus>[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]):\s+"
    r"(?P<avail>[\d.]+)\s+Gb/s available PCIe bandwidth, limited by\s+"
    r"(?P<lspeed>[\d.]+)\s+GT/s PCIe x(?P<lwidth>\d+) link at\s+(?P<port>\S+)\s+"
    r"\(capable of\s+(?P<cap>[\d.]+)\s+Gb/s with\s+(?P<cspeed>[\d.]+)\s+GT/s PCIe "
    r"x(?P<cwidth>\d+) link\)"
)
_DMESG_CLASS_RE = re.compile(
    r"(?P<bus>[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]):\s+"
    r"\[(?P<vendor>[0-9a-fA-F]{4}):[0-9a-fA-F]{4}\]\s+type\s+\S+\s+class\s+0x(?P<cls>[0-9a-fA-F]{6})"
)

NVIDIA_VENDOR_ID = "10de"


@dataclass(frozen=True)
class LspciDevice:
    """One device's PCIe link as lspci printed it. ``None`` where the capture lacks it.

    ``bus_id`` is ``None`` for grep'd ``LnkCap``/``LnkSta`` lines with no device header.
    Speeds in GT/s per lane; ``aspm_control`` is LnkCtl's ASPM state (``"Disabled"``,
    ``"L1 Enabled"`` …), ``aspm_support`` LnkCap's (``"L1"``, ``"L0s L1"``).
    """

    bus_id: str | None = None
    device_class: str | None = None
    description: str | None = None
    cap_speed_gts: float | None = None
    cap_width: int | None = None
    sta_speed_gts: float | None = None
    sta_width: int | None = None
    speed_downgraded: bool | None = None
    width_downgraded: bool | None = None
    aspm_support: str | None = None
    aspm_control: str | None = None
    numa_node: int | None = None
    physical_slot: str | None = None
    kernel_driver: str | None = None

    @property
    def is_nvidia_gpu(self) -> bool | None:
        """True for an NVIDIA display controller, ``None`` when the block has no header."""
        if self.description is None or self.device_class is None:
            return None
        display = any(k in self.device_class for k in ("VGA", "3D", "Display"))
        return display and "NVIDIA" in self.description

    @property
    def product_name(self) -> str | None:
        """The product name as nvidia-smi prints it, from the pci.ids name lspci shows in
        brackets: ``NVIDIA Corporation GA102 [GeForce RTX 3090] (rev a1)`` → ``NVIDIA GeForce
        RTX 3090``; ``None`` for other devices or when there is no bracketed name."""
        if not self.is_nvidia_gpu or not self.description:
            return None
        found = re.search(r"\[([^\]]+)\]", self.description)
        if found is None:
            return None
        name = found.group(1).strip()
        return name if name.startswith("NVIDIA") else f"NVIDIA {name}"

    @property
    def gen_current(self) -> int | None:
        return gts_to_gen(self.sta_speed_gts)

    @property
    def gen_max(self) -> int | None:
        return gts_to_gen(self.cap_speed_gts)

    @property
    def pcie(self) -> PcieLink:
        """Status vs capability; ``under_load`` unknown (lspci does not say)."""
        return PcieLink(
            gen_current=self.gen_current,
            gen_max=self.gen_max,
            width_current=self.sta_width,
            width_max=self.cap_width,
        )

    @property
    def slot_number(self) -> int | None:
        """The physical slot as a number when lspci printed one (``Physical Slot: 3``)."""
        if self.physical_slot and self.physical_slot.strip().isdigit():
            return int(self.physical_slot.strip())
        return None


@dataclass(frozen=True)
class LspciTree:
    """What rigforge reads from ``lspci -tv``: root buses (``0000:c0``) and NVIDIA devices."""

    root_buses: tuple[str, ...]
    nvidia_display_devices: int


@dataclass(frozen=True)
class LinkLimit:
    """A kernel "available PCIe bandwidth, limited by …" line for one device.

    ``limited_*`` is the slowest link on the path (at ``limiting_port``, possibly upstream of
    the device); ``capable_*`` what the device could do. Bandwidths in Gb/s.
    ``is_nvidia_gpu``: from the matching ``[10de:…] class 0x03…`` probe line (``None``: absent).
    """

    bus_id: str
    available_gbps: float
    limited_gen: int | None
    limited_width: int
    limiting_port: str
    capable_gbps: float
    capable_gen: int | None
    capable_width: int
    is_nvidia_gpu: bool | None = None

    @property
    def pcie(self) -> PcieLink:
        """The path's effective link vs the device's capability; load unknown (probe time)."""
        return PcieLink(
            gen_current=self.limited_gen,
            gen_max=self.capable_gen,
            width_current=self.limited_width,
            width_max=self.capable_width,
        )


def parse_lspci(text: str) -> tuple[LspciDevice, ...]:
    """Parse ``lspci -vv``/``-vvv`` output (or grep'd ``LnkCap``/``LnkSta`` lines).

    Returns one record per device block; bare lines without a device header form one record
    with ``bus_id=None``. Devices without any link lines are kept (their link fields ``None``).
    """
    blocks: list[tuple[re.Match[str] | None, list[str]]] = []
    for line in clean_text(text).split("\n"):
        match = _DEVICE_RE.match(line)
        if match and not line[:1].isspace():
            blocks.append((match, []))
        elif line.strip():
            if not blocks:
                blocks.append((None, []))
            blocks[-1][1].append(line.strip())
    devices = [_device(header, body) for header, body in blocks]
    return tuple(d for d in devices if d.bus_id is not None or d.cap_width or d.sta_width)


def _device(header: re.Match[str] | None, body: list[str]) -> LspciDevice:
    fields: dict[str, object] = {}
    if header is not None:
        fields["bus_id"] = normalize_bus_id(header.group("bus"))
        fields["device_class"] = header.group("cls").strip()
        fields["description"] = header.group("desc").strip()
    for line in body:
        if m := _LNKCAP_RE.search(line):
            fields["cap_speed_gts"] = float(m.group("speed"))
            fields["cap_width"] = int(m.group("width"))
            if m.group("aspm"):
                fields["aspm_support"] = m.group("aspm").strip()
        elif m := _LNKSTA_RE.search(line):
            fields["sta_speed_gts"] = float(m.group("speed"))
            fields["sta_width"] = int(m.group("width"))
            fields["speed_downgraded"] = m.group("sdown") is not None
            fields["width_downgraded"] = m.group("wdown") is not None
        elif m := _LNKCTL_ASPM_RE.search(line):
            fields["aspm_control"] = m.group("aspm").strip()
        elif line.startswith("NUMA node:"):
            value = line.partition(":")[2].strip()
            fields["numa_node"] = int(value) if value.lstrip("-").isdigit() else None
            if isinstance(fields["numa_node"], int) and fields["numa_node"] < 0:
                fields["numa_node"] = None  # the kernel prints -1 for "no NUMA information"
        elif line.startswith("Physical Slot:"):
            fields["physical_slot"] = line.partition(":")[2].strip()
        elif line.startswith("Kernel driver in use:"):
            fields["kernel_driver"] = line.partition(":")[2].strip()
    return LspciDevice(**fields)  # type: ignore[arg-type]


def is_lspci_tree(text: str) -> bool:
    """True for ``lspci -t``/``-tv`` output (``-+-[0000:00]-+-00.0 …``)."""
    for line in clean_text(text).split("\n"):
        if line.strip():
            return bool(re.match(r"^\s*[-+\\|]*\[[0-9a-fA-F]{4}:[0-9a-fA-F]{2}\]", line))
    return False


def parse_lspci_tree(text: str) -> LspciTree:
    """Recognise ``lspci -tv``: its root buses and how many NVIDIA display devices it shows.

    Bus ids are not resolved from the tree drawing; use ``lspci -vv`` for per-device facts.
    """
    text = clean_text(text)
    roots = tuple(dict.fromkeys(m.lower() for m in _TREE_ROOT_RE.findall(text)))
    nvidia = sum(
        1
        for line in text.split("\n")
        if "NVIDIA" in line and "Audio" not in line and "USB" not in line and "UCSI" not in line
    )
    return LspciTree(root_buses=roots, nvidia_display_devices=nvidia)


def has_link_limits(text: str) -> bool:
    """True when ``text`` holds at least one kernel "… limited by … (capable of …)" line."""
    return _DMESG_LIMIT_RE.search(clean_text(text)) is not None


def parse_dmesg_pcie(text: str) -> tuple[LinkLimit, ...]:
    """Parse the kernel's "available PCIe bandwidth, limited by …" lines (dmesg, journalctl)."""
    text = clean_text(text)
    vendors: dict[str, bool] = {}
    for m in _DMESG_CLASS_RE.finditer(text):
        vendors[normalize_bus_id(m.group("bus"))] = m.group(
            "vendor"
        ).lower() == NVIDIA_VENDOR_ID and m.group("cls").startswith("03")
    limits: dict[str, LinkLimit] = {}
    for m in _DMESG_LIMIT_RE.finditer(text):
        bus = normalize_bus_id(m.group("bus"))
        limits[bus] = LinkLimit(
            bus_id=bus,
            available_gbps=float(m.group("avail")),
            limited_gen=gts_to_gen(float(m.group("lspeed"))),
            limited_width=int(m.group("lwidth")),
            limiting_port=m.group("port"),
            capable_gbps=float(m.group("cap")),
            capable_gen=gts_to_gen(float(m.group("cspeed"))),
            capable_width=int(m.group("cwidth")),
            is_nvidia_gpu=vendors.get(bus),
        )
    return tuple(limits.values())
