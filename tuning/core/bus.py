"""PCI bus ids: one spelling (``dddd:bb:dd.f``) for NVML's, lspci's and the inventory's."""

from __future__ import annotations


def normalize_bus_id(bus_id: str) -> str:
    """Normalise a PCI bus id to ``dddd:bb:dd.f`` lower case.

    NVML prints an 8-digit domain (``00000000:01:00.0``), lspci a 4-digit one or none.
    """
    text = bus_id.strip().lower()
    parts = text.split(":")
    if len(parts) == 2:
        parts = ["0000", *parts]
    domain = parts[0][-4:].rjust(4, "0")
    return ":".join([domain, *parts[1:]])


def same_bus_id(a: str, b: str) -> bool:
    """Whether two spellings name the same PCI function (``01:00.0`` is ``00000000:01:00.0``)."""
    return normalize_bus_id(a) == normalize_bus_id(b)
