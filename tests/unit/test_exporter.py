"""``rigforge exporter`` on the simulated rig, the kernel-log reader and the serving probe.

Expected values come from outside the code under test: the reference rig file (PSU platform
draw, efficiency, breaker), the real kernel-log captures in ``tests/fixtures/real/kernel-log``,
the kmsg record format of the kernel's ``Documentation/ABI/testing/dev-kmsg``, and a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tuning.backends import RIGS_DIR, open_rig
from tuning.backends.sim import SimRig
from tuning.cli import cli
from tuning.errors import ConfigError
from tuning.exporter.collector import (
    ExpectedGpu,
    RigCollector,
    ServingTarget,
    exposition,
    http_health_probe,
)
from tuning.exporter.enforcement import EnforcementState
from tuning.exporter.metrics import METRICS
from tuning.exporter.sim_driver import SimDriver
from tuning.exporter.xid import FileSource, KernelLog, XidCounter, kernel_messages

REAL_LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "kernel-log"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: bytes) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def by_uuid(found: Samples, name: str, **match: str) -> dict[str, float]:
    return {
        labels["uuid"]: value
        for labels, value in found[name]
        if all(labels.get(k) == v for k, v in match.items())
    }


@pytest.fixture
def rig() -> SimRig:
    opened = open_rig("sim:reference")
    assert isinstance(opened, SimRig)
    return opened


# --------------------------------------------------------------------------------------------
# The simulated reference rig
# --------------------------------------------------------------------------------------------


def test_every_metric_family_is_exposed(rig: SimRig) -> None:
    text = exposition(RigCollector(rig, spec="sim:reference"))
    exposed = {line.split()[2] for line in text.decode().splitlines() if line.startswith("# TYPE")}
    assert exposed == {m.name for m in METRICS}


def test_psu_and_circuit_load_from_measured_draw(rig: SimRig) -> None:
    """reference.yaml: psu-a feeds GPUs 0-2 with platform_w 360, efficiency 0.92, on
    circuit-a (120 V x 15 A x 0.8 = 1440 W continuous). So load(psu-a) = 360 + the three
    draws, and circuit-a's wall load = that / 0.92."""
    doc = yaml.safe_load((RIGS_DIR / "reference.yaml").read_text())
    psu_a = next(p for p in doc["psus"] if p["name"] == "psu-a")
    on_a = {g["bus_id"].lower()[-12:] for g in doc["gpus"] if g["psu"] == "psu-a"}
    for gpu in rig.gpus:
        rig.set_workload(gpu.uuid, "decode")
    rig.clock.sleep(60)
    found = samples(exposition(RigCollector(rig, spec="sim:reference")))
    draws = [
        value
        for labels, value in found["rigforge_gpu_power_draw_watts"]
        if labels["pci_bus_id"] in on_a
    ]
    assert len(draws) == 3
    psu = {labels["psu"]: value for labels, value in found["rigforge_psu_load_watts"]}
    assert psu["psu-a"] == pytest.approx(psu_a["platform_w"] + sum(draws))
    circuit = {labels["circuit"]: value for labels, value in found["rigforge_circuit_load_watts"]}
    assert circuit["circuit-a"] == pytest.approx(psu["psu-a"] / psu_a["efficiency"])
    budget = {labels["circuit"]: v for labels, v in found["rigforge_circuit_budget_watts"]}
    assert budget["circuit-a"] == 120 * 15 * 0.8


def test_profile_cap_beside_the_enforced_limit(rig: SimRig) -> None:
    """Cap drift is visible: the profile says 250 W, the card enforces its 300 W default."""
    a6000 = rig.gpus[1]
    collector = RigCollector(rig, spec="sim:reference", caps_w={a6000.uuid: 250.0})
    found = samples(exposition(collector))
    assert by_uuid(found, "rigforge_gpu_power_profile_cap_watts") == {a6000.uuid: 250.0}
    # RTX A6000 datasheet: 300 W board power (the preset's default)
    assert by_uuid(found, "rigforge_gpu_power_enforced_limit_watts")[a6000.uuid] == 300.0


def test_missing_gpu_versus_inventory(rig: SimRig) -> None:
    """The inventory lists a seventh GPU at 0000:81:00.0 that is not on the bus."""
    expected = [
        ExpectedGpu(rig.gpus[0].uuid, None, "NVIDIA GeForce RTX 3090"),
        ExpectedGpu(None, "0000:81:00.0", "NVIDIA RTX A6000"),
    ]
    found = samples(exposition(RigCollector(rig, spec="sim:reference", expected=expected)))
    present = {(lab["uuid"], lab["pci_bus_id"]): v for lab, v in found["rigforge_gpu_present"]}
    assert present == {(rig.gpus[0].uuid, "0000:01:00.0"): 1.0, ("", "0000:81:00.0"): 0.0}


