"""The NVML backend without a GPU: pynvml is replaced by an autospec'd mock at the module.

The mock keeps NVML's real signatures (a call with wrong arguments fails); each function's
behaviour comes from :class:`FakeNvml`, a small in-memory model of a few GPUs. Failures are
the real ``pynvml.NVMLError`` subclasses, so the backend's one error table is what is tested.
Test names say which field bug they pin.

Building an autospec of the whole ``pynvml`` module costs ~0.2 s, so it is built once per
session and reset before each test (a per-test ``mocker.patch(..., autospec=True)`` would put
this file alone past 10 s); ``FakeNvml`` method names mirror NVML's, hence the naming noqa.
"""

# ruff: noqa: N802, N803, N815

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import pynvml as real_pynvml
import pytest

from tuning.backends.base import ClockEventReason
from tuning.backends.nvml import (
    NVML_ERROR_TABLE,
    NvmlRig,
    decode_cpu_affinity,
    nvml_call,
    topology_link_name,
)
from tuning.core.pcie import LinkStatus
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

MIB = 1024 * 1024


@dataclass
class FakeDevice:
    """One GPU as NVML would report it (NVML units: mW, mJ, bytes)."""

    bus_id: str
    uuid: str
    name: str = "NVIDIA RTX 6000 Ada Generation"
    memory_total_b: int = 49140 * MIB
    power_usage_mw: int = 61_250
    limit_mw: int = 300_000
    #: A cap from elsewhere (platform, other tool): the enforced limit never exceeds it.
    external_cap_mw: int | None = None
    constraints_mw: tuple[int, int] = (150_000, 300_000)
    default_mw: int = 300_000
    energy_mj: int = 123_456_789
    temp_c: int = 41
    thresholds_c: dict[int, int] = field(
        default_factory=lambda: {
            real_pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: 98,
            real_pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: 95,
            real_pynvml.NVML_TEMPERATURE_THRESHOLD_GPU_MAX: 93,
            real_pynvml.NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR: 84,
        }
    )
    fan_pct: int = 30
    sm_clock_mhz: int = 2505
    max_sm_clock_mhz: int = 3105
    utilization_pct: int = 0
    clock_event_mask: int = 0x1
    pcie: tuple[int, int, int, int] = (1, 4, 16, 16)  # gen cur, gen max, width cur, width max
    numa_node: int = 0
    affinity_words: tuple[int, ...] = (0xFFFF,)
    persistence: int = real_pynvml.NVML_FEATURE_ENABLED
    #: link index → remote GPU bus id, or "switch" for an NVSwitch port.
    nvlinks: dict[int, str] = field(default_factory=dict)
    nvlink_count: int = 0  # links the card has; 0 = no NVLink at all

    def enforced_mw(self) -> int:
        if self.external_cap_mw is None:
            return self.limit_mw
        return min(self.limit_mw, self.external_cap_mw)


@dataclass
class PciInfo:
    busId: bytes


@dataclass
class Memory:
    total: int
    free: int = 0
    used: int = 0


@dataclass
class Utilization:
    gpu: int
    memory: int = 0


def nvml_error(code: int) -> real_pynvml.NVMLError:
    """The exception the real bindings raise for ``code`` (its generated subclass)."""
    return real_pynvml.NVMLError(code)


