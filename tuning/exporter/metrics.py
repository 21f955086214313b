"""The exporter's metrics: one definition of every series ``rigforge exporter`` writes.

The collector builds its families from :data:`METRICS`, ``docs/monitoring.md`` lists them
(a test keeps the page in step), and the alert rules and the Grafana dashboard may only name
metrics found here (tests check both). Units are Prometheus base units, in the names: watts,
celsius, hertz, seconds, percent, ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"


#: The labels of every per-GPU series. ``model``: the plan's models on the GPU, comma-joined
#: (empty when no plan was given or nothing is placed there).
GPU_LABELS: tuple[str, ...] = ("uuid", "pci_bus_id", "name", "model")


@dataclass(frozen=True)
class MetricDef:
    """One metric: its exposed name (counters end in ``_total``), kind, help and labels."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    @property
    def family_name(self) -> str:
        """The name ``prometheus_client`` families take (a counter without ``_total``)."""
        return self.name.removesuffix("_total") if self.kind is Kind.COUNTER else self.name


def _gpu(name: str, kind: Kind, help_text: str, *extra: str) -> MetricDef:
    return MetricDef(name, kind, help_text, (*GPU_LABELS, *extra))


G, C = Kind.GAUGE, Kind.COUNTER

METRICS: tuple[MetricDef, ...] = (
    # --- the exporter itself -------------------------------------------------------------
    MetricDef(
        "rigforge_exporter_info",
        G,
        "Always 1; labels say what this exporter reads (rig spec, profile fingerprint).",
        ("version", "rig", "profile_fingerprint"),
    ),
    MetricDef(
        "rigforge_exporter_scrape_duration_seconds",
        G,
        "Time this scrape took to read the rig, the kernel log and the serving units.",
    ),
    MetricDef(
        "rigforge_exporter_errors_total",
        C,
        "Read errors by source (nvml, kernel_log, serving, enforcement); each is also logged.",
        ("source",),
    ),
    # --- identity and presence ----------------------------------------------------------
    _gpu("rigforge_gpu_up", G, "1 when every read of this GPU answered this scrape, else 0."),
    _gpu(
        "rigforge_gpu_present",
        G,
        "GPUs the profile or inventory expects: 1 seen on the bus, 0 missing.",
    ),
    _gpu(
        "rigforge_gpu_read_errors_total",
        C,
        "NVML reads of this GPU that failed, by rigforge error (GpuLost, …).",
        "error",
    ),
    # --- power ---------------------------------------------------------------------------
    _gpu("rigforge_gpu_power_draw_watts", G, "Board power, NVML's 1 s average."),
    _gpu("rigforge_gpu_power_limit_watts", G, "Configured power limit."),
    _gpu(
        "rigforge_gpu_power_enforced_limit_watts",
        G,
        "Power limit the card enforces (the lowest of every limit in force).",
    ),
    _gpu("rigforge_gpu_power_default_limit_watts", G, "The card's default power limit."),
    _gpu("rigforge_gpu_power_min_limit_watts", G, "Lowest settable power limit."),
    _gpu("rigforge_gpu_power_max_limit_watts", G, "Highest settable power limit."),
    _gpu(
        "rigforge_gpu_power_profile_cap_watts",
        G,
        "The cap the tuning profile chose for this GPU (cap drift: enforced differs).",
    ),
    # --- heat ----------------------------------------------------------------------------
    _gpu("rigforge_gpu_temperature_celsius", G, "GPU core temperature."),
    _gpu(
        "rigforge_gpu_temperature_threshold_celsius",
        G,
        "Temperature thresholds: slowdown (HW slowdown), shutdown, max_operating, target.",
        "threshold",
    ),
    _gpu("rigforge_gpu_fan_speed_percent", G, "Fan duty (absent on passive cards)."),
    # --- clocks and clock events ---------------------------------------------------------
    _gpu("rigforge_gpu_sm_clock_hertz", G, "Current SM clock."),
    _gpu("rigforge_gpu_sm_clock_max_hertz", G, "Maximum SM clock."),
    _gpu("rigforge_gpu_memory_clock_hertz", G, "Current memory clock."),
    _gpu("rigforge_gpu_utilization_percent", G, "GPU utilisation over the driver's window."),
    _gpu(
        "rigforge_gpu_clock_event_active",
        G,
        "1 while a clock-event (throttle) reason is active, per NVML reason name.",
        "reason",
    ),
    _gpu(
        "rigforge_gpu_clock_event_seconds_total",
        C,
        "Time spent in a clock-event reason since the driver loaded (where NVML counts it).",
        "reason",
    ),
    # --- PCIe ----------------------------------------------------------------------------
    _gpu("rigforge_gpu_pcie_link_gen_current", G, "Negotiated PCIe generation now."),
    _gpu("rigforge_gpu_pcie_link_gen_max", G, "Highest PCIe generation of this GPU in its slot."),
    _gpu("rigforge_gpu_pcie_link_width_current", G, "Negotiated PCIe lanes now."),
    _gpu("rigforge_gpu_pcie_link_width_max", G, "Highest PCIe width of this GPU in its slot."),
    _gpu("rigforge_gpu_pcie_replays_total", C, "PCIe replays since the driver loaded."),
    # --- ECC, persistence ----------------------------------------------------------------
    _gpu("rigforge_gpu_ecc_enabled", G, "1 when ECC is on (absent on cards without ECC)."),
    _gpu(
        "rigforge_gpu_ecc_errors_total",
        C,
        "Volatile ECC errors since the driver loaded, type corrected or uncorrected.",
        "type",
    ),
    _gpu("rigforge_gpu_persistence_mode", G, "1 when persistence mode is on."),
    # --- power supply ------------------------------------------------------------------
    MetricDef(
        "rigforge_psu_load_watts",
        G,
        "Estimated DC load of a PSU: its platform draw plus the measured draw of its GPUs.",
        ("psu", "circuit"),
    ),
    MetricDef("rigforge_psu_rating_watts", G, "A PSU's DC rating.", ("psu", "circuit")),
    MetricDef(
        "rigforge_circuit_load_watts",
        G,
        "Estimated wall load of a circuit: its PSUs' loads divided by their efficiency.",
        ("circuit",),
    ),
    MetricDef(
        "rigforge_circuit_budget_watts",
        G,
        "A circuit's continuous budget (breaker x voltage x continuous ratio, NEC 80 %).",
        ("circuit",),
    ),
    # --- kernel log ----------------------------------------------------------------------
    MetricDef(
        "rigforge_kernel_log_up",
        G,
        "1 while the kernel log (/dev/kmsg or the journal) is being read, else 0.",
        ("source",),
    ),
    MetricDef(
        "rigforge_xid_events_total",
        C,
        "NVIDIA Xid events in the kernel log since boot, per GPU bus id and Xid code.",
        ("pci_bus_id", "code"),
    ),
    MetricDef(
        "rigforge_gpu_fell_off_bus_total",
        C,
        "'fallen off the bus' messages in the kernel log since boot that carried no Xid.",
        ("pci_bus_id",),
    ),
    # --- serving -------------------------------------------------------------------------
    MetricDef(
        "rigforge_serving_up",
        G,
        "1 when a planned serving unit answers its health endpoint on its port, else 0.",
        ("model", "unit", "engine", "port"),
    ),
    MetricDef(
        "rigforge_serving_info",
        G,
        "Always 1: where each planned engine's own Prometheus metrics are (scrape it there).",
        ("model", "unit", "engine", "port", "metrics_url"),
    ),
    # --- cap enforcement -----------------------------------------------------------------
    MetricDef(
        "rigforge_cap_enforcement_reapplied_total",
        C,
        "Caps the enforcement timer found reverted and re-applied, per GPU UUID.",
        ("uuid",),
    ),
    MetricDef(
        "rigforge_cap_enforcement_last_run_timestamp_seconds",
        G,
        "Unix time of the enforcement timer's last completed run.",
    ),
)

METRICS_BY_NAME: Mapping[str, MetricDef] = {m.name: m for m in METRICS}


def metric_names() -> frozenset[str]:
    """Every exposed metric name (counters with ``_total``)."""
    return frozenset(METRICS_BY_NAME)
