"""The shipped alert rules, checked and unit-tested by Prometheus's own ``promtool``.

``promtool`` comes with Debian's ``prometheus`` package (``tests/run.sh`` installs it when run
as root); without it these tests skip and say so. The last test drives the simulated reference
rig hot through the real exporter and lets promtool decide that the thermal alert fires.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tuning.backends import open_rig
from tuning.backends.sim import SimRig
from tuning.exporter.collector import RigCollector, exposition
from tuning.exporter.metrics import METRICS_BY_NAME
from tuning.exporter.sim_driver import SimDriver
from tuning.exporter.xid import WATCHED_XIDS

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "templates" / "etc" / "prometheus" / "rules" / "rigforge.rules.yml"
CASES = Path(__file__).with_name("rigforge.rules.test.yml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install Debian's 'prometheus' package (tests/run.sh does as root)",
)


def _rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False)


@needs_promtool
def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    result = _promtool("test", "rules", str(CASES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_case() -> None:
    cases = yaml.safe_load(CASES.read_text())["tests"]
    firing = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check.get("exp_alerts")
    }
    assert firing == {rule["alert"] for rule in _rules()}


def test_every_alert_says_what_to_do() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert len(rule["annotations"].get("action", "")) > 20, rule["alert"]


_SELECTOR = re.compile(r"\b(rigforge_[a-z_]+)(?:\{([^}]*)\})?")


def test_rules_name_only_metrics_and_labels_the_exporter_writes() -> None:
    for rule in _rules():
        for name, matchers in _SELECTOR.findall(rule["expr"]):
            assert name in METRICS_BY_NAME, f"{rule['alert']}: {name} is not exported"
            for label in re.findall(r"(\w+)\s*=~?", matchers):
                assert label in METRICS_BY_NAME[name].labels, f"{rule['alert']}: {name}{{{label}}}"


def test_xid_codes_in_the_rules_are_the_watched_ones() -> None:
    """Counters of watched codes start at 0, so the rules' codes must all be watched."""
    codes = {
        int(code)
        for rule in _rules()
        for selector in re.findall(r'code=~?"([0-9|]+)"', rule["expr"])
        for code in selector.split("|")
    }
    assert codes == set(WATCHED_XIDS) == {48, 63, 64, 79, 119, 120}


@needs_promtool
def test_sim_rig_driven_hot_fires_the_thermal_alert(tmp_path: Path) -> None:
    """The reference rig in a 45 °C room with decode on every card, scraped by the exporter
    once a virtual minute for 15 minutes; those scrapes are promtool's input. The README's
    hot card (the A6000 in slot 5, 0000:61:00.0, between two hot neighbours) must be among
    those the alert names at 15 min, and promtool must name exactly the cards whose samples
    show thermal slowdown for the whole 5-minute ``for`` window."""
    rig = open_rig("sim:reference")
    assert isinstance(rig, SimRig)
    clock = [0.0]
    driver = SimDriver(rig, now_s=lambda: clock[0])
    driver.set_load("decode", 45.0)
    collector = RigCollector(rig, spec="sim:reference", before_scrape=driver)
    series: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for minute in range(16):
        clock[0] = 60.0 * minute
        for family in text_string_to_metric_families(exposition(collector).decode()):
            for sample in family.samples:
                if (
                    sample.name == "rigforge_gpu_clock_event_active"
                    and "thermal" in sample.labels["reason"]
                ):
                    series.setdefault(tuple(sorted(sample.labels.items())), []).append(sample.value)
    hot: dict[str, dict[str, str]] = {}
    for labels, values in series.items():
        if all(v == 1 for v in values[9:16]):  # held from 9 min on: fires at 15 min
            gpu = {k: v for k, v in labels if k != "reason" and v}
            hot[gpu["uuid"]] = gpu
    assert "0000:61:00.0" in {gpu["pci_bus_id"] for gpu in hot.values()}
    rule = next(r for r in _rules() if r["alert"] == "RigforgeGpuThermalSlowdown")

    def rendered(text: str, labels: dict[str, str]) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)

    case = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": "rigforge_gpu_clock_event_active{"
                        + ",".join(f'{k}="{v}"' for k, v in labels)
                        + "}",
                        "values": " ".join(str(int(v)) for v in values),
                    }
                    for labels, values in series.items()
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "RigforgeGpuThermalSlowdown",
                        "exp_alerts": [
                            {
                                "exp_labels": {**gpu, "severity": "warning"},
                                "exp_annotations": {
                                    k: rendered(v, gpu) for k, v in rule["annotations"].items()
                                },
                            }
                            for gpu in hot.values()
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "hot.test.yml"
    path.write_text(yaml.safe_dump(case, sort_keys=False))
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
