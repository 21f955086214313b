"""The monitoring chain on a systemd-booted target: exporter → Prometheus → alerts.

The CI inventory's host with everything monitoring needs turned on: the tuner installed, its
GPUs the CI simulated rig (``tuner.sim_rig``, the same UUIDs; the boot unit applies ws-a's
profile to it), ``power.enforce`` (the cap-enforcement timer), ``monitoring.exporter`` and
``monitoring.prometheus`` (Debian's ``prometheus`` package, the scrape config and the shipped
rules rendered by the deploy), and the real llama.cpp engine of :mod:`tests.target.test_engine`
(the cached build of :mod:`tests.target.engine`; never rebuilt here). The test asks
Prometheus's HTTP API — as its owner would — what it sees:

* ``up == 1`` for the exporter and the engine's own ``/metrics``; every documented metric the
  simulated rig can produce is there;
* cap drift: a simulated card's cap changed behind rigforge's back (its "hardware" state file
  rewritten, as another tool's ``nvidia-smi -pl`` would) fires ``RigforgeGpuCapDrift``; the
  enforcement timer's service puts it back and the alert clears, the re-apply counted;
* heat: the sim-only control file (:data:`tuning.render.files.SIM_CONTROL`, read only by an
  exporter on a simulated rig) puts the room at 55 °C and runs virtual time 60x;
  ``RigforgeGpuThermalSlowdown`` fires for both cards;
* serving: the engine's unit stopped fires ``RigforgeServingDown``; started again, it clears;
* the textfile route: ``rigforge-textfile.timer`` writes ``rigforge.prom`` into Debian's
  node-exporter's textfile folder, and Prometheus sees the same GPU series through job
  ``node``.

**Test-only override of ``for:``.** The shipped rules hold each alert for minutes (``for:
10m`` on cap drift) so a transient never pages anyone. After checking that the deploy
installed exactly the shipped file, the test installs the same rules with every ``for:``
set to :data:`FOR_S` seconds — expressions, labels and annotations untouched — and reloads
Prometheus (``systemctl reload``: SIGHUP). Scrape and evaluation run every second
(``monitoring.scrape_interval_s: 1``). promtool's cases (``tests/rules``) test the real
``for:`` values.

Ports: everything shares this machine's network, so every port is an environment variable
(defaults outside the other modules' blocks)::

    RIGFORGE_MONITOR_TARGET=mon2 RIGFORGE_MONITOR_PORT=2315 RIGFORGE_MONITOR_SERVE_PORT=18310 \\
    RIGFORGE_MONITOR_EXPORTER_PORT=18311 RIGFORGE_MONITOR_PROMETHEUS_PORT=18312 \\
    RIGFORGE_MONITOR_NODE_EXPORTER_PORT=18313 \\
        .venv/bin/pytest -m target tests/target/test_monitoring.py
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploys.monitoring import RULES_SOURCE
from tests.prometheus import NOT_FROM_SIM, PrometheusApi, wait_for, wait_for_series
from tests.target import harness, util
from tests.target.test_engine import EXPOSURE, GPU, MODEL
from tests.target.util import ssh
from tuning.apply.state import SYSTEM_STATE_DIR, rig_slug
from tuning.exporter.metrics import METRICS
from tuning.render.files import EXPORTER_UNIT, RULES_DEST, SIM_CONTROL, SIM_RIG_TARGET

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_MONITOR_TARGET", "monitor")
PORT = util.env_port("RIGFORGE_MONITOR_PORT", 2281)
SERVE_PORT = util.env_port("RIGFORGE_MONITOR_SERVE_PORT", 18071)
EXPORTER_PORT = util.env_port("RIGFORGE_MONITOR_EXPORTER_PORT", 18072)
PROMETHEUS_PORT = util.env_port("RIGFORGE_MONITOR_PROMETHEUS_PORT", 18073)
NODE_EXPORTER_PORT = util.env_port("RIGFORGE_MONITOR_NODE_EXPORTER_PORT", 18074)
PROMETHEUS = PrometheusApi(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1")
SERVE_UNIT = f"rigforge-serve-{MODEL}.service"
ENFORCE_SERVICE = "rigforge-enforce-caps.service"
#: ws-a of ci-two.yaml has the CI target's two GPUs (same UUIDs); its profile was swept on
#: the CI simulated rig: GPU …001 capped at 239 W, …002 at 238 W (host_data/ws-a/profile.yaml).
PROFILE = util.EXAMPLES / "host_data" / "ws-a" / "profile.yaml"
SIM_RIG = util.EXAMPLES / "rigs" / "ci-2x3090.yaml"
DRIFTING = "GPU-c1000000-0000-4000-8000-000000000001"
#: The cap "another tool" sets on it: the RTX 3090's stock 350 W.
DRIFTED_CAP_W = 350.0
#: A room hot enough that the simulated 3090s, capped by the profile (239/241 W), reach
#: their slowdown: at 50 °C only one does, at 55 °C both, within ~1 min of model time
#: (measured with tuning.exporter.sim_driver on rigs/ci-2x3090.yaml, 2 Dec 2026).
HOT_ROOM_C = 55
#: Virtual seconds per wall second while hot (the control file's ``speed``): the minute of
#: heat-up passes in about a second.
HOT_SPEED = 60
#: The test's ``for:`` for every rule (see the module docstring). Units: s.
FOR_S = 2


@pytest.fixture(scope="module")
def llama_server() -> Path:
    return util.llama_server_or_fail()


@pytest.fixture(scope="module")
def target(llama_server: Path) -> Iterator[harness.Target]:
    """A fresh CI target with the tiny model in the engine's cache folder."""
    with util.engine_target(NAME, PORT, "monitor: start fresh target") as tgt:
        yield tgt