class FakeNvml:
    """Behaviour behind the autospec'd functions; handles are the devices themselves.

    ``fail(function, code, device=None)`` makes a function raise NVML error ``code`` (for one
    device, or for every call).
    """

    def __init__(self, devices: list[FakeDevice]) -> None:
        self.devices = devices
        self.failures: dict[tuple[str, int | None], int] = {}
        self.initialised = False
        #: Pair of bus ids → nvmlGpuTopologyLevel_t; unlisted pairs meet at a host bridge.
        self.levels: dict[frozenset[str], int] = {}

    def fail(self, function: str, code: int, device: FakeDevice | None = None) -> None:
        self.failures[(function, None if device is None else id(device))] = code

    def check(self, function: str, handle: Any = None) -> None:
        for key in ((function, id(handle)), (function, None)):
            if key in self.failures:
                raise nvml_error(self.failures[key])

    # Library
    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    # Identity
    def nvmlDeviceGetPciInfo(self, h: FakeDevice) -> PciInfo:
        return PciInfo(busId=h.bus_id.encode())

    def nvmlDeviceGetUUID(self, h: FakeDevice) -> str:
        return h.uuid

    def nvmlDeviceGetName(self, h: FakeDevice) -> str:
        return h.name

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice, version: Any = None) -> Memory:
        return Memory(total=h.memory_total_b)

    # Power
    def nvmlDeviceGetPowerUsage(self, h: FakeDevice) -> int:
        return h.power_usage_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeDevice) -> int:
        return h.energy_mj

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeDevice) -> int:
        return h.limit_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeDevice) -> int:
        return h.enforced_mw()

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: FakeDevice) -> list[int]:
        return list(h.constraints_mw)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeDevice) -> int:
        return h.default_mw

    def nvmlDeviceSetPowerManagementLimit(self, h: FakeDevice, limit: int) -> None:
        lo, hi = h.constraints_mw
        if not lo <= limit <= hi:
            raise nvml_error(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
        h.limit_mw = limit

    # Heat and clocks
    def nvmlDeviceGetTemperature(self, h: FakeDevice, sensor: int) -> int:
        assert sensor == real_pynvml.NVML_TEMPERATURE_GPU
        return h.temp_c

    def nvmlDeviceGetTemperatureThreshold(self, h: FakeDevice, threshold: int) -> int:
        if threshold not in h.thresholds_c:
            raise nvml_error(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
        return h.thresholds_c[threshold]

    def nvmlDeviceGetFanSpeed(self, h: FakeDevice) -> int:
        return h.fan_pct

    def nvmlDeviceGetClockInfo(self, h: FakeDevice, type: int) -> int:
        assert type == real_pynvml.NVML_CLOCK_SM
        return h.sm_clock_mhz

    def nvmlDeviceGetMaxClockInfo(self, h: FakeDevice, type: int) -> int:
        assert type == real_pynvml.NVML_CLOCK_SM
        return h.max_sm_clock_mhz

    def nvmlDeviceGetUtilizationRates(self, h: FakeDevice) -> Utilization:
        return Utilization(gpu=h.utilization_pct)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeDevice) -> int:
        return h.clock_event_mask

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeDevice) -> int:
        return h.clock_event_mask

    def nvmlDeviceGetPerformanceState(self, h: FakeDevice) -> int:
        return 8

    # PCIe, affinity
    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: FakeDevice) -> int:
        return h.pcie[0]

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: FakeDevice) -> int:
        return h.pcie[1]

    def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, h: FakeDevice) -> int:
        return h.pcie[1]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: FakeDevice) -> int:
        return h.pcie[2]

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: FakeDevice) -> int:
        return h.pcie[3]

    def nvmlDeviceGetNumaNodeId(self, h: FakeDevice) -> int:
        return h.numa_node

    def nvmlDeviceGetCpuAffinity(self, h: FakeDevice, cpuSetSize: int) -> list[int]:
        return list(h.affinity_words[:cpuSetSize]) + [0] * (cpuSetSize - len(h.affinity_words))

    def nvmlDeviceGetPersistenceMode(self, h: FakeDevice) -> int:
        return h.persistence

    def nvmlDeviceSetPersistenceMode(self, h: FakeDevice, mode: int) -> None:
        h.persistence = mode

    # Topology
    def nvmlDeviceGetTopologyCommonAncestor(self, device1: FakeDevice, device2: FakeDevice) -> int:
        pair = frozenset((device1.bus_id, device2.bus_id))
        return self.levels.get(pair, real_pynvml.NVML_TOPOLOGY_HOSTBRIDGE)

    def nvmlDeviceGetNvLinkState(self, device: FakeDevice, link: int) -> int:
        if device.nvlink_count == 0:
            raise nvml_error(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
        if link >= device.nvlink_count:
            raise nvml_error(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(link in device.nvlinks)

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: FakeDevice, link: int) -> int:
        if handle.nvlinks[link] == "switch":
            return real_pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH
        return real_pynvml.NVML_NVLINK_DEVICE_TYPE_GPU

    def nvmlDeviceGetNvLinkRemotePciInfo(self, device: FakeDevice, link: int) -> PciInfo:
        return PciInfo(busId=device.nvlinks[link].encode())


@pytest.fixture
def devices() -> list[FakeDevice]:
    """Two GPUs, listed by NVML in an order that is NOT PCI bus order."""
    return [
        FakeDevice(bus_id="00000000:C1:00.0", uuid="GPU-bbbbbbbb-0000-0000-0000-000000000002"),
        FakeDevice(bus_id="00000000:01:00.0", uuid="GPU-aaaaaaaa-0000-0000-0000-000000000001"),
    ]


@pytest.fixture(scope="session")
def nvml_spec() -> Any:
    """An autospec of the real ``pynvml`` module: NVML's signatures, no library behind it."""
    return create_autospec(real_pynvml)


def route_to(spec: Any, model: FakeNvml) -> None:
    """Make every ``nvml*`` function of the autospec ``spec`` answer from ``model``, after
    ``model.check`` (which raises what NVML would for that call, e.g. a lost GPU)."""
    for name in dir(type(model)):
        if not name.startswith("nvml"):
            continue
        behaviour = getattr(model, name)

        def routed(*args: Any, _name: str = name, _behaviour: Any = behaviour) -> Any:
            model.check(_name, args[0] if args else None)
            return _behaviour(*args)

        function = getattr(spec, name)
        function.reset_mock()
        function.side_effect = routed


@pytest.fixture
def fake(mocker: Any, nvml_spec: Any, devices: list[FakeDevice]) -> tuple[FakeNvml, Any]:
    """Patch the backend's ``pynvml`` with the autospec; route every function to a FakeNvml."""
    nvml_spec.reset_mock(return_value=True, side_effect=True)
    mock = mocker.patch("tuning.backends.nvml.pynvml", new=nvml_spec)
    model = FakeNvml(devices)
    route_to(mock, model)
    return model, mock


@pytest.fixture
def rig(fake: tuple[FakeNvml, Any], tmp_path: Path) -> NvmlRig:
    return NvmlRig.open(sysfs_root=tmp_path)


# --------------------------------------------------------------------------------------------
# Opening: library, driver, devices
# --------------------------------------------------------------------------------------------


def test_library_missing(fake: tuple[FakeNvml, Any]) -> None:
    model, _ = fake
    model.fail("nvmlInit", real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(NvmlLibraryNotFound, match=r"libnvidia-ml\.so\.1.*install"):
        NvmlRig.open()


def test_library_missing_is_a_backend_unavailable(fake: tuple[FakeNvml, Any]) -> None:
    model, _ = fake
    model.fail("nvmlInit", real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(BackendUnavailable):
        NvmlRig.open()


def test_driver_library_mismatch(fake: tuple[FakeNvml, Any]) -> None:
    model, _ = fake
    model.fail("nvmlInit", real_pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    with pytest.raises(DriverLibraryMismatch, match="reboot, or reload the nvidia kernel modules"):
        NvmlRig.open()


def test_driver_not_loaded(fake: tuple[FakeNvml, Any]) -> None:
    model, _ = fake
    model.fail("nvmlInit", real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(BackendUnavailable, match="modprobe nvidia"):
        NvmlRig.open()


def test_no_gpu_found_shuts_nvml_down(fake: tuple[FakeNvml, Any]) -> None:
    model, mock = fake
    model.devices.clear()
    with pytest.raises(BackendUnavailable, match="no NVIDIA GPU found"):
        NvmlRig.open()
    mock.nvmlShutdown.assert_called_once_with()


def test_gpu_lost_while_opening_shuts_nvml_down(fake: tuple[FakeNvml, Any]) -> None:
    model, mock = fake
    model.fail("nvmlDeviceGetUUID", real_pynvml.NVML_ERROR_GPU_IS_LOST, model.devices[1])
    with pytest.raises(GpuLost, match=r"00000000:01:00\.0"):
        NvmlRig.open()
    mock.nvmlShutdown.assert_called_once_with()


def test_gpus_ordered_by_bus_id_not_nvml_index(rig: NvmlRig) -> None:
    assert [g.pci_bus_id for g in rig.gpus] == ["00000000:01:00.0", "00000000:C1:00.0"]
    assert [g.index for g in rig.gpus] == [0, 1]
    assert rig.gpu("GPU-bbbbbbbb-0000-0000-0000-000000000002").index == 1
    assert rig.gpu("0000:c1:00.0").uuid == "GPU-bbbbbbbb-0000-0000-0000-000000000002"


def test_close_shuts_nvml_down_once(rig: NvmlRig, fake: tuple[FakeNvml, Any]) -> None:
    _, mock = fake
    rig.close()
    rig.close()
    mock.nvmlShutdown.assert_called_once_with()


# --------------------------------------------------------------------------------------------
# Reads: units and decoding
# --------------------------------------------------------------------------------------------


def test_power_readings_convert_mw_to_w(rig: NvmlRig) -> None:
    gpu = rig.gpus[0]
    assert gpu.power_draw_w() == pytest.approx(61.25)
    assert gpu.power_limit_w() == pytest.approx(300.0)
    assert gpu.enforced_power_limit_w() == pytest.approx(300.0)
    constraints = gpu.power_constraints()
    assert (constraints.min_w, constraints.max_w, constraints.default_w) == (150.0, 300.0, 300.0)


def test_energy_converts_mj_to_j_and_memory_bytes_to_mib(rig: NvmlRig) -> None:
    gpu = rig.gpus[0]
    assert gpu.total_energy_j() == pytest.approx(123_456.789)
    assert gpu.memory_total_mib == 49140


def test_identity_strings_from_bytes_bus_id(rig: NvmlRig) -> None:
    gpu = rig.gpus[0]
    assert gpu.uuid == "GPU-aaaaaaaa-0000-0000-0000-000000000001"
    assert gpu.name == "NVIDIA RTX 6000 Ada Generation"
    assert gpu.sysfs_bus_id == "0000:01:00.0"


def test_power_usage_not_supported_on_geforce(fake: tuple[FakeNvml, Any], rig: NvmlRig) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetPowerUsage", real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    gpu = rig.gpus[0]
    assert gpu.power_draw_w() is None
    # Everything else still answers, and the composite reads carry the gap as None.
    assert gpu.temperature_c() == 41.0
    assert gpu.power_limit_w() == 300.0
    sample = gpu.sample(12.5)
    assert sample.power_draw_w is None
    assert sample.temp_c == 41.0
    assert rig.snapshot().gpus[0].power_draw_w is None


def test_energy_counter_not_supported_before_volta(
    fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetTotalEnergyConsumption", real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert rig.gpus[0].total_energy_j() is None


def test_fan_not_supported_on_passive_card(fake: tuple[FakeNvml, Any], rig: NvmlRig) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetFanSpeed", real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert rig.gpus[0].fan_speed_pct() is None
    assert rig.gpus[0].sample(0.0).fan_pct is None


def test_thresholds_read_in_c(rig: NvmlRig) -> None:
    thresholds = rig.gpus[0].thresholds()
    assert thresholds.slowdown_c == 95.0
    assert thresholds.shutdown_c == 98.0
    assert thresholds.max_operating_c == 93.0
    assert thresholds.target_c == 84.0


def test_thresholds_reported_as_tlimit_offsets_are_unknown(
    devices: list[FakeDevice], fake: tuple[FakeNvml, Any], tmp_path: Path
) -> None:
    # Shape of an H100 (nvidia-smi -q, driver 565): offsets to T.Limit, no target.
    devices[1].thresholds_c = {
        real_pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: -8 & 0xFFFFFFFF,
        real_pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: 0,
        real_pynvml.NVML_TEMPERATURE_THRESHOLD_GPU_MAX: 87,
    }
    thresholds = NvmlRig.open(sysfs_root=tmp_path).gpus[0].thresholds()
    assert thresholds.slowdown_c is None
    assert thresholds.max_operating_c == 87.0
    assert thresholds.target_c is None


def test_clock_event_reasons_decoded_to_names(devices: list[FakeDevice], rig: NvmlRig) -> None:
    devices[1].clock_event_mask = 0x4 | 0x40  # SW power cap + HW thermal slowdown
    gpu = rig.gpus[0]
    assert gpu.clock_event_reasons() == {
        ClockEventReason.SW_POWER_CAP,
        ClockEventReason.HW_THERMAL_SLOWDOWN,
    }
    assert gpu.sample(0.0).throttling


def test_power_cap_alone_is_not_throttling(devices: list[FakeDevice], rig: NvmlRig) -> None:
    devices[1].clock_event_mask = 0x4
    assert not rig.gpus[0].sample(0.0).throttling


def test_clock_events_fall_back_to_throttle_reasons_on_old_bindings(
    devices: list[FakeDevice], fake: tuple[FakeNvml, Any], rig: NvmlRig, monkeypatch: Any
) -> None:
    _, mock = fake
    monkeypatch.delattr(mock, "nvmlDeviceGetCurrentClocksEventReasons")
    devices[1].clock_event_mask = 0x20
    assert rig.gpus[0].clock_event_reasons() == {ClockEventReason.SW_THERMAL_SLOWDOWN}
    mock.nvmlDeviceGetCurrentClocksThrottleReasons.assert_called_with(devices[1])


def test_clock_events_fall_back_when_old_driver_lacks_the_function(
    devices: list[FakeDevice], fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetCurrentClocksEventReasons", real_pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    devices[1].clock_event_mask = 0x8
    assert rig.gpus[0].clock_event_reasons() == {ClockEventReason.HW_SLOWDOWN}


def test_idle_link_below_max_gen_is_recheck_under_load(
    devices: list[FakeDevice], rig: NvmlRig
) -> None:
    devices[1].pcie = (1, 4, 16, 16)
    devices[1].utilization_pct = 0
    link = rig.gpus[0].pcie_link()
    assert (link.gen_current, link.gen_max, link.width_current, link.width_max) == (1, 4, 16, 16)
    assert link.under_load is False
    assert link.status is LinkStatus.RECHECK_UNDER_LOAD


def test_busy_link_below_max_gen_is_degraded(devices: list[FakeDevice], rig: NvmlRig) -> None:
    devices[1].pcie = (3, 4, 16, 16)  # a riser that only holds gen 3
    devices[1].utilization_pct = 97
    link = rig.gpus[0].pcie_link()
    assert link.under_load is True
    assert link.status is LinkStatus.DEGRADED


def test_cpu_affinity_bitmask_decoded(devices: list[FakeDevice], fake: Any, mocker: Any) -> None:
    mocker.patch("tuning.backends.nvml.os.cpu_count", return_value=128)
    devices[1].affinity_words = (0xF | (1 << 63), 0b101)
    gpu = NvmlRig.open().gpus[0]
    assert gpu.cpu_list() == (0, 1, 2, 3, 63, 64, 66)
    _, mock = fake
    mock.nvmlDeviceGetCpuAffinity.assert_called_with(devices[1], 2)  # 128 CPUs = 2 words


@pytest.mark.parametrize(
    ("words", "cpus"),
    [
        ((0,), ()),
        ((0b1,), (0,)),
        ((0xFFFF0000,), tuple(range(16, 32))),
        ((0, 0x3), (64, 65)),
    ],
)
def test_decode_cpu_affinity(words: tuple[int, ...], cpus: tuple[int, ...]) -> None:
    assert decode_cpu_affinity(words) == cpus


def test_empty_affinity_is_unknown(devices: list[FakeDevice], rig: NvmlRig) -> None:
    devices[1].affinity_words = (0,)
    assert rig.gpus[0].cpu_list() is None


def test_numa_node_from_sysfs_before_nvml(
    devices: list[FakeDevice], fake: Any, tmp_path: Path
) -> None:
    device_dir = tmp_path / "bus" / "pci" / "devices" / "0000:01:00.0"
    device_dir.mkdir(parents=True)
    (device_dir / "numa_node").write_text("1\n")
    devices[1].numa_node = 7  # what NVML would say on a platform where GPUs are NUMA nodes
    assert NvmlRig.open(sysfs_root=tmp_path).gpus[0].numa_node() == 1


def test_numa_node_minus_one_in_sysfs_is_unknown(fake: Any, tmp_path: Path) -> None:
    device_dir = tmp_path / "bus" / "pci" / "devices" / "0000:01:00.0"
    device_dir.mkdir(parents=True)
    (device_dir / "numa_node").write_text("-1\n")
    assert NvmlRig.open(sysfs_root=tmp_path).gpus[0].numa_node() is None


def test_numa_node_falls_back_to_nvml_without_sysfs(
    devices: list[FakeDevice], rig: NvmlRig
) -> None:
    devices[1].numa_node = 3
    assert rig.gpus[0].numa_node() == 3


def test_persistence_mode_read(devices: list[FakeDevice], rig: NvmlRig) -> None:
    assert rig.gpus[0].persistence_mode() is True
    devices[1].persistence = real_pynvml.NVML_FEATURE_DISABLED
    assert rig.gpus[0].persistence_mode() is False


def test_gpu_lost_mid_read(fake: tuple[FakeNvml, Any], rig: NvmlRig) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetTemperature", real_pynvml.NVML_ERROR_GPU_IS_LOST, model.devices[1])
    with pytest.raises(GpuLost) as caught:
        rig.gpus[0].temperature_c()
    message = str(caught.value)
    assert "GPU-aaaaaaaa-0000-0000-0000-000000000001" in message
    assert "00000000:01:00.0" in message
    assert "reset" in message
    assert "riser" in message
    # The other GPU still answers.
    assert rig.gpus[1].temperature_c() == 41.0


def test_unknown_nvml_error_names_the_function(fake: tuple[FakeNvml, Any], rig: NvmlRig) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetClockInfo", real_pynvml.NVML_ERROR_TIMEOUT)
    with pytest.raises(RigforgeError, match=r"nvmlDeviceGetClockInfo.*Timeout"):
        rig.gpus[0].sm_clock_mhz()


def test_invalid_argument_on_a_read_is_an_error_not_out_of_range(
    fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetFanSpeed", real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
    with pytest.raises(RigforgeError) as caught:
        rig.gpus[0].fan_speed_pct()
    assert not isinstance(caught.value, OutOfRange)


def test_snapshot_round_trips_to_json(rig: NvmlRig) -> None:
    document = json.loads(json.dumps(rig.snapshot().to_json()))
    assert [g["uuid"] for g in document["gpus"]] == [g.uuid for g in rig.gpus]
    assert document["gpus"][0]["power"]["limit_w"] == 300.0
    assert document["psus"] == []


def test_inventory_psus_and_map_pass_through(fake: Any) -> None:
    from tuning.core.power import Circuit, Psu

    psu = Psu(name="psu-a", rating_w=1600, circuit="c1")
    circuit = Circuit(name="c1", voltage_v=230, breaker_a=16)
    rig = NvmlRig.open(
        psus=[psu],
        circuits=[circuit],
        psu_map={"GPU-aaaaaaaa-0000-0000-0000-000000000001": "psu-a"},
    )
    snapshot = rig.snapshot()
    assert snapshot.psus == (psu,)
    assert snapshot.gpus[0].psu == "psu-a"
    assert snapshot.gpus[1].psu is None


# --------------------------------------------------------------------------------------------
# Actuators
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("power_limit_w", [149.0, 300.5, 0.0, -5.0])
def test_limit_outside_constraints(
    fake: tuple[FakeNvml, Any], rig: NvmlRig, power_limit_w: float
) -> None:
    _, mock = fake
    with pytest.raises(OutOfRange, match="150–300 W"):
        rig.gpus[0].set_power_limit_w(power_limit_w)
    mock.nvmlDeviceSetPowerManagementLimit.assert_not_called()


def test_set_is_noop_when_value_equal(fake: tuple[FakeNvml, Any], rig: NvmlRig) -> None:
    _, mock = fake
    assert rig.gpus[0].set_power_limit_w(300.0) == 300.0
    mock.nvmlDeviceSetPowerManagementLimit.assert_not_called()


def test_set_power_limit_sends_mw_and_reads_back(
    devices: list[FakeDevice], fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    _, mock = fake
    assert rig.gpus[0].set_power_limit_w(212.5) == 212.5
    mock.nvmlDeviceSetPowerManagementLimit.assert_called_once_with(devices[1], 212_500)
    assert rig.gpus[0].power_limit_w() == 212.5
    assert devices[0].limit_mw == 300_000  # the other GPU untouched


def test_no_permission_to_set_limit(
    devices: list[FakeDevice], fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    model, _ = fake
    model.fail("nvmlDeviceSetPowerManagementLimit", real_pynvml.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(NoPermission, match="run as root or via the rigforge-gpu-settings unit"):
        rig.gpus[0].set_power_limit_w(200.0)
    assert devices[1].limit_mw == 300_000


def test_driver_rejects_value_as_out_of_range(
    devices: list[FakeDevice], fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    # Constraints read earlier can be stale (a VBIOS or driver change); NVML then says
    # INVALID_ARGUMENT, which on a set means the value is out of range.
    model, _ = fake
    model.fail("nvmlDeviceSetPowerManagementLimit", real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
    with pytest.raises(OutOfRange):
        rig.gpus[0].set_power_limit_w(200.0)


def test_read_back_mismatch(devices: list[FakeDevice], rig: NvmlRig) -> None:
    devices[1].external_cap_mw = 250_000
    with pytest.raises(ReadBackMismatch, match=r"asked for a 280 W.*enforces 250 W"):
        rig.gpus[0].set_power_limit_w(280.0)


def test_read_back_within_one_watt_is_accepted(devices: list[FakeDevice], rig: NvmlRig) -> None:
    devices[1].external_cap_mw = 279_200
    assert rig.gpus[0].set_power_limit_w(280.0) == pytest.approx(279.2)


def test_set_not_supported_is_an_error_not_silence(
    fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    model, _ = fake
    model.fail("nvmlDeviceSetPowerManagementLimit", real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    with pytest.raises(RigforgeError, match="does not support"):
        rig.gpus[0].set_power_limit_w(200.0)


def test_set_persistence_acts_only_when_different(
    devices: list[FakeDevice], fake: tuple[FakeNvml, Any], rig: NvmlRig
) -> None:
    _, mock = fake
    assert rig.gpus[0].set_persistence_mode(True) is True
    mock.nvmlDeviceSetPersistenceMode.assert_not_called()
    assert rig.gpus[0].set_persistence_mode(False) is False
    mock.nvmlDeviceSetPersistenceMode.assert_called_once_with(
        devices[1], real_pynvml.NVML_FEATURE_DISABLED
    )
    assert devices[1].persistence == real_pynvml.NVML_FEATURE_DISABLED


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (real_pynvml.NVML_TOPOLOGY_INTERNAL, "PIX"),
        (real_pynvml.NVML_TOPOLOGY_SINGLE, "PIX"),
        (real_pynvml.NVML_TOPOLOGY_MULTIPLE, "PXB"),
        (real_pynvml.NVML_TOPOLOGY_HOSTBRIDGE, "PHB"),
        (real_pynvml.NVML_TOPOLOGY_NODE, "NODE"),
        (real_pynvml.NVML_TOPOLOGY_SYSTEM, "SYS"),
        (None, None),
        (12345, None),
    ],
)
def test_topology_level_names(level: int | None, name: str | None) -> None:
    assert topology_link_name(level) == name


def test_nvlinks_win_over_pcie_path() -> None:
    assert topology_link_name(real_pynvml.NVML_TOPOLOGY_SYSTEM, nvlinks=4) == "NV4"


def three_gpus() -> list[FakeDevice]:
    return [
        FakeDevice(bus_id="00000000:41:00.0", uuid="GPU-2"),
        FakeDevice(bus_id="00000000:01:00.0", uuid="GPU-0"),
        FakeDevice(bus_id="00000000:21:00.0", uuid="GPU-1"),
    ]


def test_topology_pcie_and_nvlink_bridge(fake: tuple[FakeNvml, Any]) -> None:
    model, _ = fake
    model.devices[:] = three_gpus()
    gpu2, gpu0, gpu1 = model.devices
    # GPU0 and GPU1 share an NVLink bridge with 4 links (RTX 3090 pairs report NV4).
    gpu0.nvlink_count = gpu1.nvlink_count = 4
    gpu0.nvlinks = {i: "00000000:21:00.0" for i in range(4)}
    gpu1.nvlinks = {i: "00000000:01:00.0" for i in range(4)}
    model.levels = {
        frozenset((gpu0.bus_id, gpu2.bus_id)): real_pynvml.NVML_TOPOLOGY_HOSTBRIDGE,
        frozenset((gpu1.bus_id, gpu2.bus_id)): real_pynvml.NVML_TOPOLOGY_SYSTEM,
    }
    rig = NvmlRig.open()
    assert {(t.a, t.b): t.link for t in rig.topology()} == {
        (0, 1): "NV4",
        (0, 2): "PHB",
        (1, 2): "SYS",
    }
    snapshot = rig.snapshot()
    assert snapshot.link(2, 1) == "SYS"


def test_topology_through_nvswitch(fake: tuple[FakeNvml, Any]) -> None:
    model, _ = fake
    model.devices[:] = three_gpus()[:2]
    for device in model.devices:
        device.nvlink_count = 18
        device.nvlinks = dict.fromkeys(range(18), "switch")  # H100 SXM: 18 links to NVSwitch
    rig = NvmlRig.open()
    assert [t.link for t in rig.topology()] == ["NV18"]


def test_topology_leaves_out_pairs_nvml_cannot_place(fake: tuple[FakeNvml, Any]) -> None:
    model, _ = fake
    model.fail("nvmlDeviceGetTopologyCommonAncestor", real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert NvmlRig.open().topology() == ()


# --------------------------------------------------------------------------------------------
# The table itself
# --------------------------------------------------------------------------------------------


def test_table_covers_the_errors_a_person_can_act_on() -> None:
    expected = {
        real_pynvml.NVML_ERROR_NOT_SUPPORTED: (None, RigforgeError),
        real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: (NvmlLibraryNotFound, NvmlLibraryNotFound),
        real_pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
            DriverLibraryMismatch,
            DriverLibraryMismatch,
        ),
        real_pynvml.NVML_ERROR_NO_PERMISSION: (NoPermission, NoPermission),
        real_pynvml.NVML_ERROR_GPU_IS_LOST: (GpuLost, GpuLost),
        real_pynvml.NVML_ERROR_INVALID_ARGUMENT: (RigforgeError, OutOfRange),
        real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED: (BackendUnavailable, BackendUnavailable),
    }
    for code, (on_read, on_set) in expected.items():
        rule = NVML_ERROR_TABLE[code]
        assert (rule.on_read, rule.on_set) == (on_read, on_set), code


def test_missing_function_in_bindings_returns_default(
    fake: tuple[FakeNvml, Any], monkeypatch: Any
) -> None:
    _, mock = fake
    monkeypatch.delattr(mock, "nvmlDeviceGetPowerUsage")
    assert nvml_call("nvmlDeviceGetPowerUsage", object(), default=-1) == -1


def test_autospec_mock_rejects_wrong_signatures(fake: tuple[FakeNvml, Any]) -> None:
    # Guards the guard: if the mock accepted any arguments, the tests above could pass with
    # calls the real bindings would reject.
    with pytest.raises(TypeError):
        nvml_call("nvmlDeviceGetPowerUsage")
