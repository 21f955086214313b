"""The chain without systemd: the real exporter process, a real Prometheus, the shipped rules.

``rigforge exporter`` serves the simulated reference rig on 127.0.0.1; Debian's ``prometheus``
binary scrapes it every second with the deploy's scrape config and evaluates the rules; the
test asks Prometheus's HTTP API what it sees. Skips without the ``prometheus`` binary (Debian's
``prometheus`` package). The CI target's version of this (units, timers, the engine) is the
target tier's job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from deploys.monitoring import RULES_SOURCE
from inventory.schema import HostConfig
from tests.unit.test_exporter import write_profile
from tuning.backends import open_rig
from tuning.exporter.metrics import METRICS
from tuning.render.files import prometheus_files

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not found (Debian's 'prometheus' package)"
)
#: What the simulated rig does not model, so it never writes these series: ECC (the presets
#: carry none), the memory clock, and read errors (a simulated GPU never fails a read).
NOT_FROM_SIM = {
    "rigforge_gpu_ecc_enabled",
    "rigforge_gpu_ecc_errors_total",
    "rigforge_gpu_memory_clock_hertz",
    "rigforge_gpu_read_errors_total",
}
#: The longest any one wait takes: generous, as the CI machine is shared (2 cores, several
#: test runs at once); a passing run waits only as long as Prometheus needs. Units: s.
DEADLINE_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, check: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.TransportError, ValueError, KeyError) as error:
            # Prometheus starting (or loaded) answers 503 with a text body: not JSON yet
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last answer: {last!r}")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One exporter and one Prometheus for the module (each start costs seconds); the tests
    touch different series (the kernel log; the caps)."""
    tmp_path = tmp_path_factory.mktemp("chain")
    rig = open_rig("sim:reference")
    uuid = rig.gpus[0].uuid
    exporter_port, prometheus_port, engine_port = _free_port(), _free_port(), _free_port()
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "schema_version: 1\nplacements:\n"
        f"  - {{model: m, engine: vllm, gpus: [{uuid}], tp: 1, pp: 1, port: {engine_port}}}\n"
    )
    control = tmp_path / "sim-control.json"  # the rig's room, changed while it runs
    kernel_log = tmp_path / "kern.log"
    kernel_log.write_text("")
    record = tmp_path / "enforce.json"
    record.write_text(json.dumps({"reapplied": {uuid: 1}, "last_run_unix_s": 1764650000}))
    profile = tmp_path / "profile.yaml"
    # psu-a's three cards capped (their stock caps exceed circuit-a's budget)
    uuids = write_profile(profile, {0: 280, 1: 250, 2: 300})
    exporter = subprocess.Popen(
        [sys.executable, "-m", "tuning.cli", "exporter", "--listen",
         f"127.0.0.1:{exporter_port}", "--plan", str(plan), "--kernel-log", str(kernel_log),
         "--enforcement-state", str(record), "--sim-workload", "decode", "--profile",
         str(profile), "--sim-speed", "600", "--sim-control", str(control)],
        env={**os.environ, "RIGFORGE_STATE_DIR": str(tmp_path / "state")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = HostConfig.model_validate(
        {
            "ssh": {"host": "127.0.0.1"},
            "serving": {"plan": str(plan)},
            "monitoring": {
                "exporter": True,
                "prometheus": True,
                "listen": f"127.0.0.1:{exporter_port}",
                "scrape_interval_s": 1,
            },
        }
    )
    document = yaml.safe_load(prometheus_files(config)[0].render())
    document["rule_files"] = [str(RULES_SOURCE)]  # the deploy installs it under /etc/prometheus
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(yaml.safe_dump(document))
    assert PROMETHEUS is not None
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={prometheus_yml}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield {
            "api": f"http://127.0.0.1:{prometheus_port}/api/v1",
            "kernel_log": kernel_log,
            "profile": profile,
            "control": control,
            "record": record,
            "state": tmp_path / "state",
            "uuids": uuids,
        }
    finally:
        for process in (prometheus, exporter):
            process.send_signal(signal.SIGTERM)
        for process in (prometheus, exporter):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _query(api: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()
    return list(answer["data"]["result"])


def _firing(api: str, name: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_prometheus_scrapes_every_series_and_an_xid_fires_the_alert(
    chain: dict[str, Any],
) -> None:
    """``up == 1``; every documented metric the simulated rig can produce is in Prometheus;
    an Xid 79 line appended to the kernel log fires RigforgeGpuFellOffBus for that bus id
    (no ``for``: at the next evaluation), with no restart of anything."""
    api = chain["api"]
    up = _wait("up{job='rigforge'} == 1", lambda: _query(api, 'up{job="rigforge"} == 1'))
    assert len(up) == 1
    wanted = {m.name for m in METRICS} - NOT_FROM_SIM

    def missing() -> set[str]:
        found = {
            r["metric"]["__name__"]
            for r in _query(api, 'count by (__name__) ({__name__=~"rigforge_.+"})')
        }
        return wanted - found

    def gaps_or_none() -> set[str] | None:
        try:
            return missing()
        except (httpx.TransportError, ValueError, KeyError):
            return None  # not answering yet: ask again

    end = time.monotonic() + DEADLINE_S
    while (gaps := gaps_or_none()) is None or gaps:
        if time.monotonic() > end:
            pytest.fail(f"Prometheus never saw {sorted(gaps)}")
        time.sleep(0.5)
    assert _firing(api, "RigforgeGpuFellOffBus") == []
    with chain["kernel_log"].open("a") as handle:
        handle.write("[ 99.1] NVRM: Xid (PCI:0000:21:00): 79, GPU has fallen off the bus\n")
    (alert,) = _wait("RigforgeGpuFellOffBus", lambda: _firing(api, "RigforgeGpuFellOffBus"))
    assert alert["labels"]["pci_bus_id"] == "0000:21:00.0"
    assert alert["labels"]["code"] == "79"
    # the engine's own /metrics is a scrape target too (nothing listens there: it is down)
    engines = _wait(
        "the engine's target scraped", lambda: _query(api, 'up{job="rigforge-engines"}')
    )
    assert [(r["metric"]["model"], r["value"][1]) for r in engines] == [("m", "0")]


def _rule_expr(alert: str) -> str:
    groups = yaml.safe_load(RULES_SOURCE.read_text())["groups"]
    return next(r["expr"] for g in groups for r in g["rules"] if r["alert"] == alert)


def test_cap_drift_shows_then_clears_after_enforcement(chain: dict[str, Any]) -> None:
    """The simulated cards start at their stock limits, not the profile's caps: the cap-drift
    rule's expression names exactly the three profiled GPUs. ``rigforge apply --record`` (what
    the enforcement timer runs) puts the caps on; the next scrapes show no drift and the
    enforcement count. (The alert's own ``for: 10m`` is promtool's to test.)"""
    api, uuids = chain["api"], set(chain["uuids"].values())
    drift = _rule_expr("RigforgeGpuCapDrift")
    drifting = _wait("cap drift", lambda: {r["metric"]["uuid"] for r in _query(api, drift)})
    assert drifting == uuids
    applied = subprocess.run(
        [sys.executable, "-m", "tuning.cli", "apply", str(chain["profile"]), "--rig",
         "sim:reference", "--record", str(chain["record"])],
        env={**os.environ, "RIGFORGE_STATE_DIR": str(chain["state"])},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    _wait("no drift after enforcement", lambda: _query(api, drift) == [])
    first = chain["uuids"][0]  # the fixture's record already counted one re-apply for it

    def counts() -> dict[str, str] | None:
        found = {
            r["metric"]["uuid"]: r["value"][1]
            for r in _query(api, "rigforge_cap_enforcement_reapplied_total")
        }
        return found if found.get(first) == "2" else None

    assert _wait("the enforcement count", counts) == {
        first: "2",
        **{u: "1" for u in uuids - {first}},
    }


def test_sim_driven_hot_and_a_dead_engine_through_prometheus(chain: dict[str, Any]) -> None:
    """The room changed through the control file while everything runs (the rig runs 600x
    real time): at 15 °C no card throttles; at 45 °C the thermal-slowdown rule's expression
    comes to name the README's hot card,
    the A6000 in slot 5 (0000:61:00.0); the planned engine, which nothing serves, is named by
    the serving-down rule's expression."""
    api = chain["api"]
    thermal = _rule_expr("RigforgeGpuThermalSlowdown")
    # first a cool room: no card clocks down against heat
    chain["control"].write_text(json.dumps({"workload": "decode", "ambient_c": 15}))
    _wait("no thermal slowdown in a 15 °C room", lambda: _query(api, thermal) == [])
    chain["control"].write_text(json.dumps({"workload": "decode", "ambient_c": 45}))

    def hot_buses() -> set[str]:
        found = {r["metric"]["pci_bus_id"] for r in _query(api, thermal)}
        return found if "0000:61:00.0" in found else set()

    assert "0000:61:00.0" in _wait("thermal slowdown on the slot-5 A6000", hot_buses)
    down = _wait("the unserved engine", lambda: _query(api, _rule_expr("RigforgeServingDown")))
    assert [(r["metric"]["model"], r["metric"]["engine"]) for r in down] == [("m", "vllm")]
