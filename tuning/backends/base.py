"""The hardware seam: what the tuner may ask of a GPU and of a rig.

Two kinds of objects live here:

* **Live interfaces** (:class:`Gpu`, :class:`Rig`): implemented by the real NVML backend
  (``nvml.py``) and by the simulated rig (``sim.py``). Reads return the value now; actuators
  refuse values outside the hardware's constraints and return the value read back.
* **Snapshots** (:class:`GpuInfo`, :class:`RigSnapshot`), PSUs, circuits, PCIe links, bus ids
  and the fingerprint: zero-dependency values defined in :mod:`tuning.core` (import them
  from there). A live rig produces a snapshot with :meth:`Rig.snapshot`.

Units are in every name: ``_w`` watts, ``_c`` degrees Celsius, ``_mhz``, ``_mib`` (MiB),
``_s`` seconds, ``_pct`` percent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tuning.core.bus import same_bus_id
from tuning.core.pcie import PcieLink, TopologyLink
from tuning.core.power import Circuit, Psu
from tuning.core.rig import GpuInfo, HostInfo, RigSnapshot, Thresholds
from tuning.errors import OutOfRange, UnknownGpu

__all__ = [
    "CLOCK_EVENT_BITS",
    "THROTTLE_REASONS",
    "Clock",
    "ClockEventReason",
    "Gpu",
    "GpuSample",
    "PowerConstraints",
    "Rig",
    "decode_clock_event_reasons",
    "encode_clock_event_reasons",
]

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

    def follow_wall_time(self) -> None:  # noqa: B027 - a real rig's clock already does
        """From now on, let this clock run no faster than wall time.

        The seam between a rig and a load that lives outside the process (a command, an HTTP
        endpoint: :attr:`tuning.workloads.Workload.real_time`): such a load produces tokens
        in real seconds, so a probe window of ``window_s`` rig-clock seconds must also last
        ``window_s`` real seconds, or it ends before a single request has come back. A real
        rig's clock is wall time already (nothing to do); a virtual clock
        (:class:`tuning.backends.sim.SimClock`) then sleeps in :meth:`sleep` until wall time
        has caught up with it. Idempotent; there is no way back (a sweep keeps one pace).
        """


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
                isinstance(key, str) and same_bus_id(key, gpu.pci_bus_id)
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