@pytest.fixture(scope="module")
def inventory(
    target: harness.Target, llama_server: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("monitor")
    # test_engine's one-model plan, on this module's port
    plan = util.write_plan(folder / "plan.yaml", [util.llama_placement(MODEL, GPU, 1, SERVE_PORT)])
    overrides: dict[str, Any] = {
        # the profile carries the caps; the inventory's hand caps give way to it
        "gpus": [
            {k: v for k, v in g.items() if k != "power_cap_w"}
            for g in yaml.safe_load(util.CI_YAML.read_text())["hosts"]["ci-target"]["gpus"]
        ],
        "power": {"profile": str(PROFILE), "enforce": True},
        "tuner": {"install": True, "sim_rig": str(SIM_RIG)},
        "serving": {"plan": str(plan), "compute": "cpu", "llama_server": str(llama_server)},
        "monitoring": {
            "exporter": True,
            "prometheus": True,
            "listen": f"127.0.0.1:{EXPORTER_PORT}",
            "prometheus_listen": f"127.0.0.1:{PROMETHEUS_PORT}",
            "scrape_interval_s": 1,
            "textfile": True,
            "textfile_interval_s": 10,
            "node_exporter": True,
            "node_exporter_listen": f"127.0.0.1:{NODE_EXPORTER_PORT}",
        },
    }
    return util.inventory_for(target, folder, overrides=overrides, stem="monitor")


@pytest.fixture(scope="module")
def deployed(target: harness.Target, inventory: Path) -> util.DeployResult:
    """The deploy, then the rules with the test's short ``for:`` (see the module docstring)."""
    result = util.deploy(inventory, "monitor: deploy (tuner, exporter, prometheus, engine)")
    assert result.rc == 0, result.stderr_tail
    shipped = RULES_SOURCE.read_text(encoding="utf-8")
    rules = target.root / RULES_DEST.lstrip("/")
    assert rules.read_text(encoding="utf-8") == shipped, "the deploy installs the shipped rules"
    short, count = re.subn(r"(?m)^(\s+)for: \S+$", rf"\g<1>for: {FOR_S}s", shipped)
    assert count >= 10, "the shipped rules hold their alerts with for:"
    rules.write_text(short, encoding="utf-8")
    ssh(target, "systemctl reload prometheus.service")
    return result


def test_the_exporter_and_prometheus_run_as_units(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    for unit in (
        EXPORTER_UNIT,
        "prometheus.service",
        "rigforge-enforce-caps.timer",
        "rigforge-textfile.timer",
        "prometheus-node-exporter.service",
    ):
        state = util.unit_state(target, unit)
        assert (state["UnitFileState"], state["ActiveState"]) == ("enabled", "active"), (
            unit,
            state,
        )
    exporter = util.unit_state(target, EXPORTER_UNIT)
    user = ssh(target, f"stat -c %U /proc/{exporter['MainPID']}").strip()
    assert user == "rigforge", f"the exporter runs as {user}, not the service user"


def test_both_listen_on_loopback_only(deployed: util.DeployResult, target: harness.Target) -> None:
    """/proc/net/tcp spells 127.0.0.1 as 0100007F; 0.0.0.0 as 00000000. Debian's defaults
    (every address, ports 9090 and 9100) are never used: the ARGS are in place before the
    packages start their services."""
    wait_for("prometheus listening", lambda: util.listening(target, PROMETHEUS_PORT))
    assert util.listening(target, PROMETHEUS_PORT) == {"0100007F"}
    assert util.listening(target, EXPORTER_PORT) == {"0100007F"}
    wait_for("node-exporter listening", lambda: util.listening(target, NODE_EXPORTER_PORT))
    assert util.listening(target, NODE_EXPORTER_PORT) == {"0100007F"}
    assert util.listening(target, 9090) == set()
    assert util.listening(target, 9100) == set()


def test_exporter_exposure_is_at_most_3(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    out = ssh(target, f"systemd-analyze security --no-pager {EXPORTER_UNIT} 2>&1 || true")
    match = EXPOSURE.search(out)
    assert match, out[-2000:]
    print(f"{EXPORTER_UNIT}: exposure {match.group(1)}")
    assert float(match.group(1)) <= 3.0, out[-3000:]


def _sim_state(target: harness.Target) -> Path:
    """The simulated rig's "hardware" (its caps) on the target, as rigforge apply left it."""
    name = f"sim-{rig_slug(SIM_RIG_TARGET)}.json"
    return target.root / SYSTEM_STATE_DIR.relative_to("/") / name


def test_cap_drift_fires_and_clears_after_the_enforcement_timer(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    """The boot unit applied the profile (239 W on …001): no drift. The card's cap is then
    set to 350 W behind rigforge's back; the alert fires for that card only. The timer's
    service re-applies the profile: the alert clears and the exporter counts one re-apply."""
    expected = f'rigforge_gpu_power_enforced_limit_watts{{job="rigforge", uuid="{DRIFTING}"}}'
    wait_for("the profile's cap enforced", lambda: PROMETHEUS.query(f"{expected} == 239"))
    assert PROMETHEUS.active("RigforgeGpuCapDrift") == []
    state_file = _sim_state(target)
    state = json.loads(state_file.read_text())
    assert state["power_limit_w"][DRIFTING] == 239.0, state
    state["power_limit_w"][DRIFTING] = DRIFTED_CAP_W
    tmp = state_file.with_name(state_file.name + ".test")
    tmp.write_text(json.dumps(state))
    tmp.chmod(0o644)
    tmp.replace(state_file)
    # The series arrives from two sources (the exporter, job rigforge, and the textfile under
    # job node, whose 10 s timer may already have run); the rule aggregates them: one alert.
    alerts = wait_for(
        "RigforgeGpuCapDrift firing", lambda: PROMETHEUS.alerts("RigforgeGpuCapDrift")
    )
    assert [a["labels"]["uuid"] for a in alerts] == [DRIFTING], alerts
    ssh(target, f"systemctl start {ENFORCE_SERVICE}")
    assert util.unit_state(target, ENFORCE_SERVICE)["Result"] == "success"
    wait_for("RigforgeGpuCapDrift cleared", lambda: PROMETHEUS.active("RigforgeGpuCapDrift") == [])
    count = wait_for(
        "the re-apply counted",
        lambda: PROMETHEUS.query(
            f'rigforge_cap_enforcement_reapplied_total{{job="rigforge", uuid="{DRIFTING}"}} == 1'
        ),
    )
    assert len(count) == 1
    assert PROMETHEUS.query(f"{expected} == 239"), "the profile's cap is back"


def test_thermal_alert_fires_when_the_sim_rig_is_driven_hot(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    """No card throttles in the default room (25 °C); at 55 °C both simulated 3090s reach
    their slowdown and RigforgeGpuThermalSlowdown fires for each bus id."""
    assert PROMETHEUS.active("RigforgeGpuThermalSlowdown") == []
    control = target.root / SIM_CONTROL.lstrip("/")
    hot = {"workload": "decode", "ambient_c": HOT_ROOM_C, "speed": HOT_SPEED}
    control.write_text(json.dumps(hot))
    control.chmod(0o644)

    def both() -> set[str]:
        found = {a["labels"]["pci_bus_id"] for a in PROMETHEUS.alerts("RigforgeGpuThermalSlowdown")}
        return found if len(found) == 2 else set()

    try:
        assert wait_for("RigforgeGpuThermalSlowdown on both cards", both) == {
            "0000:41:00.0",
            "0000:42:00.0",
        }
    finally:
        control.write_text(json.dumps({"workload": "decode", "ambient_c": 25, "speed": 1}))


def test_serving_down_fires_when_the_engine_stops(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    """RigforgeServingDown fires once and names the stopped engine. ``rigforge_serving_up`` is
    scraped twice here (the exporter, job ``rigforge``, and the textfile under job ``node``);
    the rule aggregates over the source, so the alert carries neither source's labels."""
    served = f'rigforge_serving_up{{model="{MODEL}"}}'
    wait_for("the engine up", lambda: PROMETHEUS.query(f"{served} == 1"))
    assert PROMETHEUS.active("RigforgeServingDown") == []
    ssh(target, f"systemctl stop {SERVE_UNIT}")
    try:
        alerts = wait_for(
            "RigforgeServingDown firing", lambda: PROMETHEUS.alerts("RigforgeServingDown")
        )
        named = [(a["labels"]["model"], a["labels"]["unit"]) for a in alerts]
        assert named == [(MODEL, SERVE_UNIT)], alerts
        assert "job" not in alerts[0]["labels"], alerts
    finally:
        ssh(target, f"systemctl start {SERVE_UNIT}")
    wait_for("RigforgeServingDown cleared", lambda: PROMETHEUS.active("RigforgeServingDown") == [])


def test_up_and_every_documented_metric(deployed: util.DeployResult) -> None:
    """``up == 1`` for the exporter and for the engine's own ``/metrics`` (llama-server runs
    with ``--metrics``); every metric docs/monitoring.md lists that a simulated rig writes.
    Last: the enforcement series exist once the timer has run and re-applied a cap (the
    cap-drift test above)."""
    wait_for("up{job='rigforge'} == 1", lambda: PROMETHEUS.query('up{job="rigforge"} == 1'))
    engines = wait_for(
        "the engine's /metrics scraped", lambda: PROMETHEUS.query('up{job="rigforge-engines"} == 1')
    )
    assert [r["metric"]["model"] for r in engines] == [MODEL]
    wait_for_series(PROMETHEUS, {m.name for m in METRICS} - NOT_FROM_SIM)


def test_the_textfile_reaches_prometheus_through_node_exporter(
    deployed: util.DeployResult, target: harness.Target
) -> None:
    """The timer's file: in node-exporter's folder, 0644 (node-exporter runs as user
    prometheus), and scraped: the simulated cards' enforced limits arrive under job ``node``
    with the same UUIDs as under job ``rigforge``."""
    path = "/var/lib/prometheus/node-exporter/rigforge.prom"
    wait_for("rigforge.prom written", lambda: (target.root / path.lstrip("/")).is_file())
    assert ssh(target, f"stat -c '%a %U' {path}").split() == ["644", "root"]
    expr = 'rigforge_gpu_power_enforced_limit_watts{job="node"}'
    found = wait_for("the textfile's series under job node", lambda: PROMETHEUS.query(expr))
    assert {r["metric"]["uuid"] for r in found} == {
        "GPU-c1000000-0000-4000-8000-000000000001",
        "GPU-c1000000-0000-4000-8000-000000000002",
    }


def test_second_deploy_changes_nothing_and_restarts_nothing(
    deployed: util.DeployResult, target: harness.Target, inventory: Path
) -> None:
    """Last (it puts back the shipped rules the fixture shortened, as the deploy would): a
    second deploy finds every monitoring file, package and unit as it left them."""
    rules = target.root / RULES_DEST.lstrip("/")
    rules.write_text(RULES_SOURCE.read_text(encoding="utf-8"), encoding="utf-8")
    units = (
        EXPORTER_UNIT,
        "prometheus.service",
        "prometheus-node-exporter.service",
        "rigforge-enforce-caps.timer",
        "rigforge-textfile.timer",
    )
    before, reloads = util.starts(target, units), util.daemon_reloads(target)
    again = util.deploy(inventory, "monitor: deploy #2 (no-op)")
    assert again.rc == 0, again.stderr_tail
    assert again.totals["success"] == 0, again.changed
    assert util.starts(target, units) == before
    assert util.daemon_reloads(target) == reloads
