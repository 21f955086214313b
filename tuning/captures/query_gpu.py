"""``nvidia-smi --query-gpu=FIELDS --format=csv[,noheader][,nounits]`` → :class:`GpuRecord`.

Any column set works: the header names the columns (``power.limit [W]``; the bracketed unit
is dropped), and the values may carry units (``350.00 W``, ``24576 MiB``, ``7 %``) or not
(``nounits``). Unknown cells (``[N/A]``, ``[Not Supported]``, ``[Requested functionality has
been deprecated]``) become ``None``. A ``noheader`` capture needs the field list it was
asked with (``columns=``), because nothing in it says which column is which.

Field names follow ``nvidia-smi --help-query-gpu``; the short aliases it accepts
(``gpu_name``, ``gpu_bus_id``, ``clocks.sm``, ``clocks_throttle_reasons.*``) map to the same
fields as the names it prints in the header.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tuning.backends.base import ClockEventReason, decode_clock_event_reasons
from tuning.captures.errors import CaptureFormatError
from tuning.captures.records import GpuRecord
from tuning.captures.values import (
    boolean,
    clean_text,
    integer,
    number,
    text_or_none,
)

_Converter = Callable[[str | None], Any]

#: query field (canonical or alias, lower case, no unit) → (GpuRecord attribute, converter)
_FIELDS: dict[str, tuple[str, _Converter]] = {
    "index": ("index", integer),
    "name": ("name", text_or_none),
    "gpu_name": ("name", text_or_none),
    "uuid": ("uuid", text_or_none),
    "gpu_uuid": ("uuid", text_or_none),
    "pci.bus_id": ("pci_bus_id", text_or_none),
    "gpu_bus_id": ("pci_bus_id", text_or_none),
    "driver_version": ("driver_version", text_or_none),
    "memory.total": ("memory_total_mib", integer),
    "power.draw": ("power_draw_w", number),
    "power.draw.average": ("power_draw_w", number),
    "power.limit": ("power_limit_w", number),
    "enforced.power.limit": ("power_enforced_limit_w", number),
    "power.default_limit": ("power_default_w", number),
    "power.min_limit": ("power_min_w", number),
    "power.max_limit": ("power_max_w", number),
    "temperature.gpu": ("temp_c", number),
    "clocks.sm": ("sm_clock_mhz", number),
    "clocks.current.sm": ("sm_clock_mhz", number),
    "clocks.max.sm": ("max_sm_clock_mhz", number),
    "clocks.max.sm_clock": ("max_sm_clock_mhz", number),
    "pcie.link.gen.current": ("pcie_gen_current", integer),
    "pcie.link.gen.gpucurrent": ("pcie_gen_current", integer),
    "pcie.link.gen.max": ("pcie_gen_max", integer),
    "pcie.link.gen.gpumax": ("pcie_gen_device_max", integer),
    "pcie.link.gen.hostmax": ("pcie_gen_host_max", integer),
    "pcie.link.width.current": ("pcie_width_current", integer),
    "pcie.link.width.max": ("pcie_width_max", integer),
    "utilization.gpu": ("utilization_pct", number),
    "pstate": ("pstate", text_or_none),
    "persistence_mode": ("persistence_mode", boolean),
    "fan.speed": ("fan_pct", number),
}

#: ``clocks_event_reasons.<suffix>`` (and the pre-535 ``clocks_throttle_reasons.``) → reason.
_REASON_SUFFIXES: dict[str, ClockEventReason] = {
    "gpu_idle": ClockEventReason.GPU_IDLE,
    "applications_clocks_setting": ClockEventReason.APPLICATIONS_CLOCKS_SETTING,
    "sw_power_cap": ClockEventReason.SW_POWER_CAP,
    "hw_slowdown": ClockEventReason.HW_SLOWDOWN,
    "sync_boost": ClockEventReason.SYNC_BOOST,
    "sw_thermal_slowdown": ClockEventReason.SW_THERMAL_SLOWDOWN,
    "hw_thermal_slowdown": ClockEventReason.HW_THERMAL_SLOWDOWN,
    "hw_power_brake_slowdown": ClockEventReason.HW_POWER_BRAKE_SLOWDOWN,
    "display_clock_setting": ClockEventReason.DISPLAY_CLOCK_SETTING,
    "display_clocks_setting": ClockEventReason.DISPLAY_CLOCK_SETTING,
}
_REASON_PREFIXES = ("clocks_event_reasons.", "clocks_throttle_reasons.")

_FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def field_name(header_cell: str) -> str:
    """``"power.limit [W]"`` → ``"power.limit"`` (lower case, unit dropped)."""
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", header_cell.strip()).strip().lower()


def looks_like_header(cells: Sequence[str]) -> bool:
    """True when every cell is a query-field name and at least one is a field we know."""
    names = [field_name(c) for c in cells]
    if not names or not all(_FIELD_NAME_RE.match(n) for n in names):
        return False
    return any(n in _FIELDS or n.startswith(_REASON_PREFIXES) or n == "timestamp" for n in names)


def _rows(text: str) -> list[list[str]]:
    lines = [line for line in clean_text(text).split("\n") if line.strip()]
    return [[cell.strip() for cell in row] for row in csv.reader(lines, skipinitialspace=True)]


def parse_query_gpu(text: str, columns: Sequence[str] | None = None) -> tuple[GpuRecord, ...]:
    """Parse ``--query-gpu`` CSV output into one :class:`GpuRecord` per row.

    ``columns``: the fields the query asked for, needed only for ``noheader`` output (a
    header, when present, wins). Columns rigforge does not model are ignored. Raises
    :class:`CaptureFormatError` when there is no header and no ``columns``, or when a row
    has a different number of cells than the header.
    """
    rows = _rows(text)
    if not rows:
        return ()
    if looks_like_header(rows[0]):
        header, body = [field_name(c) for c in rows[0]], rows[1:]
    elif columns is not None:
        header, body = [field_name(c) for c in columns], rows
    else:
        raise CaptureFormatError(
            "--query-gpu output without a header: pass the field list it was queried with "
            "(columns=...), or capture it with --format=csv (header on)"
        )
    records = []
    for position, row in enumerate(body):
        if len(row) != len(header):
            raise CaptureFormatError(
                f"--query-gpu row {position + 1} has {len(row)} cells but the header has "
                f"{len(header)}; was the output cut or mixed with other text?"
            )
        records.append(_record(position, dict(zip(header, row, strict=True))))
    return tuple(records)


def _record(position: int, cells: dict[str, str]) -> GpuRecord:
    values: dict[str, Any] = {}
    for name, cell in cells.items():
        spec = _FIELDS.get(name)
        if spec is None:
            continue
        attribute, convert = spec
        if values.get(attribute) is None:
            # first non-empty spelling wins (pcie.link.gen.current before .gpucurrent)
            values[attribute] = convert(cell)
    record = GpuRecord(position=position, **values)
    reasons = _reasons(cells)
    if reasons is not None:
        record = replace(record, clock_event_reasons=reasons)
    return record


def _reasons(cells: dict[str, str]) -> frozenset[ClockEventReason] | None:
    """Active reasons from the ``.active`` hex mask, or from the per-reason columns."""
    for prefix in _REASON_PREFIXES:
        mask = integer(cells.get(prefix + "active"))
        if mask is not None:
            return decode_clock_event_reasons(mask)
    found: set[ClockEventReason] = set()
    seen = False
    for name, cell in cells.items():
        for prefix in _REASON_PREFIXES:
            if name.startswith(prefix) and name[len(prefix) :] in _REASON_SUFFIXES:
                active = boolean(cell)
                if active is None:
                    continue
                seen = True
                if active:
                    found.add(_REASON_SUFFIXES[name[len(prefix) :]])
    return frozenset(found) if seen else None