def test_model_label_from_the_plan(rig: SimRig) -> None:
    uuid = rig.gpus[3].uuid
    found = samples(
        exposition(RigCollector(rig, spec="sim:reference", models_of={uuid: "qwen3-32b"}))
    )
    models = {lab["uuid"]: lab["model"] for lab, _ in found["rigforge_gpu_up"]}
    assert models[uuid] == "qwen3-32b"
    assert {m for u, m in models.items() if u != uuid} == {""}


def test_sim_driven_hot_throttles_through_the_metrics(rig: SimRig) -> None:
    """A 45 °C room with decode on every card: within 15 virtual minutes some card sits at
    or above its thermal target with SW thermal slowdown active, and its counter grows."""
    clock = [0.0]
    driver = SimDriver(rig, speed=1.0, now_s=lambda: clock[0])
    driver.set_load("decode", 45.0)
    collector = RigCollector(rig, spec="sim:reference", before_scrape=driver)
    exposition(collector)
    clock[0] = 900.0
    found = samples(exposition(collector))
    hot = by_uuid(found, "rigforge_gpu_clock_event_active", reason="sw_thermal_slowdown")
    throttling = {uuid for uuid, value in hot.items() if value == 1}
    assert throttling
    temps = by_uuid(found, "rigforge_gpu_temperature_celsius")
    targets = by_uuid(found, "rigforge_gpu_temperature_threshold_celsius", threshold="target")
    for uuid in throttling:
        assert temps[uuid] >= targets.get(uuid, 0)
    seconds = by_uuid(found, "rigforge_gpu_clock_event_seconds_total", reason="sw_thermal_slowdown")
    assert all(seconds[uuid] > 0 for uuid in throttling)


def test_sim_driver_rereads_caps_set_behind_its_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rigforge apply`` in another process changes the simulated card's cap; the exporter's
    next scrape shows the new enforced limit without a restart."""
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path))
    from tuning.apply.actuator import open_tuning_rig

    exporter_rig, actuator = open_tuning_rig("sim:reference")
    assert isinstance(exporter_rig, SimRig)
    collector = RigCollector(
        exporter_rig, spec="sim:reference", before_scrape=SimDriver(exporter_rig, actuator)
    )
    uuid = exporter_rig.gpus[2].uuid
    before = by_uuid(samples(exposition(collector)), "rigforge_gpu_power_enforced_limit_watts")
    _other_rig, other = open_tuning_rig("sim:reference")
    other.set_cap(uuid, 300.0)
    after = by_uuid(samples(exposition(collector)), "rigforge_gpu_power_enforced_limit_watts")
    assert before[uuid] == 450.0  # RTX 4090 default board power
    assert after[uuid] == 300.0


def test_enforcement_state_is_reported(rig: SimRig, tmp_path: Path) -> None:
    state = tmp_path / "enforce.json"
    uuid = rig.gpus[0].uuid
    state.write_text(json.dumps({"reapplied": {uuid: 2}, "last_run_unix_s": 1764650000}))
    assert EnforcementState.load(state).reapplied == {uuid: 2}
    found = samples(exposition(RigCollector(rig, spec="sim:reference", enforcement_state=state)))
    assert found["rigforge_cap_enforcement_reapplied_total"] == [({"uuid": uuid}, 2.0)]
    assert found["rigforge_cap_enforcement_last_run_timestamp_seconds"] == [({}, 1764650000.0)]


def test_malformed_enforcement_state_is_an_error_metric(rig: SimRig, tmp_path: Path) -> None:
    state = tmp_path / "enforce.json"
    state.write_text("{not json")
    found = samples(exposition(RigCollector(rig, spec="sim:reference", enforcement_state=state)))
    errors = {lab["source"]: v for lab, v in found["rigforge_exporter_errors_total"]}
    assert errors["enforcement"] == 1.0


# --------------------------------------------------------------------------------------------
# The kernel log
# --------------------------------------------------------------------------------------------


def test_real_xid_lines_are_counted_per_gpu_and_code() -> None:
    """gpud PR #46: three Xid 13 and one Xid 109 on PCI:0000:cb:00 (function 0)."""
    counter = XidCounter()
    counter.feed_all(kernel_messages((REAL_LOGS / "xid-13-109-dmesg-ctime.txt").read_text()))
    assert dict(counter.xids) == {("0000:cb:00.0", 13): 3, ("0000:cb:00.0", 109): 1}
    assert sum(counter.fell_off.values()) == 0


