"""Read-only checks of the NVML backend against this machine's GPUs (``pytest -m gpu tests/gpu``).

Each check is something every healthy NVIDIA GPU satisfies, so a failure means either the
backend misreads NVML or the box has a real problem worth a look. No setting is changed
(the conftest makes every NVML setter fail the test).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tuning.backends.nvml import UNDER_LOAD_UTILIZATION_PCT, NvmlRig
from tuning.core.bus import normalize_bus_id
from tuning.core.pcie import LINK_ORDER, link_rank

pytestmark = pytest.mark.gpu

#: Slack for limits NVML reports in mW but boards round to their own steps. Units: W.
LIMIT_SLACK_W = 1.0


def test_at_least_one_gpu(nvml_rig: NvmlRig) -> None:
    assert len(nvml_rig.gpus) >= 1


def test_uuids_unique_and_gpu_prefixed(nvml_rig: NvmlRig) -> None:
    uuids = [gpu.uuid for gpu in nvml_rig.gpus]
    assert len(set(uuids)) == len(uuids)
    assert all(uuid.startswith("GPU-") for uuid in uuids), uuids


def test_gpus_in_pci_bus_order(nvml_rig: NvmlRig) -> None:
    bus_ids = [normalize_bus_id(gpu.pci_bus_id) for gpu in nvml_rig.gpus]
    assert bus_ids == sorted(bus_ids)
    assert [gpu.index for gpu in nvml_rig.gpus] == list(range(len(bus_ids)))


def test_vram_reported(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        assert gpu.memory_total_mib >= 1024, (gpu.uuid, gpu.memory_total_mib)


def test_power_constraints_ordered(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        c = gpu.power_constraints()
        assert 0 < c.min_w <= c.default_w <= c.max_w, (gpu.uuid, c)


def test_power_limit_within_constraints(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        c = gpu.power_constraints()
        limit_w = gpu.power_limit_w()
        enforced_w = gpu.enforced_power_limit_w()
        assert c.min_w - LIMIT_SLACK_W <= limit_w <= c.max_w + LIMIT_SLACK_W, (gpu.uuid, limit_w)
        assert 0 < enforced_w <= c.max_w + LIMIT_SLACK_W, (gpu.uuid, enforced_w)


def test_power_draw_plausible(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        draw_w = gpu.power_draw_w()
        if draw_w is None:
            continue  # board without a power sensor
        # Transients exceed the cap briefly; twice the maximum would be a unit error.
        assert 0 < draw_w < 2 * gpu.power_constraints().max_w, (gpu.uuid, draw_w)


def test_temperature_plausible(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        temp_c = gpu.temperature_c()
        assert temp_c is not None, gpu.uuid
        assert 0 < temp_c < 110, (gpu.uuid, temp_c)


def test_thresholds_ordered(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        t = gpu.thresholds()
        ladder = [v for v in (t.target_c, t.slowdown_c, t.shutdown_c) if v is not None]
        assert ladder == sorted(ladder), (gpu.uuid, t)
        if t.max_operating_c is not None and t.shutdown_c is not None:
            assert t.max_operating_c <= t.shutdown_c, (gpu.uuid, t)
        assert all(0 < v <= 130 for v in ladder), (gpu.uuid, t)


def test_pcie_current_not_above_max(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        link = gpu.pcie_link()
        if None in (link.gen_current, link.gen_max, link.width_current, link.width_max):
            continue  # virtualised GPUs may hide the link
        assert 1 <= link.gen_current <= link.gen_max, (gpu.uuid, link)
        assert 1 <= link.width_current <= link.width_max <= 16, (gpu.uuid, link)


def test_clocks_and_utilization_in_range(nvml_rig: NvmlRig) -> None:
    for gpu in nvml_rig.gpus:
        sm_mhz, max_mhz = gpu.sm_clock_mhz(), gpu.max_sm_clock_mhz()
        if sm_mhz is not None and max_mhz is not None:
            assert 0 < sm_mhz <= max_mhz, (gpu.uuid, sm_mhz, max_mhz)
        utilization = gpu.utilization_pct()
        assert utilization is None or 0 <= utilization <= 100
        gpu.clock_event_reasons()  # decodes without error; the set itself varies


def test_affinity_within_host(nvml_rig: NvmlRig) -> None:
    cpu_count = os.cpu_count() or 1
    for gpu in nvml_rig.gpus:
        cpus = gpu.cpu_list()
        if cpus is not None:
            assert all(0 <= cpu < cpu_count for cpu in cpus), (gpu.uuid, cpus)
        node = gpu.numa_node()
        if node is not None:
            assert Path(f"/sys/devices/system/node/node{node}").is_dir(), (gpu.uuid, node)


def test_energy_counter_monotonic(nvml_rig: NvmlRig) -> None:
    gpu = nvml_rig.gpus[0]
    first_j = gpu.total_energy_j()
    if first_j is None:
        pytest.skip(f"{gpu.name} has no energy counter (before Volta)")
    time.sleep(0.2)
    second_j = gpu.total_energy_j()
    assert second_j is not None
    assert second_j >= first_j


def test_topology_names_each_pair_once(nvml_rig: NvmlRig) -> None:
    links = nvml_rig.topology()
    pairs = [(link.a, link.b) for link in links]
    assert len(set(pairs)) == len(pairs)
    n = len(nvml_rig.gpus)
    assert all(0 <= a < b < n for a, b in pairs)
    assert all(link_rank(link.link) < len(LINK_ORDER) for link in links), links


def test_snapshot_round_trips_to_json(nvml_rig: NvmlRig) -> None:
    snapshot = nvml_rig.snapshot()
    document = json.loads(json.dumps(snapshot.to_json()))
    assert [g["uuid"] for g in document["gpus"]] == [g.uuid for g in nvml_rig.gpus]
    assert document["fingerprint"] == nvml_rig.snapshot().fingerprint()


def test_short_load_is_seen(nvml_rig: NvmlRig) -> None:
    """A few seconds of matmul on one GPU: NVML sees it busy, drawing more, with a live link."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    props = torch.cuda.get_device_properties(0)
    uuid_suffix = str(getattr(props, "uuid", "")).removeprefix("GPU-")
    matches = [g for g in nvml_rig.gpus if uuid_suffix and g.uuid.endswith(uuid_suffix)]
    if not matches:
        pytest.skip("cannot tell which NVML GPU is cuda:0 (torch too old to report its UUID)")
    gpu = matches[0]
    energy_before_j = gpu.total_energy_j()

    a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.float16)
    deadline = time.monotonic() + 4.0
    peak_util, link_under_load = 0.0, None
    while time.monotonic() < deadline:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        utilization = gpu.utilization_pct() or 0.0
        if utilization > peak_util:
            peak_util, link_under_load = utilization, gpu.pcie_link().under_load
    torch.cuda.synchronize()

    assert peak_util >= UNDER_LOAD_UTILIZATION_PCT, peak_util
    assert link_under_load is True
    energy_after_j = gpu.total_energy_j()
    if energy_before_j is not None and energy_after_j is not None:
        assert energy_after_j > energy_before_j
