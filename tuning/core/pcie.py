"""PCIe links and GPU-to-GPU topology: what a link negotiated and how two GPUs reach each other.

Units: ``gen`` is the PCIe generation (1–6), ``width`` the lane count (x1–x16). Link names
follow ``nvidia-smi topo -m``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

#: ``nvidia-smi topo -m`` link names, best first. ``NV<n>`` (n bonded NVLinks) ranks above all.
LINK_ORDER: tuple[str, ...] = ("NV", "PIX", "PXB", "PHB", "NODE", "SYS")
_NV_RE = re.compile(r"^NV(\d+)$")


def link_rank(link: str) -> int:
    """Rank a topology link: 0 is best (NVLink). Unknown links rank worst.

    PIX = at most one PCIe switch between the GPUs; PXB = several switches, no host bridge;
    PHB = through a host bridge (CPU root complex); NODE = across host bridges inside one NUMA
    node; SYS = across NUMA nodes / sockets (SMP interconnect).
    """
    if _NV_RE.match(link):
        return 0
    try:
        return LINK_ORDER.index(link)
    except ValueError:
        return len(LINK_ORDER)


def nvlink_count(link: str) -> int:
    """Number of bonded NVLinks in an ``NV<n>`` link name, 0 for a PCIe path."""
    match = _NV_RE.match(link)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class TopologyLink:
    """How GPU ``a`` reaches GPU ``b`` (indices into the rig's GPU list), in nvidia-smi names."""

    a: int
    b: int
    link: str


class LinkStatus(StrEnum):
    """Verdict on a PCIe link.

    ``recheck_under_load``: gen below max while the GPU idles — GPUs downtrain the link to
    save power (P8, 0 % utilisation), so this is normal until it persists under load.
    """

    OK = "ok"
    DEGRADED = "degraded"
    RECHECK_UNDER_LOAD = "recheck_under_load"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PcieLink:
    """Negotiated vs maximum PCIe link of a GPU.

    ``under_load``: whether the reading was taken with the GPU busy (``None``: not known).
    A width below max is always degraded (links do not narrow to save power); a gen below
    max is degraded only under load.
    """

    gen_current: int | None = None
    gen_max: int | None = None
    width_current: int | None = None
    width_max: int | None = None
    under_load: bool | None = None

    @property
    def status(self) -> LinkStatus:
        width_low = (
            self.width_current is not None
            and self.width_max is not None
            and self.width_current < self.width_max
        )
        gen_low = (
            self.gen_current is not None
            and self.gen_max is not None
            and self.gen_current < self.gen_max
        )
        if width_low or (gen_low and self.under_load):
            return LinkStatus.DEGRADED
        if gen_low:
            return LinkStatus.RECHECK_UNDER_LOAD
        if None in (self.gen_current, self.gen_max, self.width_current, self.width_max):
            return LinkStatus.UNKNOWN
        return LinkStatus.OK

    @property
    def degraded(self) -> bool:
        return self.status is LinkStatus.DEGRADED