def test_xid_79_line_is_an_xid_not_a_bare_fall() -> None:
    counter = XidCounter()
    counter.feed_all(kernel_messages((REAL_LOGS / "xid-79-fallen-off-bus.txt").read_text()))
    assert dict(counter.xids) == {("0000:44:00.0", 79): 1}
    assert sum(counter.fell_off.values()) == 0


def test_fallen_off_the_bus_without_xid_over_three_lines() -> None:
    """NVSentinel #155: the bus id is on the first of three lines; no Xid at all."""
    counter = XidCounter()
    counter.feed_all(kernel_messages((REAL_LOGS / "fallen-off-bus-no-xid-570.txt").read_text()))
    assert dict(counter.fell_off) == {"0000:b3:00.0": 1}
    assert sum(counter.xids.values()) == 0


def test_kmsg_records_headers_dictionary_and_escaped_newlines() -> None:
    """dev-kmsg ABI: ``prio,seq,usec,flags;message``, dictionary lines start with a space,
    a newline inside a message is written ``\\x0a``."""
    chunk = (
        "4,1201,1843308145,-;NVRM: The NVIDIA GPU 0000:b3:00.0\\x0aNVRM: (PCI ID: 10de:26b5) "
        "installed in this system has\\x0aNVRM: fallen off the bus and is not responding to "
        "commands.\n SUBSYSTEM=pci\n DEVICE=+pci:0000:b3:00.0\n"
        "4,1202,1843400000,-;NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus\n"
    )
    lines = kernel_messages(chunk)
    assert lines[0] == "NVRM: The NVIDIA GPU 0000:b3:00.0"
    assert len(lines) == 4
    counter = XidCounter(["00000000:44:00.0"])
    counter.feed_all(lines)
    assert counter.fell_off["0000:b3:00.0"] == 1
    assert counter.xids[("0000:44:00.0", 79)] == 1
    assert counter.xids[("0000:44:00.0", 48)] == 0  # watched codes exist at 0


def _kmsg_readable() -> bool:
    try:
        FileSource(Path("/dev/kmsg")).poll()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _kmsg_readable(), reason="/dev/kmsg not readable (dmesg_restrict, no root)")
def test_real_dev_kmsg_is_read_without_blocking() -> None:
    """This machine's own kernel log: records come back as bare messages (no
    ``prio,seq,usec,flags;`` header), and a second poll returns at once (non-blocking)."""
    source = FileSource(Path("/dev/kmsg"))
    lines = source.poll()
    assert lines
    assert not any(re.match(r"^\d+,\d+,\d+,", line) for line in lines)
    second = threading.Thread(target=source.poll, daemon=True)
    second.start()
    second.join(timeout=30)  # a blocking read of kmsg would wait for the next kernel message
    assert not second.is_alive()
    source.close()


def test_kernel_log_file_is_followed_and_exposed(rig: SimRig, tmp_path: Path) -> None:
    """Lines appended after the first scrape are counted by the next one (no restart)."""
    log_path = tmp_path / "kern.log"
    log_path.write_text("")
    kernel = KernelLog(FileSource(log_path), XidCounter([g.pci_bus_id for g in rig.gpus]))
    collector = RigCollector(rig, spec="sim:reference", kernel_log=kernel)
    first = samples(exposition(collector))
    key = {"pci_bus_id": "0000:21:00.0", "code": "79"}
    assert (key, 0.0) in first["rigforge_xid_events_total"]
    with log_path.open("a") as handle:
        handle.write("[ 99.1] NVRM: Xid (PCI:0000:21:00): 79, GPU has fallen off the bus\n")
    second = samples(exposition(collector))
    assert (key, 1.0) in second["rigforge_xid_events_total"]
    assert second["rigforge_kernel_log_up"] == [({"source": "file"}, 1.0)]


def test_unreadable_kernel_log_is_a_metric(rig: SimRig, tmp_path: Path) -> None:
    kernel = KernelLog(FileSource(tmp_path / "absent"), XidCounter())
    found = samples(exposition(RigCollector(rig, spec="sim:reference", kernel_log=kernel)))
    assert found["rigforge_kernel_log_up"] == [({"source": "file"}, 0.0)]
    errors = {lab["source"]: v for lab, v in found["rigforge_exporter_errors_total"]}
    assert errors["kernel_log"] == 1.0


