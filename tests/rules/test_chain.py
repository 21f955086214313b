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
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from deploys.monitoring import RULES_SOURCE
from inventory.schema import HostConfig
from tests.prometheus import NOT_FROM_SIM, PrometheusApi, wait_for, wait_for_series
from tests.unit.test_exporter import write_profile
from tuning.backends import open_rig
from tuning.exporter.metrics import METRICS
from tuning.render.files import prometheus_files

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not found (Debian's 'prometheus' package)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            "api": PrometheusApi(f"http://127.0.0.1:{prometheus_port}/api/v1"),
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


def test_prometheus_scrapes_every_series_and_an_xid_fires_the_alert(
    chain: dict[str, Any],
) -> None:
    """``up == 1``; every documented metric the simulated rig can produce is in Prometheus;
    an Xid 79 line appended to the kernel log fires RigforgeGpuFellOffBus for that bus id
    (no ``for``: at the next evaluation), with no restart of anything."""
    api = chain["api"]
    up = wait_for("up{job='rigforge'} == 1", lambda: api.query('up{job="rigforge"} == 1'))
    assert len(up) == 1
    wait_for_series(api, {m.name for m in METRICS} - NOT_FROM_SIM)
    assert api.alerts("RigforgeGpuFellOffBus") == []
    with chain["kernel_log"].open("a") as handle:
        handle.write("[ 99.1] NVRM: Xid (PCI:0000:21:00): 79, GPU has fallen off the bus\n")
    (alert,) = wait_for("RigforgeGpuFellOffBus", lambda: api.alerts("RigforgeGpuFellOffBus"))
    assert alert["labels"]["pci_bus_id"] == "0000:21:00.0"
    assert alert["labels"]["code"] == "79"
    # the engine's own /metrics is a scrape target too (nothing listens there: it is down)
    engines = wait_for(
        "the engine's target scraped", lambda: api.query('up{job="rigforge-engines"}')
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
    drifting = wait_for("cap drift", lambda: {r["metric"]["uuid"] for r in api.query(drift)})
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
    wait_for("no drift after enforcement", lambda: api.query(drift) == [])
    first = chain["uuids"][0]  # the fixture's record already counted one re-apply for it

    def counts() -> dict[str, str] | None:
        found = {
            r["metric"]["uuid"]: r["value"][1]
            for r in api.query("rigforge_cap_enforcement_reapplied_total")
        }
        return found if found.get(first) == "2" else None

    assert wait_for("the enforcement count", counts) == {
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
    wait_for("no thermal slowdown in a 15 °C room", lambda: api.query(thermal) == [])
    chain["control"].write_text(json.dumps({"workload": "decode", "ambient_c": 45}))

    def hot_buses() -> set[str]:
        found = {r["metric"]["pci_bus_id"] for r in api.query(thermal)}
        return found if "0000:61:00.0" in found else set()

    assert "0000:61:00.0" in wait_for("thermal slowdown on the slot-5 A6000", hot_buses)
    down = wait_for("the unserved engine", lambda: api.query(_rule_expr("RigforgeServingDown")))
    assert [(r["metric"]["model"], r["metric"]["engine"]) for r in down] == [("m", "vllm")]
