"""Asking a running Prometheus what it sees, through its HTTP API, as its owner would.

Shared by the two chains that end in a real Prometheus: ``tests/rules/test_chain.py`` (the
exporter process and Debian's ``prometheus`` binary on this machine) and
``tests/target/test_monitoring.py`` (the deployed units on a systemd-booted target). The API is
Prometheus's ``/api/v1`` (``query``, ``alerts``: prometheus.io/docs/prometheus/latest/querying/api).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

#: What the simulated rig does not model, so it never writes these series: ECC (the presets
#: carry none), the memory clock, and read errors (a simulated GPU never fails a read).
NOT_FROM_SIM = frozenset(
    {
        "rigforge_gpu_ecc_enabled",
        "rigforge_gpu_ecc_errors_total",
        "rigforge_gpu_memory_clock_hertz",
        "rigforge_gpu_read_errors_total",
    }
)
#: The longest any one wait takes: generous, as the CI machine is shared (2 cores, several
#: test runs at once); a passing run waits only as long as Prometheus needs. Units: s.
DEADLINE_S = 120.0
#: What asking can raise while Prometheus starts or reloads: no answer yet, or a 503 whose
#: text body is not JSON (ValueError), or JSON without ``data`` (KeyError).
NOT_ANSWERING = (httpx.HTTPError, KeyError, ValueError)


@dataclass(frozen=True)
class PrometheusApi:
    """One Prometheus server's API at ``url`` (``http://127.0.0.1:PORT/api/v1``)."""

    url: str

    def _data(self, path: str, **params: str) -> Any:
        return httpx.get(f"{self.url}/{path}", params=params, timeout=5).json()["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (``/api/v1/query``)."""
        return list(self._data("query", query=expr)["result"])

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, Any]]:
        """The alerts named ``name`` in ``state`` (``firing`` or ``pending``)."""
        return [
            a
            for a in self._data("alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        ]

    def active(self, name: str) -> list[dict[str, Any]]:
        """The alerts named ``name`` that are firing or pending (held by their ``for:``)."""
        return self.alerts(name, "firing") + self.alerts(name, "pending")

    def series_names(self, pattern: str = "rigforge_.+") -> set[str]:
        """The metric names matching ``pattern`` that have a series now."""
        expr = f'count by (__name__) ({{__name__=~"{pattern}"}})'
        return {r["metric"]["__name__"] for r in self.query(expr)}


def wait_for(what: str, check: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``check`` until it returns something truthy and return that; fail naming ``what``
    and the last answer (a Prometheus not answering yet counts as a falsy answer)."""
    __tracebackhide__ = True
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except NOT_ANSWERING as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}; last: {last!r}")


def wait_for_series(api: PrometheusApi, wanted: Iterable[str]) -> None:
    """Until every metric name in ``wanted`` has a series; fail naming those still missing."""
    __tracebackhide__ = True
    wanted = set(wanted)
    gaps: set[str] | None = None

    def no_gaps() -> bool:
        nonlocal gaps
        gaps = wanted - api.series_names()
        return not gaps

    try:
        wait_for("every series", no_gaps)
    except pytest.fail.Exception:
        pytest.fail(f"Prometheus never saw {sorted(gaps or wanted)}")
