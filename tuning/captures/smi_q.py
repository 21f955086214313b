"""``nvidia-smi -q`` (text) and ``nvidia-smi -q -x`` (XML) → :class:`GpuRecord` per GPU.

Both the old and the new layouts are read:

* power: ``Power Readings`` (≤ 525: ``Power Limit``/``Enforced Power Limit``) and
  ``GPU Power Readings`` (≥ 530: ``Current Power Limit``, ``Average Power Draw``);
* clock events: ``Clocks Throttle Reasons`` (≤ 530) and ``Clocks Event Reasons`` (≥ 535),
  mapped to :class:`ClockEventReason` names; the ``… Counters`` section is not a state;
* PCIe: ``Max``/``Current`` plus ``Device Current``/``Device Max``/``Host Max`` (≥ 550);
* temperature thresholds: only the absolute ones (``GPU Slowdown Temp`` …). Newer drivers on
  some boards print thresholds relative to T.Limit (``GPU Slowdown T.Limit Temp : -2 C``);
  those are margins, not temperatures, and stay ``None``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from tuning.backends.base import ClockEventReason
from tuning.captures.errors import CaptureFormatError
from tuning.captures.records import GpuRecord
from tuning.captures.values import (
    boolean,
    clean_text,
    integer,
    is_unknown,
    number,
    text_or_none,
)
from tuning.core.rig import Thresholds

_GPU_BLOCK_RE = re.compile(r"^GPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$")

#: ``-q`` text labels (lower case) → reason. ``Idle`` is NVML's GpuIdle.
_TEXT_REASONS: dict[str, ClockEventReason] = {
    "idle": ClockEventReason.GPU_IDLE,
    "gpu idle": ClockEventReason.GPU_IDLE,
    "applications clocks setting": ClockEventReason.APPLICATIONS_CLOCKS_SETTING,
    "sw power cap": ClockEventReason.SW_POWER_CAP,
    "hw slowdown": ClockEventReason.HW_SLOWDOWN,
    "hw thermal slowdown": ClockEventReason.HW_THERMAL_SLOWDOWN,
    "hw power brake slowdown": ClockEventReason.HW_POWER_BRAKE_SLOWDOWN,
    "sync boost": ClockEventReason.SYNC_BOOST,
    "sw thermal slowdown": ClockEventReason.SW_THERMAL_SLOWDOWN,
    "display clock setting": ClockEventReason.DISPLAY_CLOCK_SETTING,
}
_REASON_SECTIONS = ("clocks event reasons", "clocks throttle reasons", "clocks_throttle_reasons")


@dataclass
class _Node:
    """One ``Key : value`` line (or a ``Section`` line, value ``None``) and its children."""

    key: str
    value: str | None
    children: list[_Node] = field(default_factory=list)

    def find(self, *names: str) -> _Node | None:
        wanted = {n.lower() for n in names}
        for child in self.children:
            if child.key.lower() in wanted:
                return child
        return None

    def get(self, *path: str) -> str | None:
        node: _Node | None = self
        for step in path:
            node = node.find(*step.split("|")) if node else None
        return node.value if node else None


def is_xml(text: str) -> bool:
    """True for ``nvidia-smi -q -x`` output."""
    return "<nvidia_smi_log" in text[:4096]


def parse_smi_q(text: str) -> tuple[GpuRecord, ...]:
    """Parse ``nvidia-smi -q`` text or ``-q -x`` XML into one record per GPU, in log order.

    ``index`` is the GPU's position in the log (nvidia-smi prints GPUs in PCI bus order, the
    same order its ``index`` uses). Raises :class:`CaptureFormatError` when no GPU is found.
    """
    text = clean_text(text)
    records = _parse_xml(text) if is_xml(text) else _parse_text(text)
    if not records:
        raise CaptureFormatError(
            "no GPU found in the nvidia-smi -q output; capture 'nvidia-smi -q' (or -q -x) whole"
        )
    return records


# ---------------------------------------------------------------------------- text layout


def _tree(lines: list[str]) -> _Node:
    root = _Node("", None)
    stack: list[tuple[int, _Node]] = [(-1, root)]
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if " : " in body or body.endswith(" :") or re.search(r"\s:\s", body):
            key, _, value = body.partition(":")
            node = _Node(key.strip(), value.strip())
        else:
            node = _Node(body, None)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((indent, node))
    return root


def _parse_text(text: str) -> tuple[GpuRecord, ...]:
    lines = text.split("\n")
    driver = None
    for line in lines:
        if line.strip().startswith("Driver Version"):
            driver = text_or_none(line.partition(":")[2])
            break
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        match = _GPU_BLOCK_RE.match(line)
        if match:
            blocks.append((match.group(1), []))
        elif blocks:
            blocks[-1][1].append(line)
    return tuple(
        _text_record(position, bus_id, _tree(body), driver)
        for position, (bus_id, body) in enumerate(blocks)
    )


def _text_record(position: int, bus_id: str, gpu: _Node, driver: str | None) -> GpuRecord:
    power = gpu.find("GPU Power Readings", "Power Readings") or _Node("", None)
    temperature = gpu.find("Temperature") or _Node("", None)
    link = gpu.find("PCI") or _Node("", None)
    gen = link.find("GPU Link Info") or _Node("", None)
    return GpuRecord(
        position=position,
        index=position,
        uuid=text_or_none(gpu.get("GPU UUID")),
        name=text_or_none(gpu.get("Product Name")),
        pci_bus_id=text_or_none(link.get("Bus Id")) or bus_id,
        driver_version=driver,
        memory_total_mib=integer(gpu.get("FB Memory Usage", "Total")),
        power_draw_w=number(power.get("Average Power Draw|Power Draw")),
        power_limit_w=number(power.get("Current Power Limit|Power Limit")),
        power_enforced_limit_w=number(power.get("Enforced Power Limit")),
        power_default_w=number(power.get("Default Power Limit")),
        power_min_w=number(power.get("Min Power Limit")),
        power_max_w=number(power.get("Max Power Limit")),
        temp_c=number(temperature.get("GPU Current Temp")),
        thresholds=Thresholds(
            slowdown_c=number(temperature.get("GPU Slowdown Temp")),
            shutdown_c=number(temperature.get("GPU Shutdown Temp")),
            max_operating_c=number(temperature.get("GPU Max Operating Temp")),
            target_c=number(temperature.get("GPU Target Temperature")),
        ),
        sm_clock_mhz=number(gpu.get("Clocks", "SM")),
        max_sm_clock_mhz=number(gpu.get("Max Clocks", "SM")),
        clock_event_reasons=_text_reasons(gpu),
        pcie_gen_current=integer(gen.get("PCIe Generation", "Current")),
        pcie_gen_max=integer(gen.get("PCIe Generation", "Max")),
        pcie_gen_device_max=integer(gen.get("PCIe Generation", "Device Max")),
        pcie_gen_host_max=integer(gen.get("PCIe Generation", "Host Max")),
        pcie_width_current=integer(gen.get("Link Width", "Current")),
        pcie_width_max=integer(gen.get("Link Width", "Max")),
        utilization_pct=number(gpu.get("Utilization", "Gpu|GPU")),
        pstate=text_or_none(gpu.get("Performance State")),
        persistence_mode=boolean(gpu.get("Persistence Mode")),
        fan_pct=number(gpu.get("Fan Speed")),
    )


def _flatten(node: _Node) -> list[_Node]:
    out: list[_Node] = []
    for child in node.children:
        out.append(child)
        out.extend(_flatten(child))
    return out


def _text_reasons(gpu: _Node) -> frozenset[ClockEventReason] | None:
    section = gpu.find("Clocks Event Reasons", "Clocks Throttle Reasons")
    if section is None:
        return None
    active: set[ClockEventReason] = set()
    seen = False
    for entry in _flatten(section):  # HW Thermal/Power Brake nest under HW Slowdown
        reason = _TEXT_REASONS.get(entry.key.lower())
        state = boolean(entry.value)
        if reason is None or state is None:
            continue
        seen = True
        if state:
            active.add(reason)
    return frozenset(active) if seen else None


# ---------------------------------------------------------------------------- XML layout


def _xml_text(element: ET.Element | None, *paths: str) -> str | None:
    if element is None:
        return None
    for path in paths:
        found = element.find(path)
        if found is not None and found.text is not None and not is_unknown(found.text):
            return found.text.strip()
    return None


def _parse_xml(text: str) -> tuple[GpuRecord, ...]:
    try:
        root = ET.fromstring(text[text.index("<") :].encode())
    except ET.ParseError as error:
        raise CaptureFormatError(
            f"nvidia-smi -q -x output is not well-formed XML: {error}"
        ) from error
    driver = _xml_text(root, "driver_version")
    return tuple(
        _xml_record(position, gpu, driver) for position, gpu in enumerate(root.findall("gpu"))
    )


def _xml_record(position: int, gpu: ET.Element, driver: str | None) -> GpuRecord:
    power = gpu.find("gpu_power_readings")
    if power is None:
        power = gpu.find("power_readings")
    temperature = gpu.find("temperature")
    gen = gpu.find("pci/pci_gpu_link_info/pcie_gen")
    width = gpu.find("pci/pci_gpu_link_info/link_widths")
    return GpuRecord(
        position=position,
        index=position,
        uuid=_xml_text(gpu, "uuid"),
        name=_xml_text(gpu, "product_name"),
        pci_bus_id=_xml_text(gpu, "pci/pci_bus_id") or gpu.get("id"),
        driver_version=driver,
        memory_total_mib=integer(_xml_text(gpu, "fb_memory_usage/total")),
        power_draw_w=number(_xml_text(power, "average_power_draw", "power_draw")),
        power_limit_w=number(_xml_text(power, "current_power_limit", "power_limit")),
        power_enforced_limit_w=number(_xml_text(power, "enforced_power_limit")),
        power_default_w=number(_xml_text(power, "default_power_limit")),
        power_min_w=number(_xml_text(power, "min_power_limit")),
        power_max_w=number(_xml_text(power, "max_power_limit")),
        temp_c=number(_xml_text(temperature, "gpu_temp")),
        # gpu_temp_max_threshold is the shutdown temperature in nvsmi_device_v11/v12.dtd.
        thresholds=Thresholds(
            slowdown_c=number(_xml_text(temperature, "gpu_temp_slow_threshold")),
            shutdown_c=number(_xml_text(temperature, "gpu_temp_max_threshold")),
            max_operating_c=number(_xml_text(temperature, "gpu_temp_max_gpu_threshold")),
            target_c=number(_xml_text(temperature, "gpu_target_temperature")),
        ),
        sm_clock_mhz=number(_xml_text(gpu, "clocks/sm_clock")),
        max_sm_clock_mhz=number(_xml_text(gpu, "max_clocks/sm_clock")),
        clock_event_reasons=_xml_reasons(gpu),
        pcie_gen_current=integer(_xml_text(gen, "current_link_gen")),
        pcie_gen_max=integer(_xml_text(gen, "max_link_gen")),
        pcie_gen_device_max=integer(_xml_text(gen, "max_device_link_gen")),
        pcie_gen_host_max=integer(_xml_text(gen, "max_host_link_gen")),
        pcie_width_current=integer(_xml_text(width, "current_link_width")),
        pcie_width_max=integer(_xml_text(width, "max_link_width")),
        utilization_pct=number(_xml_text(gpu, "utilization/gpu_util")),
        pstate=_xml_text(gpu, "performance_state"),
        persistence_mode=boolean(_xml_text(gpu, "persistence_mode")),
        fan_pct=number(_xml_text(gpu, "fan_speed")),
    )


def _xml_reasons(gpu: ET.Element) -> frozenset[ClockEventReason] | None:
    section = gpu.find("clocks_event_reasons")
    if section is None:
        section = gpu.find("clocks_throttle_reasons")
    if section is None:
        return None
    active: set[ClockEventReason] = set()
    seen = False
    for child in section:
        suffix = re.sub(r"^clocks_(event|throttle)_reason_", "", child.tag)
        suffix = suffix.replace("display_clocks_setting", "display_clock_setting")
        try:
            reason = ClockEventReason(suffix)
        except ValueError:
            continue
        state = boolean(child.text)
        if state is None:
            continue
        seen = True
        if state:
            active.add(reason)
    return frozenset(active) if seen else None
