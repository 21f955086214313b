"""The Prometheus collector: one read of the rig, the kernel log and the serving units per scrape.

Read-only: nothing here sets anything on a GPU. A read that fails (a GPU lost mid-scrape, no
permission, the driver gone) never escapes: that GPU reports ``rigforge_gpu_up 0`` and
``rigforge_gpu_read_errors_total{error=…}``, the failure is logged once per change, and every
other GPU and family is reported as usual.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tuning import __version__
from tuning.backends.base import CLOCK_EVENT_BITS, Gpu, Rig
from tuning.core.bus import normalize_bus_id
from tuning.core.power import BudgetModel
from tuning.errors import RigforgeError
from tuning.exporter.enforcement import EnforcementState
from tuning.exporter.metrics import METRICS, Kind, MetricDef
from tuning.exporter.xid import KernelLog

log = logging.getLogger("rigforge.exporter")

_HZ_PER_MHZ = 1e6
#: After a scrape in which a GPU did not answer, the rig is re-opened (NVML initialised and
#: enumerated again: a driver reload or a GPU reset invalidates the old handles) at most this
#: often. ``estimate``: re-enumerating costs ~0.1 s per GPU; twice a minute is negligible.
#: Units: s.
REOPEN_INTERVAL_S = 30.0


@dataclass(frozen=True)
class ExpectedGpu:
    """A GPU the profile or the inventory says this box has (UUID and/or bus id)."""

    uuid: str | None
    pci_bus_id: str | None
    name: str | None = None

    def matches(self, gpu: Gpu) -> bool:
        if self.uuid is not None:
            return self.uuid == gpu.uuid
        return self.pci_bus_id is not None and normalize_bus_id(
            self.pci_bus_id
        ) == normalize_bus_id(gpu.pci_bus_id)


@dataclass(frozen=True)
class ServingTarget:
    """A planned serving unit: the engine listens on ``127.0.0.1:port``."""

    model: str
    unit: str
    engine: str
    port: int
    health_path: str = "/health"
    metrics_path: str = "/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.health_path}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.metrics_path}"


def http_health_probe(timeout_s: float = 0.5) -> Callable[[ServingTarget], bool]:
    """``GET`` the unit's health URL; up means HTTP 200 within ``timeout_s``. Units: s."""
    import httpx

    def probe(target: ServingTarget) -> bool:
        try:
            return httpx.get(target.health_url, timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


class _Families:
    """One family per :data:`METRICS` entry, created empty so every family is exposed."""

    def __init__(self) -> None:
        self.by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for metric in METRICS:
            labels = list(metric.labels)
            self.by_name[metric.name] = (
                GaugeMetricFamily(metric.family_name, metric.help, labels=labels)
                if metric.kind is Kind.GAUGE
                else CounterMetricFamily(metric.family_name, metric.help, labels=labels)
            )
        self._defs = {m.name: m for m in METRICS}

    def add(self, name: str, labels: Sequence[str], value: float | None) -> None:
        """Add a sample; ``None`` (not supported) adds nothing."""
        if value is None:
            return
        definition: MetricDef = self._defs[name]
        if len(labels) != len(definition.labels):
            raise AssertionError(f"{name}: {len(labels)} label values for {definition.labels}")
        self.by_name[name].add_metric(list(labels), float(value))


@dataclass
class _GpuReading:
    """Samples read from one GPU, committed only when every read answered."""

    samples: list[tuple[str, tuple[str, ...], float | None]] = field(default_factory=list)
    draw_w: float | None = None

    def add(self, name: str, labels: tuple[str, ...], value: float | None) -> None:
        self.samples.append((name, labels, value))


class RigCollector(Collector):
    """Reads the rig on every scrape (see the module docstring).

    ``caps_w``: the profile's cap per GPU UUID; ``models_of``: the plan's models per UUID;
    ``expected``: GPUs the profile/inventory says exist; ``budget``: PSUs, circuits and which
    PSU feeds each GPU; ``before_scrape``: called first (a simulated rig advances its clock);
    ``reopen``: opens the rig afresh, tried (every :data:`REOPEN_INTERVAL_S` at most) after a
    scrape in which a GPU did not answer — so a driver reload or a GPU reset needs no exporter
    restart (the stale gauge of dcgm-exporter#500).
    """

    def __init__(
        self,
        rig: Rig,
        *,
        spec: str,
        caps_w: Mapping[str, float] | None = None,
        profile_fingerprint: str = "",
        models_of: Mapping[str, str] | None = None,
        expected: Sequence[ExpectedGpu] = (),
        budget: BudgetModel[str] | None = None,
        kernel_log: KernelLog | None = None,
        serving: Sequence[ServingTarget] = (),
        probe: Callable[[ServingTarget], bool] | None = None,
        enforcement_state: Path | None = None,
        before_scrape: Callable[[], None] | None = None,
        reopen: Callable[[], Rig] | None = None,
        now_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rig = rig
        self.spec = spec
        self.caps_w = dict(caps_w or {})
        self.profile_fingerprint = profile_fingerprint
        self.models_of = dict(models_of or {})
        self.expected = tuple(expected)
        self.budget = budget if budget is not None else BudgetModel.from_rig(rig)
        self.kernel_log = kernel_log
        self.serving = tuple(serving)
        self.probe = probe or http_health_probe()
        self.enforcement_state = enforcement_state
        self.before_scrape = before_scrape
        self.errors: Counter[str] = Counter(
            {"nvml": 0, "kernel_log": 0, "serving": 0, "enforcement": 0}
        )
        self.read_errors: Counter[tuple[str, str]] = Counter()
        self.reopen = reopen
        self.now_s = now_s
        self._last_error: dict[str, str | None] = {}
        self._labels: dict[str, tuple[str, ...]] = {}
        self._failed_last = False
        self._reopened_s = -math.inf
        self._lock = threading.Lock()

    # --- helpers ------------------------------------------------------------------------

    def _gpu_labels(self, gpu: Gpu) -> tuple[str, ...]:
        labels = (
            gpu.uuid,
            normalize_bus_id(gpu.pci_bus_id),
            gpu.name,
            self.models_of.get(gpu.uuid, ""),
        )
        self._labels[gpu.uuid] = labels  # a GPU gone after a re-open keeps its error series
        return labels

    def _maybe_reopen(self) -> None:
        """Open the rig afresh after a failed read (see ``reopen``); errors stay metrics."""
        now = self.now_s()
        if self.reopen is None or not self._failed_last:
            return
        if now - self._reopened_s < REOPEN_INTERVAL_S:
            return
        self._reopened_s = now
        try:
            fresh = self.reopen()
        except RigforgeError as error:
            self.errors["nvml"] += 1
            self._note_error("re-open", str(error))
            return
        with contextlib.suppress(RigforgeError):
            self.rig.close()
        self.rig = fresh
        log.warning("re-opened the rig after a failed read: %d GPUs", len(fresh.gpus))

    def _note_error(self, key: str, message: str | None) -> None:
        """Log a source's error when it changes (not on every scrape), and its recovery."""
        if self._last_error.get(key) == message:
            return
        if message is None:
            log.warning("%s: reads answer again", key)
        else:
            log.error("%s: %s", key, message)
        self._last_error[key] = message

    # --- reads --------------------------------------------------------------------------

    def _read_gpu(self, gpu: Gpu, labels: tuple[str, ...]) -> _GpuReading:
        """Every per-GPU read; raises :class:`RigforgeError` as the backend does."""
        r = _GpuReading()
        constraints = gpu.power_constraints()
        r.draw_w = gpu.power_draw_w()
        r.add("rigforge_gpu_power_draw_watts", labels, r.draw_w)
        r.add("rigforge_gpu_power_limit_watts", labels, gpu.power_limit_w())
        r.add("rigforge_gpu_power_enforced_limit_watts", labels, gpu.enforced_power_limit_w())
        r.add("rigforge_gpu_power_default_limit_watts", labels, constraints.default_w)
        r.add("rigforge_gpu_power_min_limit_watts", labels, constraints.min_w)
        r.add("rigforge_gpu_power_max_limit_watts", labels, constraints.max_w)
        r.add("rigforge_gpu_power_profile_cap_watts", labels, self.caps_w.get(gpu.uuid))
        r.add("rigforge_gpu_temperature_celsius", labels, gpu.temperature_c())
        thresholds = gpu.thresholds()
        for which, value in (
            ("slowdown", thresholds.slowdown_c),
            ("shutdown", thresholds.shutdown_c),
            ("max_operating", thresholds.max_operating_c),
            ("target", thresholds.target_c),
        ):
            r.add("rigforge_gpu_temperature_threshold_celsius", (*labels, which), value)
        r.add("rigforge_gpu_fan_speed_percent", labels, gpu.fan_speed_pct())
        r.add("rigforge_gpu_sm_clock_hertz", labels, _hz(gpu.sm_clock_mhz()))
        r.add("rigforge_gpu_sm_clock_max_hertz", labels, _hz(gpu.max_sm_clock_mhz()))
        r.add("rigforge_gpu_memory_clock_hertz", labels, _hz(gpu.memory_clock_mhz()))
        r.add("rigforge_gpu_utilization_percent", labels, gpu.utilization_pct())
        active = gpu.clock_event_reasons()
        for reason in CLOCK_EVENT_BITS:
            r.add("rigforge_gpu_clock_event_active", (*labels, reason.value), reason in active)
        for reason, seconds in gpu.clock_event_durations_s().items():
            r.add("rigforge_gpu_clock_event_seconds_total", (*labels, reason.value), seconds)
        link = gpu.pcie_link()
        r.add("rigforge_gpu_pcie_link_gen_current", labels, link.gen_current)
        r.add("rigforge_gpu_pcie_link_gen_max", labels, link.gen_max)
        r.add("rigforge_gpu_pcie_link_width_current", labels, link.width_current)
        r.add("rigforge_gpu_pcie_link_width_max", labels, link.width_max)
        r.add("rigforge_gpu_pcie_replays_total", labels, gpu.pcie_replay_count())
        ecc = gpu.ecc()
        if ecc is not None:
            r.add("rigforge_gpu_ecc_enabled", labels, ecc.enabled)
            for kind, count in (
                ("corrected", ecc.corrected_volatile),
                ("uncorrected", ecc.uncorrected_volatile),
            ):
                r.add("rigforge_gpu_ecc_errors_total", (*labels, kind), count)
        persistence = gpu.persistence_mode()
        r.add("rigforge_gpu_persistence_mode", labels, None if persistence is None else persistence)
        return r

    def _collect_gpus(self, f: _Families) -> dict[str, float]:
        """Per-GPU families; returns the measured draw per UUID of the GPUs that answered."""
        draws: dict[str, float] = {}
        self._failed_last = False
        for gpu in self.rig.gpus:
            labels = self._gpu_labels(gpu)
            key = f"GPU {gpu.uuid} ({gpu.pci_bus_id})"
            try:
                reading = self._read_gpu(gpu, labels)
            except RigforgeError as error:
                kind = type(error).__name__
                self.read_errors[(gpu.uuid, kind)] += 1
                self.errors["nvml"] += 1
                self._note_error(key, f"{kind}: {error}")
                f.add("rigforge_gpu_up", labels, 0)
                self._failed_last = True
                continue
            if key in self._last_error:
                self._note_error(key, None)
            for name, sample_labels, value in reading.samples:
                f.add(name, sample_labels, value)
            f.add("rigforge_gpu_up", labels, 1)
            if reading.draw_w is not None:
                draws[gpu.uuid] = reading.draw_w
        for (uuid, kind), count in self.read_errors.items():
            f.add("rigforge_gpu_read_errors_total", (*self._labels[uuid], kind), count)
        for expected in self.expected:
            found = next((g for g in self.rig.gpus if expected.matches(g)), None)
            if found is not None:
                f.add("rigforge_gpu_present", self._gpu_labels(found), 1)
            else:
                labels = (
                    expected.uuid or "",
                    normalize_bus_id(expected.pci_bus_id) if expected.pci_bus_id else "",
                    expected.name or "",
                    self.models_of.get(expected.uuid or "", ""),
                )
                f.add("rigforge_gpu_present", labels, 0)
        return draws

    def _collect_power(self, f: _Families, draws_w: Mapping[str, float]) -> None:
        """PSU DC load = platform + measured GPU draw; circuit wall load = Σ load / efficiency
        (the one budget model, applied to measured watts instead of caps)."""
        loads = self.budget.psu_dc_w(draws_w)
        for psu in self.budget.psus:
            labels = (psu.name, psu.circuit or "")
            f.add("rigforge_psu_load_watts", labels, loads[psu.name])
            f.add("rigforge_psu_rating_watts", labels, psu.rating_w)
        wall = self.budget.circuit_wall_w(loads)
        for circuit in self.budget.circuits:
            f.add("rigforge_circuit_load_watts", (circuit.name,), wall[circuit.name])
            f.add("rigforge_circuit_budget_watts", (circuit.name,), circuit.budget_w)

    def _collect_kernel_log(self, f: _Families) -> None:
        if self.kernel_log is None:
            return
        try:
            self.kernel_log.poll()
            if "kernel log" in self._last_error:
                self._note_error("kernel log", None)
        except OSError as error:
            self.errors["kernel_log"] += 1
            self._note_error("kernel log", f"{self.kernel_log.source.name}: {error}")
        f.add("rigforge_kernel_log_up", (self.kernel_log.source.name,), float(self.kernel_log.up))
        counter = self.kernel_log.counter
        for (bus, code), count in sorted(counter.xids.items()):
            f.add("rigforge_xid_events_total", (bus, str(code)), count)
        for bus, count in sorted(counter.fell_off.items()):
            f.add("rigforge_gpu_fell_off_bus_total", (bus,), count)

    def _collect_serving(self, f: _Families) -> None:
        for target in self.serving:
            port = str(target.port)
            base = (target.model, target.unit, target.engine, port)
            up = self.probe(target)
            if not up:
                self.errors["serving"] += 1
            f.add("rigforge_serving_up", base, float(up))
            f.add("rigforge_serving_info", (*base, target.metrics_url), 1)

    def _collect_enforcement(self, f: _Families) -> None:
        path = self.enforcement_state
        if path is None or not path.is_file():
            return
        try:
            state = EnforcementState.load(path)
        except (OSError, ValueError) as error:
            self.errors["enforcement"] += 1
            self._note_error("enforcement state", f"{path}: {error}")
            return
        for uuid, count in sorted(state.reapplied.items()):
            f.add("rigforge_cap_enforcement_reapplied_total", (uuid,), count)
        f.add("rigforge_cap_enforcement_last_run_timestamp_seconds", (), state.last_run_unix_s)

    # --- the scrape ---------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every family of :data:`METRICS` (empty ones too), read now.

        Scrapes are serialised: the HTTP server answers each in its own thread, and the rig,
        the kernel-log reader and the error counters are one state.
        """
        with self._lock:
            families = self._scrape()
        yield from families

    def _scrape(self) -> list[Metric]:
        started = time.perf_counter()
        f = _Families()
        if self.before_scrape is not None:
            try:
                self.before_scrape()
            except (RigforgeError, OSError) as error:  # e.g. a simulated rig's state unreadable
                self.errors["nvml"] += 1
                self._note_error("rig", str(error))
        self._maybe_reopen()
        f.add(
            "rigforge_exporter_info",
            (__version__, self.spec, self.profile_fingerprint),
            1,
        )
        draws = self._collect_gpus(f)
        self._collect_power(f, draws)
        self._collect_kernel_log(f)
        self._collect_serving(f)
        self._collect_enforcement(f)
        for source, count in sorted(self.errors.items()):
            f.add("rigforge_exporter_errors_total", (source,), count)
        f.add("rigforge_exporter_scrape_duration_seconds", (), time.perf_counter() - started)
        return list(f.by_name.values())

    def describe(self) -> Iterator[Metric]:
        """No samples at registration (reading the rig then would cost a scrape)."""
        return iter(())


def _hz(mhz: float | None) -> float | None:
    return None if mhz is None else mhz * _HZ_PER_MHZ


def exposition(collector: RigCollector) -> bytes:
    """The Prometheus text exposition of one scrape (tests, the bench, ``--once``)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
