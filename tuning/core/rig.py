"""Rig snapshots: frozen, possibly partial descriptions of a rig's GPUs, topology and power.

A live rig produces one with ``Rig.snapshot()`` (``tuning.backends.base``); parsed
``nvidia-smi``/``lspci`` captures and pyinfra facts produce the same type, so ``inspect``,
placement and the deploy all speak one rig model. Unknown values are ``None``, never invented.
Units are in every name: ``_w`` watts, ``_c`` °C, ``_mib`` MiB, ``_pct`` percent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tuning.core.bus import normalize_bus_id, same_bus_id
from tuning.core.pcie import PcieLink, TopologyLink
from tuning.core.power import Circuit, Psu
from tuning.errors import UnknownGpu


@dataclass(frozen=True)
class Thresholds:
    """Temperature thresholds. Units: °C. ``None`` where the card does not report one.

    ``slowdown_c``: HW slowdown starts; ``shutdown_c``: the card powers off;
    ``max_operating_c``: the highest temperature the card is designed to run at;
    ``target_c``: the SW thermal target (SW thermal slowdown keeps the card at or below it).
    """

    slowdown_c: float | None = None
    shutdown_c: float | None = None
    max_operating_c: float | None = None
    target_c: float | None = None


@dataclass(frozen=True)
class GpuInfo:
    """What is known about one GPU; every field may be ``None`` (unknown, never invented)."""

    index: int
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    memory_total_mib: int | None = None
    power_min_w: float | None = None
    power_max_w: float | None = None
    power_default_w: float | None = None
    power_limit_w: float | None = None
    power_draw_w: float | None = None
    temp_c: float | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    pcie: PcieLink = field(default_factory=PcieLink)
    numa_node: int | None = None
    cpu_list: tuple[int, ...] | None = None
    psu: str | None = None
    slot: int | None = None
    persistence_mode: bool | None = None
    utilization_pct: float | None = None
    pstate: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``inspect --json`` shape of one GPU."""
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "pci_bus_id": self.pci_bus_id,
            "memory_total_mib": self.memory_total_mib,
            "power": {
                "min_w": self.power_min_w,
                "max_w": self.power_max_w,
                "default_w": self.power_default_w,
                "limit_w": self.power_limit_w,
                "draw_w": self.power_draw_w,
            },
            "temp_c": self.temp_c,
            "thresholds": asdict(self.thresholds),
            "pcie": {
                "gen_current": self.pcie.gen_current,
                "gen_max": self.pcie.gen_max,
                "width_current": self.pcie.width_current,
                "width_max": self.pcie.width_max,
                "status": self.pcie.status.value,
                "degraded": self.pcie.degraded,
            },
            "numa_node": self.numa_node,
            "cpu_list": list(self.cpu_list) if self.cpu_list is not None else None,
            "psu": self.psu,
            "slot": self.slot,
            "persistence_mode": self.persistence_mode,
        }


@dataclass(frozen=True)
class HostInfo:
    """The platform around the GPUs (CPU, memory, NUMA). ``None`` where unknown."""

    cpu_model: str | None = None
    cpu_cores: int | None = None
    memory_gib: float | None = None
    numa_nodes: int | None = None


@dataclass(frozen=True)
class RigSnapshot:
    """A (possibly partial) description of a rig: GPUs, topology, power supply."""

    name: str
    gpus: tuple[GpuInfo, ...]
    topology: tuple[TopologyLink, ...] = ()
    psus: tuple[Psu, ...] = ()
    circuits: tuple[Circuit, ...] = ()
    host: HostInfo = field(default_factory=HostInfo)

    def link(self, a: int, b: int) -> str | None:
        """The topology link between GPU indices ``a`` and ``b``, or ``None`` if unknown."""
        if a == b:
            return "X"
        for entry in self.topology:
            if {entry.a, entry.b} == {a, b}:
                return entry.link
        return None

    def gpu(self, key: str | int) -> GpuInfo:
        """Find a GPU by index, UUID or PCI bus id; raise :class:`UnknownGpu` otherwise."""
        for gpu in self.gpus:
            if key in (gpu.index, gpu.uuid) or (
                isinstance(key, str) and gpu.pci_bus_id and same_bus_id(key, gpu.pci_bus_id)
            ):
                return gpu
        known = ", ".join(g.uuid or str(g.index) for g in self.gpus)
        raise UnknownGpu(f"no GPU {key!r} on rig {self.name!r}; it has: {known}")

    @property
    def memory_total_mib(self) -> int:
        return sum(g.memory_total_mib or 0 for g in self.gpus)

    def fingerprint(self) -> str:
        """Stable hash of what a tuning profile depends on: GPU UUIDs, models, bus ids, VRAM.

        A profile whose fingerprint differs from the host's is stale (a GPU swapped or gone).
        """
        return rig_fingerprint(self.gpus)

    def to_json(self) -> dict[str, Any]:
        """The ``inspect --json`` document."""
        return {
            "name": self.name,
            "host": asdict(self.host),
            "gpus": [g.to_json() for g in self.gpus],
            "memory_total_mib": self.memory_total_mib,
            "topology": [asdict(t) for t in self.topology],
            "psus": [
                {**p.model_dump(), "circuit_budget_w": self._circuit_budget(p.circuit)}
                for p in self.psus
            ],
            "circuits": [
                {**c.model_dump(), "rating_w": c.rating_w, "budget_w": c.budget_w}
                for c in self.circuits
            ],
            "fingerprint": self.fingerprint(),
        }

    def _circuit_budget(self, name: str | None) -> float | None:
        for circuit in self.circuits:
            if circuit.name == name:
                return circuit.budget_w
        return None


def rig_fingerprint(gpus: Iterable[GpuInfo]) -> str:
    """``sha256:<16 hex>`` over each GPU's UUID, name, bus id and VRAM, in bus-id order."""
    rows = sorted(
        (normalize_bus_id(g.pci_bus_id) if g.pci_bus_id else "", g.uuid, g.name, g.memory_total_mib)
        for g in gpus
    )
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return f"sha256:{digest[:16]}"
