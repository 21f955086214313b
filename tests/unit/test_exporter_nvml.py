"""The exporter on the NVML backend, with ``pynvml`` replaced by an autospec'd mock.

The fake is :class:`tests.unit.test_nvml.FakeNvml` extended with the reads only the exporter
makes (memory clock, PCIe replays, ECC, clock-event duration field values), each answering in
NVML's own types and units (ns, bytes, the real ``c_nvmlFieldValue_t``), so the backend's
conversions and its one error table are what is tested.
"""

# ruff: noqa: N802

from __future__ import annotations

from pathlib import Path
from typing import Any

import pynvml as real_pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_nvml import FakeDevice, FakeNvml, nvml_error, route_to
from tuning.backends.base import ClockEventReason, EccCounts
from tuning.backends.nvml import NvmlRig
from tuning.exporter.collector import ExpectedGpu, RigCollector, exposition
from tuning.exporter.metrics import METRICS

NS_PER_S = 1_000_000_000


class ExporterFakeNvml(FakeNvml):
    """FakeNvml plus the exporter's reads. Per device: ``mem_clock_mhz``, ``replays``,
    ``ecc`` (None: not supported; else (enabled, corrected, uncorrected)), ``event_ns``."""

    def nvmlDeviceGetClockInfo(self, h: FakeDevice, type: int) -> int:
        if type == real_pynvml.NVML_CLOCK_MEM:
            return getattr(h, "mem_clock_mhz", 10501)
        return super().nvmlDeviceGetClockInfo(h, type)

    def nvmlDeviceGetPcieReplayCounter(self, h: FakeDevice) -> int:
        return getattr(h, "replays", 0)

    def nvmlDeviceGetEccMode(self, h: FakeDevice) -> list[int]:
        ecc = getattr(h, "ecc", None)
        if ecc is None:
            raise nvml_error(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
        state = real_pynvml.NVML_FEATURE_ENABLED if ecc[0] else real_pynvml.NVML_FEATURE_DISABLED
        return [state, state]

    def nvmlDeviceGetTotalEccErrors(self, h: FakeDevice, errorType: int, counterType: int) -> int:  # noqa: N803
        assert counterType == real_pynvml.NVML_VOLATILE_ECC
        _, corrected, uncorrected = h.ecc  # type: ignore[attr-defined]
        return (
            corrected if errorType == real_pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else uncorrected
        )

    def nvmlDeviceGetFieldValues(self, h: FakeDevice, fieldIds: list[int]) -> Any:  # noqa: N803
        """Real ``c_nvmlFieldValue_t`` array; a field the card lacks carries its own error."""
        event_ns: dict[int, int] = getattr(h, "event_ns", {})
        values = (real_pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for i, field_id in enumerate(fieldIds):
            values[i].fieldId = field_id
            if field_id in event_ns:
                values[i].nvmlReturn = real_pynvml.NVML_SUCCESS
                values[i].value.ullVal = event_ns[field_id]
            else:
                values[i].nvmlReturn = real_pynvml.NVML_ERROR_NOT_SUPPORTED
        return values


def _install(mocker: Any, nvml_spec: Any, devices: list[FakeDevice]) -> ExporterFakeNvml:
    nvml_spec.reset_mock(return_value=True, side_effect=True)
    mock = mocker.patch("tuning.backends.nvml.pynvml", new=nvml_spec)
    model = ExporterFakeNvml(devices)
    route_to(mock, model)
    return model


@pytest.fixture(scope="module")
def nvml_spec() -> Any:
    from unittest.mock import create_autospec

    return create_autospec(real_pynvml)


def eight_gpus() -> list[FakeDevice]:
    """Eight RTX 6000 Ada-like cards on buses 0x01…0x08, all busy at gen 4 x16."""
    devices = []
    for i in range(8):
        device = FakeDevice(
            bus_id=f"00000000:{i + 1:02X}:00.0",
            uuid=f"GPU-{i:08x}-0000-0000-0000-000000000000",
            utilization_pct=97,
            pcie=(4, 4, 16, 16),
            power_usage_mw=281_500,
            clock_event_mask=0x4,
        )
        device.event_ns = {  # type: ignore[attr-defined]
            real_pynvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP: 12 * NS_PER_S,
            real_pynvml.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: 3 * NS_PER_S,
        }
        devices.append(device)
    return devices


def samples(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text → {sample name: [(labels, value)]}, parsed by prometheus_client."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def families(text: bytes) -> set[str]:
    return {line.split()[2] for line in text.decode().splitlines() if line.startswith("# TYPE")}


def test_new_reads_convert_nvml_units(mocker: Any, nvml_spec: Any, tmp_path: Path) -> None:
    """Field values in ns become seconds (12e9 ns = 12 s); mem clock stays MHz; ECC counts."""
    devices = eight_gpus()[:1]
    devices[0].replays = 7  # type: ignore[attr-defined]
    devices[0].ecc = (True, 5, 0)  # type: ignore[attr-defined]
    _install(mocker, nvml_spec, devices)
    gpu = NvmlRig.open(sysfs_root=tmp_path).gpus[0]
    assert gpu.memory_clock_mhz() == 10501.0
    assert gpu.pcie_replay_count() == 7
    assert gpu.ecc() == EccCounts(enabled=True, corrected_volatile=5, uncorrected_volatile=0)
    assert gpu.clock_event_durations_s() == {
        ClockEventReason.SW_POWER_CAP: 12.0,
        ClockEventReason.SW_THERMAL_SLOWDOWN: 3.0,
    }


def test_ecc_not_supported_on_geforce_is_none(mocker: Any, nvml_spec: Any, tmp_path: Path) -> None:
    _install(mocker, nvml_spec, eight_gpus()[:1])
    assert NvmlRig.open(sysfs_root=tmp_path).gpus[0].ecc() is None


def test_ecc_disabled_has_no_counts(mocker: Any, nvml_spec: Any, tmp_path: Path) -> None:
    devices = eight_gpus()[:1]
    devices[0].ecc = (False, 0, 0)  # type: ignore[attr-defined]
    _install(mocker, nvml_spec, devices)
    assert NvmlRig.open(sysfs_root=tmp_path).gpus[0].ecc() == EccCounts(enabled=False)


def test_field_values_missing_from_old_driver_is_empty(
    mocker: Any, nvml_spec: Any, tmp_path: Path
) -> None:
    """nvmlDeviceGetFieldValues absent from the driver (FUNCTION_NOT_FOUND) → no counters."""
    model = _install(mocker, nvml_spec, eight_gpus()[:1])
    model.fail("nvmlDeviceGetFieldValues", real_pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    assert NvmlRig.open(sysfs_root=tmp_path).gpus[0].clock_event_durations_s() == {}


def test_eight_gpus_every_metric_present(mocker: Any, nvml_spec: Any, tmp_path: Path) -> None:
    """8 healthy ECC cards with a profile: every per-GPU metric has a series for each of the 8
    UUIDs (only the read-error counter stays empty), draw 281.5 W each (281 500 mW)."""
    devices = eight_gpus()
    for device in devices:
        device.ecc = (True, 0, 0)  # type: ignore[attr-defined]
    _install(mocker, nvml_spec, devices)
    rig = NvmlRig.open(sysfs_root=tmp_path)
    collector = RigCollector(
        rig,
        spec="nvml",
        caps_w={d.uuid: 250.0 for d in devices},
        expected=[ExpectedGpu(d.uuid, None) for d in devices],
    )
    text = exposition(collector)
    assert families(text) == {m.name for m in METRICS}
    found = samples(text)
    for metric in METRICS:
        if "uuid" not in metric.labels or metric.name.startswith("rigforge_cap_enforcement"):
            continue
        uuids = {labels["uuid"] for labels, _ in found.get(metric.name, [])}
        expected = (
            set() if metric.name == "rigforge_gpu_read_errors_total" else {d.uuid for d in devices}
        )
        assert uuids == expected, metric.name
    draws = found["rigforge_gpu_power_draw_watts"]
    assert [value for _, value in draws] == [281.5] * 8
    assert {labels["pci_bus_id"] for labels, _ in draws} == {f"0000:0{i}:00.0" for i in range(1, 9)}
    active = {
        (labels["uuid"], labels["reason"])
        for labels, value in found["rigforge_gpu_clock_event_active"]
        if value == 1
    }
    assert {reason for _, reason in active} == {"sw_power_cap"}  # mask 0x4
    cap_s = [
        v
        for labels, v in found["rigforge_gpu_clock_event_seconds_total"]
        if labels["reason"] == "sw_power_cap"
    ]
    assert cap_s == [12.0] * 8


def test_gpu_lost_mid_scrape_is_a_metric_not_an_error(
    mocker: Any, nvml_spec: Any, tmp_path: Path
) -> None:
    """GPU 4 falls off the bus between its power and its temperature reads (Xid 79 style:
    NVML_ERROR_GPU_IS_LOST). The scrape completes: up 0 and a GpuLost count for that GPU,
    every family still exposed, the seven others fully reported."""
    devices = eight_gpus()
    model = _install(mocker, nvml_spec, devices)
    rig = NvmlRig.open(sysfs_root=tmp_path)
    collector = RigCollector(rig, spec="nvml")
    healthy = samples(exposition(collector))
    model.fail("nvmlDeviceGetTemperature", real_pynvml.NVML_ERROR_GPU_IS_LOST, devices[4])
    text = exposition(collector)
    assert families(text) == {m.name for m in METRICS}
    found = samples(text)
    lost = devices[4].uuid
    up = {labels["uuid"]: value for labels, value in found["rigforge_gpu_up"]}
    assert up == {d.uuid: (0.0 if d.uuid == lost else 1.0) for d in devices}
    errors = found["rigforge_gpu_read_errors_total"]
    assert [(labels["uuid"], labels["error"], value) for labels, value in errors] == [
        (lost, "GpuLost", 1.0)
    ]
    others = {d.uuid for d in devices} - {lost}
    for name, series in healthy.items():
        if "uuid" in series[0][0] and name not in {"rigforge_gpu_up"}:
            # every series the healthy scrape had, for the seven others; none for the lost one
            assert {labels["uuid"] for labels, _ in found[name]} == others, name
    nvml_errors = [
        v for labels, v in found["rigforge_exporter_errors_total"] if labels["source"] == "nvml"
    ]
    assert nvml_errors == [1.0]


def test_driver_reload_is_survived_by_reopening(
    mocker: Any, nvml_spec: Any, tmp_path: Path
) -> None:
    """After a driver reload the old handles answer NVML_ERROR_UNINITIALIZED: that scrape
    reports both GPUs down; the next one re-opens NVML (at most once per 30 s while reads keep
    failing) and, once the driver answers, reports them up again — no exporter restart."""
    from tuning.errors import BackendUnavailable

    devices = eight_gpus()[:2]
    model = _install(mocker, nvml_spec, devices)
    rig = NvmlRig.open(sysfs_root=tmp_path)
    clock = [0.0]
    opened: list[NvmlRig] = []

    def reopen() -> NvmlRig:
        fresh = NvmlRig.open(sysfs_root=tmp_path)
        opened.append(fresh)
        return fresh

    collector = RigCollector(rig, spec="nvml", reopen=reopen, now_s=lambda: clock[0])
    model.fail("nvmlDeviceGetPowerUsage", real_pynvml.NVML_ERROR_UNINITIALIZED)
    down = samples(exposition(collector))
    assert [v for _, v in down["rigforge_gpu_up"]] == [0.0, 0.0]
    assert {lab["error"] for lab, _ in down["rigforge_gpu_read_errors_total"]} == {
        BackendUnavailable.__name__
    }
    clock[0] = 5.0  # still reloading: re-opened once, still down
    assert [v for _, v in samples(exposition(collector))["rigforge_gpu_up"]] == [0.0, 0.0]
    assert len(opened) == 1
    clock[0] = 20.0  # within 30 s of the last try: not re-opened again
    exposition(collector)
    assert len(opened) == 1
    model.failures.clear()  # the driver is back
    clock[0] = 40.0
    up = samples(exposition(collector))
    assert len(opened) == 2
    assert collector.rig is opened[1]
    assert [v for _, v in up["rigforge_gpu_up"]] == [1.0, 1.0]
