"""docs/monitoring.md and the Grafana dashboard stay in step with what the exporter writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tuning.exporter.docs import DOCS_PAGE, render
from tuning.exporter.metrics import METRICS, METRICS_BY_NAME

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "rigforge-dashboard.json"


def test_docs_page_is_generated_from_the_code() -> None:
    page = DOCS_PAGE.read_text()
    assert page == render(page), "docs/monitoring.md is stale: run python -m tuning.exporter.docs"


def test_docs_page_lists_every_metric_once() -> None:
    page = DOCS_PAGE.read_text()
    for metric in METRICS:
        assert page.count(f"| `{metric.name}` |") == 1, metric.name


def _panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_dashboard_is_valid_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "rigforge-box"
    assert dashboard["title"]
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "instance"}


def test_dashboard_queries_name_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    assert exprs
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(rigforge_[a-z_]+)", expr):
            assert name in METRICS_BY_NAME, f"dashboard query names unknown {name}: {expr}"
            used.add(name)
    # the headline series must be on it
    assert {
        "rigforge_gpu_power_draw_watts",
        "rigforge_gpu_power_profile_cap_watts",
        "rigforge_circuit_load_watts",
        "rigforge_xid_events_total",
        "rigforge_serving_up",
    } <= used
