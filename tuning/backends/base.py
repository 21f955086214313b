"""The hardware seam: what the tuner may ask of a GPU and of a rig.

Two kinds of objects live here:

* **Live interfaces** (:class:`Gpu`, :class:`Rig`): implemented by the real NVML backend
  (``nvml.py``) and by the simulated rig (``sim.py``). Reads return the value now; actuators
  refuse values outside the hardware's constraints and return the value read back.
* **Snapshots** (:class:`GpuInfo`, :class:`RigSnapshot`): frozen, possibly partial descriptions
  of a rig. A live rig produces one with :meth:`Rig.snapshot`; parsed ``nvidia-smi``/``lspci``
  captures and pyinfra facts produce the same type, so ``inspect``, placement and the deploy
  all speak one rig model. Unknown values are ``None``, never invented.

Units are in every name: ``_w`` watts, ``_c`` degrees Celsius, ``_mhz``, ``_mib`` (MiB),
``_s`` seconds, ``_pct`` percent.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from tuning.errors import OutOfRange, UnknownGpu

# --------------------------------------------------------------------------------------------
# Clock-event (throttle) reasons
# --------------------------------------------------------------------------------------------


class ClockEventReason(StrEnum):
    """Why the GPU's clocks are below their maximum; names follow NVML's constants.

    The NVML bit for each is in :data:`CLOCK_EVENT_BITS` (``nvmlClocksEventReason*``;
    ``nvidia-smi -q -d PERFORMANCE`` prints the same list as "Clocks Event Reasons").
    """

    GPU_IDLE = "gpu_idle"
    APPLICATIONS_CLOCKS_SETTING = "applications_clocks_setting"
    SW_POWER_CAP = "sw_power_cap"
    HW_SLOWDOWN = "hw_slowdown"
    SYNC_BOOST = "sync_boost"
    SW_THERMAL_SLOWDOWN = "sw_thermal_slowdown"
    HW_THERMAL_SLOWDOWN = "hw_thermal_slowdown"
    HW_POWER_BRAKE_SLOWDOWN = "hw_power_brake_slowdown"
    DISPLAY_CLOCK_SETTING = "display_clock_setting"


CLOCK_EVENT_BITS: Mapping[ClockEventReason, int] = {
    ClockEventReason.GPU_IDLE: 0x1,
    ClockEventReason.APPLICATIONS_CLOCKS_SETTING: 0x2,
    ClockEventReason.SW_POWER_CAP: 0x4,
    ClockEventReason.HW_SLOWDOWN: 0x8,
    ClockEventReason.SYNC_BOOST: 0x10,
    ClockEventReason.SW_THERMAL_SLOWDOWN: 0x20,
    ClockEventReason.HW_THERMAL_SLOWDOWN: 0x40,
    ClockEventReason.HW_POWER_BRAKE_SLOWDOWN: 0x80,
    ClockEventReason.DISPLAY_CLOCK_SETTING: 0x100,
}

#: Reasons that mean the card is throttling against heat or an electrical limit. A tuned
#: config must never show these; ``sw_power_cap`` is expected (it is the cap working).
THROTTLE_REASONS: frozenset[ClockEventReason] = frozenset(
    {
        ClockEventReason.HW_SLOWDOWN,
        ClockEventReason.SW_THERMAL_SLOWDOWN,
        ClockEventReason.HW_THERMAL_SLOWDOWN,
        ClockEventReason.HW_POWER_BRAKE_SLOWDOWN,
    }
)


def decode_clock_event_reasons(mask: int) -> frozenset[ClockEventReason]:
    """Decode NVML's clock-event bitmask into names; unknown bits are ignored.

    ``nvidia-smi --query-gpu=clocks_event_reasons.active`` prints the same mask in hex.
    """
    return frozenset(reason for reason, bit in CLOCK_EVENT_BITS.items() if mask & bit)


def encode_clock_event_reasons(reasons: Iterable[ClockEventReason]) -> int:
    """Inverse of :func:`decode_clock_event_reasons`."""
    mask = 0
    for reason in reasons:
        mask |= CLOCK_EVENT_BITS[ClockEventReason(reason)]
    return mask


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Values that cross the seam
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerConstraints:
    """The card's power-limit range. Units: W.

    ``nvidia-smi --query-gpu=power.min_limit,power.max_limit,power.default_limit``.
    """

    min_w: float
    max_w: float
    default_w: float

    def check(self, power_limit_w: float) -> None:
        """Raise :class:`OutOfRange` unless ``min_w <= power_limit_w <= max_w``."""
        if not self.min_w <= power_limit_w <= self.max_w:
            raise OutOfRange(
                f"power limit {power_limit_w:g} W is outside this GPU's range "
                f"{self.min_w:g}–{self.max_w:g} W; choose a value inside it"
            )

    def clamp(self, power_limit_w: float) -> float:
        """The nearest value inside the range. Units: W."""
        return min(self.max_w, max(self.min_w, power_limit_w))


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


@dataclass(frozen=True)
class EccCounts:
    """ECC state and the volatile error counts (since the driver loaded) of one GPU.

    ``nvidia-smi -q -d ECC`` ("ECC Mode: Current", "Volatile: SRAM/DRAM Correctable,
    Uncorrectable"). Counts are ``None`` while ECC is off (the card does not count then).
    """

    enabled: bool
    corrected_volatile: int | None = None
    uncorrected_volatile: int | None = None


@dataclass(frozen=True)
class GpuSample:
    """One telemetry reading of one GPU at ``timestamp_s`` (the rig clock)."""

    timestamp_s: float
    power_draw_w: float | None
    power_limit_w: float | None
    temp_c: float | None
    sm_clock_mhz: float | None
    utilization_pct: float | None
    clock_event_reasons: frozenset[ClockEventReason] = frozenset()
    fan_pct: float | None = None

    @property
    def throttling(self) -> bool:
        """True when a heat or electrical slowdown is active (not merely the power cap)."""
        return bool(self.clock_event_reasons & THROTTLE_REASONS)


@dataclass(frozen=True)
class Circuit:
    """A branch circuit feeding one or more PSUs.

    ``continuous_ratio``: the share of the breaker rating usable for continuous load
    (NEC 210.19/210.20: continuous loads at most 80 % of the breaker). Units: V, A, W.
    """

    name: str
    voltage_v: float
    breaker_a: float
    continuous_ratio: float = 0.8

    @property
    def rating_w(self) -> float:
        return self.voltage_v * self.breaker_a

    @property
    def budget_w(self) -> float:
        """Continuous wall power the circuit may carry. Units: W (AC)."""
        return self.rating_w * self.continuous_ratio


@dataclass(frozen=True)
class Psu:
    """A power supply: DC rating, wall efficiency, and the circuit it is plugged into.

    ``platform_w``: the non-GPU DC load this PSU carries (CPU, board, fans, drives).
    """

    name: str
    rating_w: float
    circuit: str
    efficiency: float = 0.92
    platform_w: float = 0.0

    def wall_w(self, dc_w: float) -> float:
        """AC draw at the wall for a DC load. Units: W."""
        return dc_w / self.efficiency


# --------------------------------------------------------------------------------------------
# Snapshots: the rig model shared by inspect, captures, facts and placement
# --------------------------------------------------------------------------------------------


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
                isinstance(key, str) and gpu.pci_bus_id and _same_bus_id(key, gpu.pci_bus_id)
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
                {**asdict(p), "circuit_budget_w": self._circuit_budget(p.circuit)}
                for p in self.psus
            ],
            "circuits": [
                {**asdict(c), "rating_w": c.rating_w, "budget_w": c.budget_w} for c in self.circuits
            ],
            "fingerprint": self.fingerprint(),
        }

    def _circuit_budget(self, name: str) -> float | None:
        for circuit in self.circuits:
            if circuit.name == name:
                return circuit.budget_w
        return None


def _same_bus_id(a: str, b: str) -> bool:
    return normalize_bus_id(a) == normalize_bus_id(b)


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


def rig_fingerprint(gpus: Iterable[GpuInfo]) -> str:
    """``sha256:<16 hex>`` over each GPU's UUID, name, bus id and VRAM, in bus-id order."""
    rows = sorted(
        (normalize_bus_id(g.pci_bus_id) if g.pci_bus_id else "", g.uuid, g.name, g.memory_total_mib)
        for g in gpus
    )
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return f"sha256:{digest[:16]}"


# --------------------------------------------------------------------------------------------
# Live interfaces
# --------------------------------------------------------------------------------------------


class Gpu(ABC):
    """One GPU, live. Reads return the value now; ``None`` means "not supported by this card".

    Actuators act only when the value differs, refuse values outside the constraints with
    :class:`OutOfRange` (nothing changed), and return the value read back afterwards.
    """

    @property
    @abstractmethod
    def index(self) -> int:
        """Position in the rig's GPU list (PCI bus order). Never use it as an identity."""

    @property
    @abstractmethod
    def uuid(self) -> str:
        """``GPU-…`` UUID. ``nvidia-smi --query-gpu=uuid``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Product name. ``nvidia-smi --query-gpu=name``."""

    @property
    @abstractmethod
    def pci_bus_id(self) -> str:
        """``dddddddd:bb:dd.f``. ``nvidia-smi --query-gpu=pci.bus_id``."""

    @property
    @abstractmethod
    def memory_total_mib(self) -> int:
        """Framebuffer size. Units: MiB. ``nvidia-smi --query-gpu=memory.total``."""

    @abstractmethod
    def power_constraints(self) -> PowerConstraints:
        """Settable power-limit range and default. Units: W."""

    @abstractmethod
    def power_draw_w(self) -> float | None:
        """Board power, averaged over NVML's 1 s window. Units: W. ``power.draw.average``."""

    @abstractmethod
    def power_limit_w(self) -> float:
        """The configured power limit. Units: W. ``power.limit``."""

    @abstractmethod
    def enforced_power_limit_w(self) -> float:
        """The limit the card enforces (may be lower than configured). Units: W."""

    @abstractmethod
    def temperature_c(self) -> float | None:
        """GPU core temperature. Units: °C. ``temperature.gpu``."""

    @abstractmethod
    def thresholds(self) -> Thresholds:
        """Temperature thresholds. Units: °C."""

    @abstractmethod
    def fan_speed_pct(self) -> float | None:
        """Fan duty. Units: %. ``None`` on passively cooled cards."""

    @abstractmethod
    def sm_clock_mhz(self) -> float | None:
        """Current SM clock. Units: MHz. ``clocks.sm``."""

    @abstractmethod
    def max_sm_clock_mhz(self) -> float | None:
        """Maximum SM clock. Units: MHz. ``clocks.max.sm``."""

    @abstractmethod
    def utilization_pct(self) -> float | None:
        """GPU utilisation over the last sample period. Units: %."""

    @abstractmethod
    def clock_event_reasons(self) -> frozenset[ClockEventReason]:
        """Active clock-event (throttle) reasons, decoded to names."""

    @abstractmethod
    def pcie_link(self) -> PcieLink:
        """Negotiated vs maximum PCIe gen and width, with whether the GPU is busy."""

    @abstractmethod
    def numa_node(self) -> int | None:
        """NUMA node of the GPU's PCIe root, ``None`` when the platform does not say."""

    @abstractmethod
    def cpu_list(self) -> tuple[int, ...] | None:
        """CPUs local to the GPU (its ideal affinity)."""

    @abstractmethod
    def persistence_mode(self) -> bool | None:
        """Whether persistence mode is on. ``None`` where not supported (Windows)."""

    # --- read-only telemetry the exporter reports; ``None`` / empty where not supported ---

    def memory_clock_mhz(self) -> float | None:
        """Current memory clock. Units: MHz. ``nvidia-smi --query-gpu=clocks.mem``."""
        return None

    def pcie_replay_count(self) -> int | None:
        """PCIe replays since the driver loaded (a rising count: a marginal link or riser).

        ``nvidia-smi -q -d PCIE`` "Replays Since Reset".
        """
        return None

    def ecc(self) -> EccCounts | None:
        """ECC mode and volatile error counts; ``None`` where the card has no ECC."""
        return None

    def clock_event_durations_s(self) -> Mapping[ClockEventReason, float]:
        """Cumulative time spent in each clock-event reason since the driver loaded. Units: s.

        Only the reasons the driver counts (NVML field values ``NVML_FI_DEV_CLOCKS_EVENT_
        REASON_*``: power cap, sync boost, SW/HW thermal, power brake); empty where none.
        """
        return {}

    def total_energy_j(self) -> float | None:
        """Energy consumed since an arbitrary epoch (driver load, rig creation). Units: J.

        ``nvmlDeviceGetTotalEnergyConsumption`` (reported in mJ there; Volta and later).
        ``None`` where the card does not report it; the tuner then integrates power samples.
        """
        return None

    @abstractmethod
    def set_power_limit_w(self, power_limit_w: float) -> float:
        """Set the power limit and return the enforced limit read back. Units: W.

        Raises :class:`OutOfRange` (nothing changed) outside :meth:`power_constraints`,
        :class:`NoPermission` without privilege.
        """

    @abstractmethod
    def set_persistence_mode(self, enabled: bool) -> bool:
        """Set persistence mode and return the mode read back."""

    def sample(self, timestamp_s: float) -> GpuSample:
        """Read the telemetry the tuner watches, stamped with the rig clock."""
        return GpuSample(
            timestamp_s=timestamp_s,
            power_draw_w=self.power_draw_w(),
            power_limit_w=self.enforced_power_limit_w(),
            temp_c=self.temperature_c(),
            sm_clock_mhz=self.sm_clock_mhz(),
            utilization_pct=self.utilization_pct(),
            clock_event_reasons=self.clock_event_reasons(),
            fan_pct=self.fan_speed_pct(),
        )

    def info(self) -> GpuInfo:
        """A snapshot of this GPU's identity, limits and link."""
        constraints = self.power_constraints()
        return GpuInfo(
            index=self.index,
            uuid=self.uuid,
            name=self.name,
            pci_bus_id=self.pci_bus_id,
            memory_total_mib=self.memory_total_mib,
            power_min_w=constraints.min_w,
            power_max_w=constraints.max_w,
            power_default_w=constraints.default_w,
            power_limit_w=self.power_limit_w(),
            power_draw_w=self.power_draw_w(),
            temp_c=self.temperature_c(),
            thresholds=self.thresholds(),
            pcie=self.pcie_link(),
            numa_node=self.numa_node(),
            cpu_list=self.cpu_list(),
            persistence_mode=self.persistence_mode(),
            utilization_pct=self.utilization_pct(),
        )


class Clock(ABC):
    """The rig's notion of time. The simulated rig's clock is virtual: nothing sleeps."""

    @abstractmethod
    def now_s(self) -> float:
        """Seconds since an arbitrary epoch, monotonic."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (real rigs sleep; the simulator advances its model)."""


class Rig(ABC):
    """A machine with GPUs, PSUs and circuits, live."""

    name: str

    @property
    @abstractmethod
    def gpus(self) -> Sequence[Gpu]:
        """The GPUs in PCI bus order."""

    @property
    @abstractmethod
    def clock(self) -> Clock:
        """The clock that telemetry timestamps and probe windows use."""

    @abstractmethod
    def topology(self) -> tuple[TopologyLink, ...]:
        """Pairwise links between GPUs (each unordered pair once), nvidia-smi link names."""

    def psus(self) -> tuple[Psu, ...]:
        """Power supplies; empty when the rig file or inventory does not describe them."""
        return ()

    def circuits(self) -> tuple[Circuit, ...]:
        """Branch circuits; empty when not described."""
        return ()

    def psu_of(self, uuid: str) -> str | None:
        """Name of the PSU feeding the GPU with this UUID, ``None`` when not described."""
        return None

    def host(self) -> HostInfo:
        """CPU, memory and NUMA facts of the platform."""
        return HostInfo()

    def gpu(self, key: str | int) -> Gpu:
        """Find a live GPU by index, UUID or PCI bus id."""
        for gpu in self.gpus:
            if key in (gpu.index, gpu.uuid) or (
                isinstance(key, str) and _same_bus_id(key, gpu.pci_bus_id)
            ):
                return gpu
        known = ", ".join(g.uuid for g in self.gpus)
        raise UnknownGpu(f"no GPU {key!r} on rig {self.name!r}; it has: {known}")

    def snapshot(self) -> RigSnapshot:
        """Freeze what the rig reports now into a :class:`RigSnapshot`."""
        gpus = []
        for gpu in self.gpus:
            info = gpu.info()
            gpus.append(GpuInfo(**{**_shallow_fields(info), "psu": self.psu_of(gpu.uuid)}))
        return RigSnapshot(
            name=self.name,
            gpus=tuple(gpus),
            topology=self.topology(),
            psus=self.psus(),
            circuits=self.circuits(),
            host=self.host(),
        )

    def close(self) -> None:  # noqa: B027 - optional hook, most rigs hold nothing
        """Release backend resources (NVML shutdown)."""


def _shallow_fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