# --------------------------------------------------------------------------------------------
# Serving units
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def engine() -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 answering /health 200, like llama-server when ready."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


def test_serving_up_and_down(rig: SimRig, engine: int) -> None:
    targets = [
        ServingTarget("qwen3-32b", "rigforge-serve-qwen3-32b.service", "llama.cpp", engine),
        ServingTarget("gone", "rigforge-serve-gone.service", "vllm", _free_port()),
    ]
    collector = RigCollector(
        rig, spec="sim:reference", serving=targets, probe=http_health_probe(timeout_s=2.0)
    )
    found = samples(exposition(collector))
    up = {lab["model"]: v for lab, v in found["rigforge_serving_up"]}
    assert up == {"qwen3-32b": 1.0, "gone": 0.0}
    info = {lab["model"]: lab["metrics_url"] for lab, _ in found["rigforge_serving_info"]}
    assert info["qwen3-32b"] == f"http://127.0.0.1:{engine}/metrics"


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def write_profile(path: Path, caps_w: dict[int, float]) -> dict[int, str]:
    """A minimal valid profile for sim:reference with caps by GPU index; returns their UUIDs."""
    rig = open_rig("sim:reference")
    gpus = []
    for index, cap in caps_w.items():
        gpu = rig.gpus[index]
        c = gpu.power_constraints()
        gpus.append(
            {
                "uuid": gpu.uuid,
                "name": gpu.name,
                "pci_bus_id": gpu.pci_bus_id,
                "cap_w": cap,
                "stock_cap_w": c.default_w,
                "min_w": c.min_w,
                "max_w": c.max_w,
                "natural_draw_w": c.default_w,
                "throughput_rel": 0.99,
                "tokens_per_joule": 0.1,
                "probes": 3,
            }
        )
    profile = {
        "schema_version": 1,
        "created_at": "2026-01-01T00:00:00+00:00",
        "rig": {
            "name": "reference",
            "spec": "sim:reference",
            "fingerprint": rig.snapshot().fingerprint(),
        },
        "workload": "decode",
        "policy": "efficiency",
        "floor": 0.95,
        "gpus": gpus,
        "validation": {
            "passed": True,
            "sim_seconds": 1800,
            "throttle_events": 0,
            "max_psu_load_ratio": 0.8,
        },
    }
    path.write_text(yaml.safe_dump(profile))
    return {index: rig.gpus[index].uuid for index in caps_w}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state dir: simulated caps persisted by one command are seen by the next."""
    directory = tmp_path / "state"
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(directory))
    return directory


def test_once_prints_a_scrape_with_profile_caps(tmp_path: Path, state: Path) -> None:
    path = tmp_path / "profile.yaml"
    uuid = write_profile(path, {0: 280})[0]
    result = CliRunner().invoke(cli, ["exporter", "--once", "--profile", str(path)])
    assert result.exit_code == 0, result.output
    found = samples(result.output.encode())
    assert by_uuid(found, "rigforge_gpu_power_profile_cap_watts") == {uuid: 280.0}
    assert by_uuid(found, "rigforge_gpu_present") == {uuid: 1.0}


def test_enforcement_chain_on_the_sim_rig(tmp_path: Path, state: Path) -> None:
    """The power.enforce timer's command: the first run puts the profile's caps on (psu-a's
    three cards start at their defaults: 350 + 300 + 450 W, beyond circuit-a's budget, so the
    profile caps all three), a second finds nothing reverted, then the RTX 3090's cap put back
    to its 350 W default behind rigforge's back is re-applied and counted; the exporter shows
    the drift, then the count."""
    profile = tmp_path / "profile.yaml"
    record = state / "enforce.json"
    uuids = write_profile(profile, {0: 280, 1: 250, 2: 300})
    uuid = uuids[0]
    apply = ["apply", str(profile), "--rig", "sim:reference", "--record", str(record)]
    runner = CliRunner()

    def scrape() -> Samples:
        result = runner.invoke(
            cli,
            ["exporter", "--once", "--profile", str(profile), "--enforcement-state", str(record)],
        )
        assert result.exit_code == 0, result.output
        return samples(result.output.encode())

    assert by_uuid(scrape(), "rigforge_gpu_power_enforced_limit_watts")[uuid] == 350.0
    first = {u: 1 for u in uuids.values()}
    assert runner.invoke(cli, apply).exit_code == 0
    assert json.loads(record.read_text())["reapplied"] == first
    assert runner.invoke(cli, apply).exit_code == 0
    assert json.loads(record.read_text())["reapplied"] == first
    assert oct(record.stat().st_mode & 0o777) == "0o644"
    from tuning.apply.actuator import open_tuning_rig

    _rig, other = open_tuning_rig("sim:reference")
    other.set_cap(uuid, 350.0)  # reverted behind rigforge's back
    assert by_uuid(scrape(), "rigforge_gpu_power_enforced_limit_watts")[uuid] == 350.0
    assert runner.invoke(cli, apply).exit_code == 0
    found = scrape()
    assert by_uuid(found, "rigforge_gpu_power_enforced_limit_watts")[uuid] == 280.0
    counts = {lab["uuid"]: v for lab, v in found["rigforge_cap_enforcement_reapplied_total"]}
    assert counts == {**{u: 1.0 for u in uuids.values()}, uuid: 2.0}


def test_textfile_for_node_exporter(tmp_path: Path) -> None:
    out = tmp_path / "rigforge.prom"
    result = CliRunner().invoke(cli, ["exporter", "--textfile", str(out)])
    assert result.exit_code == 0, result.output
    assert "rigforge_gpu_up{" in out.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("listen", ["localhost:9835", "127.0.0.1", "127.0.0.1:0", "1.2.3:99"])
def test_listen_must_be_ip_and_port(listen: str) -> None:
    result = CliRunner().invoke(cli, ["exporter", "--once", "--listen", listen])
    assert result.exit_code == 2
    assert "--listen" in result.output


def test_unknown_sim_workload_is_refused() -> None:
    result = CliRunner().invoke(
        cli, ["exporter", "--once", "--rig", "sim:reference", "--sim-workload", "mining"]
    )
    assert result.exit_code != 0
    assert "unknown sim workload 'mining'" in str(result.exception or result.output)


def test_serves_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real command: a process listening on 127.0.0.1, /metrics over HTTP, SIGTERM exits 0."""
    port = _free_port()
    env = {**os.environ, "RIGFORGE_STATE_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tuning.cli", "exporter", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200
        assert "rigforge_gpu_power_draw_watts{" in response.text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_unreadable_sim_state_is_an_error_metric_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hardened unit cannot create the state dir (read-only /var/lib): the simulated rig's
    persisted caps cannot be read, the scrape still comes back, with an error counted."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(blocker / "state"))
    result = CliRunner().invoke(cli, ["exporter", "--once"])
    assert result.exit_code == 0, result.output
    found = samples(result.stdout.encode())  # stderr says why
    errors = {lab["source"]: v for lab, v in found["rigforge_exporter_errors_total"]}
    assert errors["nvml"] == 1.0
    assert len(found["rigforge_gpu_up"]) == 6


def test_sim_control_speed_runs_virtual_time_faster(tmp_path: Path) -> None:
    """``"speed": 60`` in the control file, read at a scrape, paces the intervals after it:
    scrapes 2 s of wall time apart advance the simulated rig by 2 s, then by 120 s (2 × 60,
    hand-worked)."""
    rig = open_rig("sim:reference")
    assert isinstance(rig, SimRig)
    wall = iter([100.0, 102.0, 104.0])
    control = tmp_path / "control.json"
    driver = SimDriver(rig, control=control, now_s=lambda: next(wall))
    driver()
    start = rig.clock.now_s()
    control.write_text(json.dumps({"speed": 60}))
    driver()
    assert rig.clock.now_s() - start == pytest.approx(2.0)
    driver()
    assert rig.clock.now_s() - start == pytest.approx(2.0 + 2.0 * 60)


@pytest.mark.parametrize("speed", [0, -1, 601, "fast"])
def test_sim_control_refuses_a_speed_out_of_range(tmp_path: Path, speed: object) -> None:
    rig = open_rig("sim:reference")
    assert isinstance(rig, SimRig)
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"speed": speed}))
    with pytest.raises(ConfigError, match="speed"):
        SimDriver(rig, control=control)()


def test_a_sim_rigs_caps_are_readable_by_the_unprivileged_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """root's ``rigforge apply`` writes the simulated "hardware" state; the exporter runs as the
    service user and must read it, as anyone reads a real card's limit: mode 0644 (journals,
    which the same helper writes, keep mkstemp's 0600)."""
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path))
    from tuning.apply.actuator import open_tuning_rig
    from tuning.apply.sim_state import sim_state_path

    rig, actuator = open_tuning_rig("sim:reference")
    actuator.set_cap(rig.gpus[0].uuid, 300.0)
    assert sim_state_path("sim:reference").stat().st_mode & 0o777 == 0o644
