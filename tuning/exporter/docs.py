"""The generated parts of ``docs/monitoring.md``: the metric list and the alert list.

``python -m tuning.exporter.docs`` rewrites them in place (between the ``<!-- generated:… -->``
markers); ``tests/unit/test_monitoring_docs.py`` fails when the page and the code differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from tuning.exporter.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]
DOCS_PAGE = REPO / "docs" / "monitoring.md"
RULES_FILE = REPO / "templates" / "etc" / "prometheus" / "rules" / "rigforge.rules.yml"


def metrics_section() -> str:
    """One table row per metric of :data:`~tuning.exporter.metrics.METRICS`."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in METRICS:
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "—"
        rows.append(f"| `{metric.name}` | {metric.kind.value} | {labels} | {metric.help} |")
    return "\n".join(rows) + "\n"


def alerts_section(rules_path: Path = RULES_FILE) -> str:
    """One table row per alert of the shipped rules file: severity, for, what to do."""
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    rows = ["| alert | severity | for | what to do |", "|---|---|---|---|"]
    for group in groups:
        for rule in group["rules"]:
            action = rule["annotations"]["action"].replace("|", "\\|")
            rows.append(
                f"| `{rule['alert']}` | {rule['labels']['severity']} | "
                f"{rule.get('for', '—')} | {action} |"
            )
    return "\n".join(rows) + "\n"


SECTIONS = {"metrics": metrics_section, "alerts": alerts_section}


def render(page: str) -> str:
    """``page`` with every generated section replaced by what the code says now."""
    for name, make in SECTIONS.items():
        pattern = re.compile(
            rf"(<!-- generated:{name} begin.*?-->\n).*?(<!-- generated:{name} end -->)", re.S
        )
        if pattern.search(page) is None:
            raise ValueError(f"docs page lacks the generated:{name} markers")
        match = pattern.search(page)
        assert match is not None
        page = page[: match.end(1)] + make() + page[match.start(2) :]
    return page


def main() -> None:
    """Rewrite ``docs/monitoring.md`` (or the path given) in place."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_PAGE
    path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main()
