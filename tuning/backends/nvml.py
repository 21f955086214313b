"""The real backend: the GPUs of this machine through NVML (``nvidia-ml-py``, module ``pynvml``).

Every NVML call goes through one choke point, :func:`nvml_call`, which translates
``pynvml.NVMLError`` through one table, :data:`NVML_ERROR_TABLE`: "not supported" becomes the
caller's explicit default (usually ``None``), everything else a named rigforge error whose
message says what to do. Nothing else in this module catches NVML errors.

GPUs are ordered by PCI bus id (NVML's own index order may differ from CUDA's and from
``nvidia-smi``'s) and identified by UUID / bus id. NVML reports power in mW and energy in mJ;
this module converts to W and J at the seam.

The exception class and the ``NVML_*`` constants are imported from the real module by name, so
tests that replace ``tuning.backends.nvml.pynvml`` with an autospec'd mock still exercise the
real error table and pass real constant values.

One module on purpose (about 800 lines): it is one backend, and the choke point, the error
table and every call through them must share the one ``pynvml`` name that tests patch —
split across modules, a patched module would leave real NVML calls in the others.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml
from pynvml import (
    NVML_CLOCK_MEM,
    NVML_CLOCK_SM,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_INSUFFICIENT_POWER,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_RESET_REQUIRED,
    NVML_ERROR_UNINITIALIZED,
    NVML_FEATURE_DISABLED,
    NVML_FEATURE_ENABLED,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST,
    NVML_MEMORY_ERROR_TYPE_CORRECTED,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_NVLINK_DEVICE_TYPE_SWITCH,
    NVML_NVLINK_MAX_LINKS,
    NVML_SUCCESS,
    NVML_TEMPERATURE_GPU,
    NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR,
    NVML_TEMPERATURE_THRESHOLD_GPU_MAX,
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
    NVML_TOPOLOGY_HOSTBRIDGE,
    NVML_TOPOLOGY_INTERNAL,
    NVML_TOPOLOGY_MULTIPLE,
    NVML_TOPOLOGY_NODE,
    NVML_TOPOLOGY_SINGLE,
    NVML_TOPOLOGY_SYSTEM,
    NVML_VOLATILE_ECC,
    NVMLError,
)

from tuning.backends.base import (
    Clock,
    ClockEventReason,
    EccCounts,
    Gpu,
    PowerConstraints,
    Rig,
    decode_clock_event_reasons,
)
from tuning.core.bus import normalize_bus_id
from tuning.core.pcie import PcieLink, TopologyLink
from tuning.core.power import Circuit, Psu
from tuning.core.rig import Thresholds
from tuning.errors import (
    BackendUnavailable,
    DriverLibraryMismatch,
    GpuLost,
    NoPermission,
    NvmlLibraryNotFound,
    OutOfRange,
    ReadBackMismatch,
    RigforgeError,
)

__all__ = [
    "NVML_ERROR_TABLE",
    "MonotonicClock",
    "NvmlGpu",
    "NvmlRig",
    "decode_cpu_affinity",
    "nvml_call",
    "topology_link_name",
]

#: A set power limit may read back up to this far from the request before it is a mismatch
#: (NVML rounds to the card's granularity; some boards step in 0.5–1 W). Units: W.
READ_BACK_TOLERANCE_W = 1.0

#: GPU utilisation at or above which a PCIe reading counts as "under load". An idle GPU
#: downtrains its link to gen 1 to save power; any real kernel activity retrains it, so a
#: modest threshold separates the two without requiring a saturating workload. Units: %.
UNDER_LOAD_UTILIZATION_PCT = 20.0

#: NVML field values that count time per clock-event reason (ns since the driver loaded).
#: ``nvmlFieldValue_t`` ids from nvml.h; the reasons without a counter are not listed.
CLOCK_EVENT_DURATION_FIELDS: Mapping[int, ClockEventReason] = {
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP: ClockEventReason.SW_POWER_CAP,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST: ClockEventReason.SYNC_BOOST,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: ClockEventReason.SW_THERMAL_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN: ClockEventReason.HW_THERMAL_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN: (
        ClockEventReason.HW_POWER_BRAKE_SLOWDOWN
    ),
}

_NS_PER_S = 1e9
_MW_PER_W = 1000.0
_MJ_PER_J = 1000.0
_BYTES_PER_MIB = 1024 * 1024
_CPU_MASK_WORD_BITS = 64  # nvmlDeviceGetCpuAffinity fills an array of unsigned long (64-bit)


# --------------------------------------------------------------------------------------------
# The choke point
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NvmlErrorRule:
    """What an NVML error code means to rigforge.

    ``on_read``/``on_set``: the error type raised when the failing call is a query or a
    setting; ``None`` means "not there": return the caller's explicit default instead.
    ``advice``: the sentence that tells a person what to do.
    """

    on_read: type[RigforgeError] | None
    on_set: type[RigforgeError] | None
    advice: str


_RESET_ADVICE = (
    "reset the GPU (nvidia-smi -r) or reboot; if it recurs, check the power cables and the riser"
)

#: THE table: NVML error code → rigforge behaviour. Codes not listed become
#: :class:`RigforgeError` carrying NVML's own message and the function name.
NVML_ERROR_TABLE: Mapping[int, NvmlErrorRule] = {
    NVML_ERROR_NOT_SUPPORTED: NvmlErrorRule(
        None, RigforgeError, "this GPU or driver does not support the setting; leave it unset"
    ),
    # An older driver than the bindings: the query simply is not available there.
    NVML_ERROR_FUNCTION_NOT_FOUND: NvmlErrorRule(
        None, RigforgeError, "the installed NVIDIA driver is too old for this; upgrade the driver"
    ),
    NVML_ERROR_LIBRARY_NOT_FOUND: NvmlErrorRule(
        NvmlLibraryNotFound,
        NvmlLibraryNotFound,
        "libnvidia-ml.so.1 could not be loaded; install the NVIDIA driver's user-space "
        "libraries (or run inside a container started with the NVIDIA runtime)",
    ),
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: NvmlErrorRule(
        DriverLibraryMismatch,
        DriverLibraryMismatch,
        "the nvidia kernel module and libnvidia-ml are different versions; reboot, or reload "
        "the nvidia kernel modules, after a driver upgrade",
    ),
    NVML_ERROR_DRIVER_NOT_LOADED: NvmlErrorRule(
        BackendUnavailable,
        BackendUnavailable,
        "the nvidia kernel module is not loaded; run 'sudo modprobe nvidia' and check "
        "'dmesg | grep -i nvrm' (Secure Boot refusing an unsigned module is a common cause)",
    ),
    NVML_ERROR_UNINITIALIZED: NvmlErrorRule(
        BackendUnavailable,
        BackendUnavailable,
        "NVML is not initialised (the rig was closed); open the rig again",
    ),
    NVML_ERROR_NO_PERMISSION: NvmlErrorRule(
        NoPermission,
        NoPermission,
        "changing GPU settings needs root; run as root or via the rigforge-gpu-settings unit",
    ),
    NVML_ERROR_GPU_IS_LOST: NvmlErrorRule(GpuLost, GpuLost, _RESET_ADVICE),
    NVML_ERROR_RESET_REQUIRED: NvmlErrorRule(GpuLost, GpuLost, _RESET_ADVICE),
    NVML_ERROR_INSUFFICIENT_POWER: NvmlErrorRule(
        RigforgeError,
        RigforgeError,
        "the GPU reports insufficient external power; seat every PCIe/12V-2x6 power "
        "connector and check the PSU rail feeding it",
    ),
    NVML_ERROR_INVALID_ARGUMENT: NvmlErrorRule(
        RigforgeError,
        OutOfRange,
        "the driver refused the value; choose one inside the GPU's reported constraints",
    ),
}


def nvml_call(
    function: str,
    *args: Any,
    default: Any = None,
    gpu: str | None = None,
    setting: bool = False,
    absent: Collection[int] = (),
) -> Any:
    """Call ``pynvml.<function>(*args)``, translating NVML errors through :data:`NVML_ERROR_TABLE`.

    ``default``: returned when the table says "not there" (not supported; the function is
    missing from the driver or from these bindings) or the code is in ``absent`` (call-specific
    "nothing here", e.g. an NVLink index past the card's last link).
    ``gpu``: the GPU's UUID / bus id, named in every error message.
    ``setting``: the call changes state (selects the table's ``on_set`` column).
    """
    fn: Callable[..., Any] | None = getattr(pynvml, function, None)
    if fn is None:  # bindings older than the function
        return default
    try:
        return fn(*args)
    except NVMLError as err:
        code = getattr(err, "value", None)
        if code in absent:
            return default
        rule = NVML_ERROR_TABLE.get(code) if isinstance(code, int) else None
        where = f" on GPU {gpu}" if gpu else ""
        if rule is None:
            raise RigforgeError(
                f"NVML {function}{where} failed: {err} (code {code}); "
                "check 'nvidia-smi -q' and 'dmesg | grep -i nvrm' for the same error"
            ) from err
        error_type = rule.on_set if setting else rule.on_read
        if error_type is None:
            return default
        raise error_type(f"{rule.advice} (NVML {function}{where}: {err})") from err


# --------------------------------------------------------------------------------------------
# Pure decoders
# --------------------------------------------------------------------------------------------

_TOPOLOGY_NAMES: Mapping[int, str] = {
    # Two GPUs on one board (K80, dual-GPU cards) sit behind the board's own switch: nvidia-smi
    # has no separate name for it and PIX ranks it correctly (best PCIe path).
    NVML_TOPOLOGY_INTERNAL: "PIX",
    NVML_TOPOLOGY_SINGLE: "PIX",
    NVML_TOPOLOGY_MULTIPLE: "PXB",
    NVML_TOPOLOGY_HOSTBRIDGE: "PHB",
    NVML_TOPOLOGY_NODE: "NODE",
    NVML_TOPOLOGY_SYSTEM: "SYS",
}


def topology_link_name(level: int | None, nvlinks: int = 0) -> str | None:
    """The ``nvidia-smi topo -m`` name of a GPU pair's path.

    ``nvlinks > 0`` wins (``NV<n>``); otherwise NVML's ``nvmlGpuTopologyLevel_t`` maps to
    PIX/PXB/PHB/NODE/SYS. ``None`` when the level is unknown.
    """
    if nvlinks > 0:
        return f"NV{nvlinks}"
    if level is None:
        return None
    return _TOPOLOGY_NAMES.get(level)


def decode_cpu_affinity(words: Sequence[int]) -> tuple[int, ...]:
    """CPU ids set in NVML's affinity bitmask (64-bit words, word 0 holds CPUs 0–63)."""
    cpus: list[int] = []
    for word_index, word in enumerate(words):
        value = int(word)
        bit = 0
        while value:
            if value & 1:
                cpus.append(word_index * _CPU_MASK_WORD_BITS + bit)
            value >>= 1
            bit += 1
    return tuple(cpus)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pci_bus_id(pci_info: Any) -> str:
    """``dddddddd:bb:dd.f`` from an ``nvmlPciInfo_t`` (its ``busId`` is bytes in the bindings)."""
    return _text(pci_info.busId)


def _mw_to_w(value_mw: int | None) -> float | None:
    return None if value_mw is None else value_mw / _MW_PER_W


def _threshold_c(value: int | None) -> float | None:
    # Boards that report thermal limits as T.Limit offsets print them as values <= 0
    # (nvidia-smi -q on H100 / RTX 4090, drivers 550–590: "GPU Slowdown T.Limit Temp : -2 C");
    # no GPU slows down at or below 0 °C, so such a value is not an absolute threshold.
    if value is None or value <= 0:
        return None
    return float(value)


# --------------------------------------------------------------------------------------------
# Clock
# --------------------------------------------------------------------------------------------


class MonotonicClock(Clock):
    """Wall time for a real rig: ``time.monotonic`` and a real ``time.sleep``."""

    def now_s(self) -> float:
        """Seconds since an arbitrary epoch, monotonic. Units: s."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``. Units: s."""
        if seconds > 0:
            time.sleep(seconds)


# --------------------------------------------------------------------------------------------
# One GPU
# --------------------------------------------------------------------------------------------


class NvmlGpu(Gpu):
    """One GPU of this machine, live, through NVML.

    Identity (UUID, name, bus id, VRAM) is read once at open; everything else is read on each
    call. Reads return ``None`` where the card does not support the query.
    """

    def __init__(
        self,
        handle: Any,
        *,
        index: int,
        uuid: str,
        name: str,
        pci_bus_id: str,
        memory_total_mib: int,
        sysfs_root: Path = Path("/sys"),
    ) -> None:
        self._handle = handle
        self._index = index
        self._uuid = uuid
        self._name = name
        self._pci_bus_id = pci_bus_id
        self._memory_total_mib = memory_total_mib
        self._sysfs_root = sysfs_root
        self._constraints: PowerConstraints | None = None

    @classmethod
    def from_handle(cls, handle: Any, *, index: int, sysfs_root: Path = Path("/sys")) -> NvmlGpu:
        """Read a device handle's identity and wrap it."""
        pci = nvml_call("nvmlDeviceGetPciInfo", handle)
        bus_id = _pci_bus_id(pci)
        memory = nvml_call("nvmlDeviceGetMemoryInfo", handle, gpu=bus_id)
        return cls(
            handle,
            index=index,
            uuid=_text(nvml_call("nvmlDeviceGetUUID", handle, gpu=bus_id)),
            name=_text(nvml_call("nvmlDeviceGetName", handle, gpu=bus_id)),
            pci_bus_id=bus_id,
            memory_total_mib=int(memory.total) // _BYTES_PER_MIB,
            sysfs_root=sysfs_root,
        )

    # --- the choke point, bound to this GPU ---------------------------------------------------

    def _call(self, function: str, *args: Any, default: Any = None, setting: bool = False) -> Any:
        return nvml_call(
            function,
            self._handle,
            *args,
            default=default,
            gpu=f"{self._uuid} ({self._pci_bus_id})",
            setting=setting,
        )

    # --- identity ----------------------------------------------------------------------------

    @property
    def handle(self) -> Any:
        """The NVML device handle (for topology queries between two GPUs)."""
        return self._handle

    @property
    def index(self) -> int:
        """Position in the rig's GPU list (PCI bus order), not NVML's index."""
        return self._index

    @property
    def uuid(self) -> str:
        """``GPU-…`` UUID. ``nvidia-smi --query-gpu=uuid``."""
        return self._uuid

    @property
    def name(self) -> str:
        """Product name. ``nvidia-smi --query-gpu=name``."""
        return self._name

    @property
    def pci_bus_id(self) -> str:
        """``dddddddd:bb:dd.f`` as NVML prints it. ``nvidia-smi --query-gpu=pci.bus_id``."""
        return self._pci_bus_id

    @property
    def memory_total_mib(self) -> int:
        """Framebuffer size. Units: MiB. ``nvidia-smi --query-gpu=memory.total``."""
        return self._memory_total_mib

    # --- power -------------------------------------------------------------------------------

    def power_constraints(self) -> PowerConstraints:
        """Settable power-limit range and default. Units: W (NVML: mW).

        ``nvidia-smi --query-gpu=power.min_limit,power.max_limit,power.default_limit``.
        Cached after the first read (the range is fixed by the VBIOS). Where the card does not
        report a range, the current limit is the whole range, so nothing else can be set.
        """
        if self._constraints is None:
            limits_mw = self._call("nvmlDeviceGetPowerManagementLimitConstraints")
            default_mw = self._call("nvmlDeviceGetPowerManagementDefaultLimit")
            current_w = self.power_limit_w()
            if limits_mw is None:
                min_w = max_w = current_w
            else:
                min_w, max_w = limits_mw[0] / _MW_PER_W, limits_mw[1] / _MW_PER_W
            default_w = _mw_to_w(default_mw)
            self._constraints = PowerConstraints(
                min_w=min_w, max_w=max_w, default_w=current_w if default_w is None else default_w
            )
        return self._constraints

    def power_draw_w(self) -> float | None:
        """Board power draw. Units: W (NVML: mW). ``nvidia-smi --query-gpu=power.draw``.

        ``nvmlDeviceGetPowerUsage``: on Ampere and newer a 1 s average, on older cards the
        instantaneous reading. ``None`` where the board has no power sensor.
        """
        return _mw_to_w(self._call("nvmlDeviceGetPowerUsage"))

    def total_energy_j(self) -> float | None:
        """Energy used since the driver loaded. Units: J (NVML: mJ). Volta and newer.

        ``nvidia-smi --query-gpu=total_energy_consumption`` (mJ there). Differences of two
        readings give the energy of a probe window without sampling power.
        """
        energy_mj = self._call("nvmlDeviceGetTotalEnergyConsumption")
        return None if energy_mj is None else energy_mj / _MJ_PER_J

    def power_limit_w(self) -> float:
        """The configured power limit. Units: W. ``nvidia-smi --query-gpu=power.limit``.

        Falls back to the enforced limit where power management is not reported.
        """
        limit_w = _mw_to_w(self._call("nvmlDeviceGetPowerManagementLimit"))
        if limit_w is None:
            limit_w = _mw_to_w(self._call("nvmlDeviceGetEnforcedPowerLimit"))
        if limit_w is None:
            raise RigforgeError(
                f"GPU {self._uuid} ({self._pci_bus_id}) reports no power limit; it cannot be "
                "power-tuned (remove it from the sweep)"
            )
        return limit_w

    def enforced_power_limit_w(self) -> float:
        """The limit the card enforces (the lowest of all active limits). Units: W.

        ``nvidia-smi --query-gpu=enforced.power.limit``.
        """
        enforced_w = _mw_to_w(self._call("nvmlDeviceGetEnforcedPowerLimit"))
        return self.power_limit_w() if enforced_w is None else enforced_w

    # --- heat --------------------------------------------------------------------------------

    def temperature_c(self) -> float | None:
        """GPU core temperature. Units: °C. ``nvidia-smi --query-gpu=temperature.gpu``."""
        value = self._call("nvmlDeviceGetTemperature", NVML_TEMPERATURE_GPU)
        return None if value is None else float(value)

    def thresholds(self) -> Thresholds:
        """Temperature thresholds. Units: °C. ``nvidia-smi -q -d TEMPERATURE``.

        slowdown/shutdown/max operating from ``NVML_TEMPERATURE_THRESHOLD_SLOWDOWN/SHUTDOWN/
        GPU_MAX``; target from ``..._ACOUSTIC_CURR`` ("GPU Target Temperature"). A threshold
        the card does not report, or reports only as a T.Limit offset, is ``None``.
        """
        return Thresholds(
            slowdown_c=_threshold_c(
                self._call("nvmlDeviceGetTemperatureThreshold", NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
            ),
            shutdown_c=_threshold_c(
                self._call("nvmlDeviceGetTemperatureThreshold", NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
            ),
            max_operating_c=_threshold_c(
                self._call("nvmlDeviceGetTemperatureThreshold", NVML_TEMPERATURE_THRESHOLD_GPU_MAX)
            ),
            target_c=_threshold_c(
                self._call(
                    "nvmlDeviceGetTemperatureThreshold", NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR
                )
            ),
        )

    def fan_speed_pct(self) -> float | None:
        """Fan duty. Units: %. ``nvidia-smi --query-gpu=fan.speed``. ``None`` when passive."""
        value = self._call("nvmlDeviceGetFanSpeed")
        return None if value is None else float(value)

    # --- clocks ------------------------------------------------------------------------------

    def sm_clock_mhz(self) -> float | None:
        """Current SM clock. Units: MHz. ``nvidia-smi --query-gpu=clocks.sm``."""
        value = self._call("nvmlDeviceGetClockInfo", NVML_CLOCK_SM)
        return None if value is None else float(value)

    def max_sm_clock_mhz(self) -> float | None:
        """Maximum SM clock. Units: MHz. ``nvidia-smi --query-gpu=clocks.max.sm``."""
        value = self._call("nvmlDeviceGetMaxClockInfo", NVML_CLOCK_SM)
        return None if value is None else float(value)

    def memory_clock_mhz(self) -> float | None:
        """Current memory clock. Units: MHz. ``nvidia-smi --query-gpu=clocks.mem``."""
        value = self._call("nvmlDeviceGetClockInfo", NVML_CLOCK_MEM)
        return None if value is None else float(value)

    def clock_event_durations_s(self) -> Mapping[ClockEventReason, float]:
        """Cumulative seconds per clock-event reason since the driver loaded. Units: s.

        One ``nvmlDeviceGetFieldValues`` call for :data:`CLOCK_EVENT_DURATION_FIELDS` (NVML
        counts ns); a field the driver answers with an error of its own is left out.
        ``nvidia-smi -q -d PERFORMANCE`` prints the same counters on recent drivers.
        """
        values = self._call("nvmlDeviceGetFieldValues", list(CLOCK_EVENT_DURATION_FIELDS))
        if values is None:
            return {}
        durations: dict[ClockEventReason, float] = {}
        for value in values:
            reason = CLOCK_EVENT_DURATION_FIELDS.get(int(value.fieldId))
            if reason is not None and value.nvmlReturn == NVML_SUCCESS:
                durations[reason] = int(value.value.ullVal) / _NS_PER_S
        return durations

    def utilization_pct(self) -> float | None:
        """GPU utilisation over the driver's last sample period. Units: %.

        ``nvidia-smi --query-gpu=utilization.gpu``.
        """
        rates = self._call("nvmlDeviceGetUtilizationRates")
        return None if rates is None else float(rates.gpu)

    def clock_event_reasons(self) -> frozenset[ClockEventReason]:
        """Active clock-event (throttle) reasons, decoded to names.

        ``nvidia-smi --query-gpu=clocks_event_reasons.active``. Uses
        ``nvmlDeviceGetCurrentClocksEventReasons``; bindings or drivers that predate it (before
        12.535) answer through ``nvmlDeviceGetCurrentClocksThrottleReasons`` (same bits).
        """
        mask = None
        if hasattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons"):
            mask = self._call("nvmlDeviceGetCurrentClocksEventReasons")
        if mask is None:
            mask = self._call("nvmlDeviceGetCurrentClocksThrottleReasons")
        return frozenset() if mask is None else decode_clock_event_reasons(int(mask))

    def performance_state(self) -> str | None:
        """Performance state ``P0``…``P15``. ``nvidia-smi --query-gpu=pstate``."""
        value = self._call("nvmlDeviceGetPerformanceState")
        return None if value is None else f"P{value}"

    # --- PCIe and affinity -------------------------------------------------------------------

    def pcie_link(self) -> PcieLink:
        """Negotiated vs maximum PCIe gen and width, with whether the GPU is busy.

        ``nvidia-smi --query-gpu=pcie.link.gen.current,pcie.link.gen.max,
        pcie.link.width.current,pcie.link.width.max``. ``gen_max`` is what this GPU *in this
        slot* can reach (``nvmlDeviceGetMaxPcieLinkGeneration``; the GPU's own maximum,
        ``...GpuMaxPcieLinkGeneration``, only where that is not reported). ``under_load``:
        utilisation at or above :data:`UNDER_LOAD_UTILIZATION_PCT`.
        """
        gen_max = self._call("nvmlDeviceGetMaxPcieLinkGeneration")
        if gen_max is None:
            gen_max = self._call("nvmlDeviceGetGpuMaxPcieLinkGeneration")
        utilization = self.utilization_pct()
        return PcieLink(
            gen_current=self._call("nvmlDeviceGetCurrPcieLinkGeneration"),
            gen_max=gen_max,
            width_current=self._call("nvmlDeviceGetCurrPcieLinkWidth"),
            width_max=self._call("nvmlDeviceGetMaxPcieLinkWidth"),
            under_load=None if utilization is None else utilization >= UNDER_LOAD_UTILIZATION_PCT,
        )

    def pcie_replay_count(self) -> int | None:
        """PCIe replays since the driver loaded. ``nvidia-smi -q -d PCIE`` "Replays Since Reset".

        ``nvmlDeviceGetPcieReplayCounter``; a count that keeps rising is a marginal link.
        """
        value = self._call("nvmlDeviceGetPcieReplayCounter")
        return None if value is None else int(value)

    def ecc(self) -> EccCounts | None:
        """ECC mode and volatile corrected/uncorrected counts. ``nvidia-smi -q -d ECC``.

        ``None`` where the card has no ECC (``nvmlDeviceGetEccMode`` not supported: GeForce).
        """
        mode = self._call("nvmlDeviceGetEccMode")
        if mode is None:
            return None
        if mode[0] != NVML_FEATURE_ENABLED:
            return EccCounts(enabled=False)
        corrected = self._call(
            "nvmlDeviceGetTotalEccErrors", NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC
        )
        uncorrected = self._call(
            "nvmlDeviceGetTotalEccErrors", NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC
        )
        return EccCounts(
            enabled=True,
            corrected_volatile=None if corrected is None else int(corrected),
            uncorrected_volatile=None if uncorrected is None else int(uncorrected),
        )

    def numa_node(self) -> int | None:
        """NUMA node of the GPU's PCIe root. ``nvidia-smi topo -m`` "NUMA Affinity".

        Read from ``<sysfs_root>/bus/pci/devices/<bus id>/numa_node`` first: NVML's
        ``nvmlDeviceGetNumaNodeId`` "only applies to platforms where the GPUs are NUMA nodes"
        (NVML API reference) — on a coherent platform (Grace Hopper) it names the GPU's own
        memory node, not the CPUs next to it. It is the fallback where sysfs says nothing.
        ``-1`` (firmware gave no proximity) is ``None``.
        """
        path = self._sysfs_root / "bus" / "pci" / "devices" / self.sysfs_bus_id / "numa_node"
        try:
            node = int(path.read_text().strip())
        except (OSError, ValueError):
            node = self._call("nvmlDeviceGetNumaNodeId")
        return None if node is None or node < 0 else int(node)

    @property
    def sysfs_bus_id(self) -> str:
        """The bus id as sysfs names the device: ``dddd:bb:dd.f``, lower case."""
        return normalize_bus_id(self._pci_bus_id)

    def cpu_list(self) -> tuple[int, ...] | None:
        """CPUs local to the GPU (its ideal affinity). ``nvidia-smi topo -m`` "CPU Affinity".

        ``nvmlDeviceGetCpuAffinity`` fills a bitmask of 64-bit words sized for this host's CPUs.
        """
        words = max(1, -(-(os.cpu_count() or 1) // _CPU_MASK_WORD_BITS))
        mask = self._call("nvmlDeviceGetCpuAffinity", words)
        if mask is None:
            return None
        cpus = decode_cpu_affinity(list(mask))
        return cpus or None

    # --- persistence -------------------------------------------------------------------------

    def persistence_mode(self) -> bool | None:
        """Whether persistence mode is on. ``nvidia-smi --query-gpu=persistence_mode``."""
        value = self._call("nvmlDeviceGetPersistenceMode")
        return None if value is None else value == NVML_FEATURE_ENABLED

    # --- actuators ---------------------------------------------------------------------------

    def set_power_limit_w(self, power_limit_w: float) -> float:
        """Set the power limit and return the enforced limit read back. Units: W.

        ``nvidia-smi -i <bus id> -pl <W>``. Refuses a value outside :meth:`power_constraints`
        with :class:`OutOfRange` before NVML is called; does nothing when the configured limit
        already equals the request (to the mW); raises :class:`ReadBackMismatch` when the
        enforced limit afterwards differs by more than :data:`READ_BACK_TOLERANCE_W`;
        :class:`NoPermission` without root.
        """
        self.power_constraints().check(power_limit_w)
        wanted_mw = round(power_limit_w * _MW_PER_W)
        current_mw = self._call("nvmlDeviceGetPowerManagementLimit")
        if current_mw != wanted_mw:
            self._call("nvmlDeviceSetPowerManagementLimit", wanted_mw, setting=True)
        enforced_w = self.enforced_power_limit_w()
        if abs(enforced_w - power_limit_w) > READ_BACK_TOLERANCE_W:
            raise ReadBackMismatch(
                f"GPU {self._uuid} ({self._pci_bus_id}): asked for a {power_limit_w:g} W power "
                f"limit but it enforces {enforced_w:g} W; another limit is in force (a lower "
                "board or platform cap, or another tool) — check "
                "'nvidia-smi -q -d POWER' and do not trust this probe"
            )
        return enforced_w

    def set_persistence_mode(self, enabled: bool) -> bool:
        """Set persistence mode and return the mode read back. ``nvidia-smi -i <bus> -pm 1|0``.

        Acts only when the mode differs. On a deployed box ``nvidia-persistenced`` owns this;
        the setter exists for the tuner's snapshot/restore.
        """
        if self.persistence_mode() is enabled:
            return enabled
        self._call(
            "nvmlDeviceSetPersistenceMode",
            NVML_FEATURE_ENABLED if enabled else NVML_FEATURE_DISABLED,
            setting=True,
        )
        read_back = self.persistence_mode()
        if read_back is not enabled:
            raise ReadBackMismatch(
                f"GPU {self._uuid} ({self._pci_bus_id}): persistence mode set to {enabled} but "
                f"reads back {read_back}; check 'nvidia-smi -q | grep -i persistence'"
            )
        return enabled

    # --- NVLink ------------------------------------------------------------------------------

    def nvlink_peers(self) -> tuple[Counter[str], int]:
        """Active NVLinks of this GPU: (links per peer GPU bus id, links to NVSwitches).

        ``nvidia-smi nvlink -s`` / ``-R``. Enumeration stops at the first link index the card
        does not have (``NOT_SUPPORTED`` on PCIe-only cards, ``INVALID_ARGUMENT`` past the last).
        """
        peers: Counter[str] = Counter()
        switch_links = 0
        for link in range(NVML_NVLINK_MAX_LINKS):
            state = nvml_call(
                "nvmlDeviceGetNvLinkState",
                self._handle,
                link,
                gpu=self._uuid,
                absent={NVML_ERROR_INVALID_ARGUMENT},
            )
            if state is None:
                break
            if state != NVML_FEATURE_ENABLED:
                continue
            remote_type = self._call("nvmlDeviceGetNvLinkRemoteDeviceType", link)
            if remote_type == NVML_NVLINK_DEVICE_TYPE_SWITCH:
                switch_links += 1
                continue
            remote = self._call("nvmlDeviceGetNvLinkRemotePciInfo", link)
            if remote is not None:
                peers[normalize_bus_id(_pci_bus_id(remote))] += 1
        return peers, switch_links


# --------------------------------------------------------------------------------------------
# The rig
# --------------------------------------------------------------------------------------------


class NvmlRig(Rig):
    """The GPUs of this machine, ordered by PCI bus id.

    It knows nothing of PSUs or circuits itself: the inventory supplies them (``psus``,
    ``circuits``, ``psu_map`` = GPU UUID → PSU name). :meth:`close` shuts NVML down.
    """

    def __init__(
        self,
        gpus: Sequence[NvmlGpu],
        *,
        name: str | None = None,
        psus: Sequence[Psu] = (),
        circuits: Sequence[Circuit] = (),
        psu_map: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name or socket.gethostname()
        self._gpus = tuple(gpus)
        self._psus = tuple(psus)
        self._circuits = tuple(circuits)
        self._psu_map = dict(psu_map or {})
        self._clock = clock or MonotonicClock()
        self._closed = False

    @classmethod
    def open(
        cls,
        sysfs_root: Path = Path("/sys"),
        *,
        name: str | None = None,
        psus: Sequence[Psu] = (),
        circuits: Sequence[Circuit] = (),
        psu_map: Mapping[str, str] | None = None,
    ) -> NvmlRig:
        """Initialise NVML and open every GPU it sees, in PCI bus order.

        Raises :class:`NvmlLibraryNotFound` (no libnvidia-ml), :class:`DriverLibraryMismatch`
        (driver upgraded, not rebooted), :class:`BackendUnavailable` (module not loaded, or no
        GPU). NVML is shut down again on any failure after it was initialised.
        """
        nvml_call("nvmlInit")
        try:
            count = nvml_call("nvmlDeviceGetCount") or 0
            if count == 0:
                raise BackendUnavailable(
                    "no NVIDIA GPU found: NVML works but reports 0 devices; check 'nvidia-smi -L' "
                    "and 'lspci -d 10de:' (a GPU missing from lspci is a seating, riser or power "
                    "problem; one present there but not here is a driver problem)"
                )
            handles = [nvml_call("nvmlDeviceGetHandleByIndex", i) for i in range(count)]
            # NVML's index order is not the PCI order on every board; sort before numbering.
            bus_ids = [
                normalize_bus_id(_pci_bus_id(nvml_call("nvmlDeviceGetPciInfo", h))) for h in handles
            ]
            order = sorted(range(count), key=bus_ids.__getitem__)
            gpus = [
                NvmlGpu.from_handle(handles[nvml_index], index=position, sysfs_root=sysfs_root)
                for position, nvml_index in enumerate(order)
            ]
        except BaseException:
            # The original error is the one worth reading; a failing shutdown adds nothing.
            with contextlib.suppress(RigforgeError):
                nvml_call("nvmlShutdown")
            raise
        return cls(gpus, name=name, psus=psus, circuits=circuits, psu_map=psu_map)

    @property
    def gpus(self) -> Sequence[NvmlGpu]:
        """The GPUs in PCI bus order."""
        return self._gpus

    @property
    def clock(self) -> Clock:
        """Wall time (:class:`MonotonicClock`)."""
        return self._clock

    def topology(self) -> tuple[TopologyLink, ...]:
        """Pairwise links, each unordered pair once, in ``nvidia-smi topo -m`` names.

        NVLinks first (``NV<n>``: direct links between the pair, or — on NVSwitch systems —
        the fewer of the two GPUs' switch links), else ``nvmlDeviceGetTopologyCommonAncestor``
        mapped by :func:`topology_link_name`. Pairs NVML cannot place are left out.
        """
        nvlinks = [gpu.nvlink_peers() for gpu in self._gpus]
        links: list[TopologyLink] = []
        for a, gpu_a in enumerate(self._gpus):
            for b in range(a + 1, len(self._gpus)):
                gpu_b = self._gpus[b]
                (peers_a, switch_a), (_peers_b, switch_b) = nvlinks[a], nvlinks[b]
                count = peers_a.get(gpu_b.sysfs_bus_id, 0) or min(switch_a, switch_b)
                level = None
                if count == 0:
                    level = nvml_call(
                        "nvmlDeviceGetTopologyCommonAncestor",
                        gpu_a.handle,
                        gpu_b.handle,
                        gpu=f"{gpu_a.uuid} / {gpu_b.uuid}",
                    )
                name = topology_link_name(level, count)
                if name is not None:
                    links.append(TopologyLink(a=a, b=b, link=name))
        return tuple(links)

    def psus(self) -> tuple[Psu, ...]:
        """PSUs the inventory described; ``()`` when none."""
        return self._psus

    def circuits(self) -> tuple[Circuit, ...]:
        """Circuits the inventory described; ``()`` when none."""
        return self._circuits

    def psu_of(self, uuid: str) -> str | None:
        """The PSU feeding the GPU with this UUID, from the inventory's map."""
        return self._psu_map.get(uuid)

    def close(self) -> None:
        """Shut NVML down (``nvmlShutdown``). Safe to call twice."""
        if not self._closed:
            self._closed = True
            nvml_call("nvmlShutdown")

    def __enter__(self) -> NvmlRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
