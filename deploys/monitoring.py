"""Monitoring: ``rigforge-exporter.service``, the cap-enforcement timer, Prometheus from Debian.

* ``monitoring.exporter: true`` — the exporter as an unprivileged, hardened unit (exposure ≤ 3
  by ``systemd-analyze security``) on ``monitoring.listen`` (localhost unless
  ``monitoring.open``), reading the profile and the plan this deploy puts in ``/etc/rigforge``
  and Xid events from the journal (``SupplementaryGroups=systemd-journal``).
* ``power.enforce: true`` — ``rigforge-enforce-caps.timer`` runs ``rigforge apply PROFILE
  --record …`` every :data:`ENFORCE_INTERVAL_MIN` minutes: a cap that reverted is put back,
  logged and counted (``rigforge_cap_enforcement_reapplied_total``).
* ``monitoring.prometheus: true`` — Debian's ``prometheus`` on 127.0.0.1:9090 with a scrape
  config for the exporter and each serving engine's ``/metrics`` and the shipped alert rules.

Turning a part off removes what an earlier deploy installed (units stopped, disabled, deleted).
Files change only when their content does; units restart only then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta

from deploys.util import (
    REPO_ROOT,
    FileSpec,
    cfg,
    ensure_packages,
    put_pending,
    put_text_pending,
    restart_step,
    service_after_change,
    unit_removed,
)
from inventory.schema import HostConfig
from tuning.errors import ConfigError

EXPORTER_UNIT = "rigforge-exporter.service"
ENFORCE_SERVICE = "rigforge-enforce-caps.service"
ENFORCE_TIMER = "rigforge-enforce-caps.timer"
PROMETHEUS_UNIT = "prometheus.service"

PROFILE_PATH = "/etc/rigforge/profile.yaml"
PLAN_PATH = "/etc/rigforge/plan.yaml"
STATE_DIR = "/var/lib/rigforge/state"
ENFORCEMENT_STATE = f"{STATE_DIR}/enforce.json"
SIM_CONTROL = "/var/lib/rigforge/sim-control.json"
RULES_SOURCE = REPO_ROOT / "templates" / "etc" / "prometheus" / "rules" / "rigforge.rules.yml"
RULES_DEST = "/etc/prometheus/rules/rigforge.rules.yml"
#: How often enforcement re-checks the caps. Shorter than the cap-drift alert's ``for: 10m``,
#: so that alert fires only when enforcement is off or failing. Units: min.
ENFORCE_INTERVAL_MIN = 5
#: Where Debian's Prometheus listens (its default port, bound to localhost).
PROMETHEUS_LISTEN = "127.0.0.1:9090"

DEFAULTS = {
    "rigforge_monitoring_packages": ["prometheus"],
}


def exporter_unit(config: HostConfig, *, profile: bool, plan: bool) -> FileSpec:
    """``rigforge-exporter.service`` for this host (``profile``/``plan``: put on the host)."""
    m = config.monitoring
    address = m.listen.rpartition(":")[0].strip("[]")
    return FileSpec(
        dest=f"/etc/systemd/system/{EXPORTER_UNIT}",
        template=f"etc/systemd/system/{EXPORTER_UNIT}.j2",
        context={
            "user": config.base.service_user,
            "venv": config.tuner.venv,
            "rig": m.rig,
            "listen": m.listen,
            "opened": not ipaddress.ip_address(address).is_loopback,
            "state_dir": STATE_DIR,
            "enforcement_state": ENFORCEMENT_STATE,
            "profile": PROFILE_PATH if profile else None,
            "plan": PLAN_PATH if plan else None,
            "sim": m.rig.startswith("sim:"),
            "sim_control": SIM_CONTROL,
        },
        name=f"Exporter unit ({m.listen})",
    )


def enforce_units(config: HostConfig) -> list[FileSpec]:
    """The oneshot that re-applies the profile's caps and the timer that runs it."""
    context = {
        "venv": config.tuner.venv,
        "profile": PROFILE_PATH,
        "rig": config.monitoring.rig,
        "enforcement_state": ENFORCEMENT_STATE,
        "interval_min": ENFORCE_INTERVAL_MIN,
    }
    return [
        FileSpec(
            dest=f"/etc/systemd/system/{unit}",
            template=f"etc/systemd/system/{unit}.j2",
            context=context,
            name=f"Cap enforcement {unit.rsplit('.', 1)[1]}",
        )
        for unit in (ENFORCE_SERVICE, ENFORCE_TIMER)
    ]


def engine_targets(config: HostConfig) -> list[dict[str, object]]:
    """Each placed model's engine (port, model, unit, engine) from the plan, for scraping."""
    if not config.serving.plan:
        return []
    from tuning.placement import load_plan
    from tuning.serving import unit_name

    return [
        {"port": p.port, "model": p.model, "unit": unit_name(p), "engine": p.engine}
        for p in load_plan(config.serving.plan).placements
    ]


def prometheus_files(config: HostConfig) -> list[FileSpec]:
    """``/etc/prometheus/prometheus.yml`` and ``/etc/default/prometheus`` (the listen address)."""
    return [
        FileSpec(
            dest="/etc/prometheus/prometheus.yml",
            template="etc/prometheus/prometheus.yml.j2",
            context={
                "interval_s": config.monitoring.scrape_interval_s,
                "prometheus_listen": PROMETHEUS_LISTEN,
                "exporter": config.monitoring.listen,
                "engines": engine_targets(config),
            },
            name="Prometheus scrape config (exporter, engines, rules)",
        ),
        FileSpec(
            dest="/etc/default/prometheus",
            template="etc/default/prometheus.j2",
            context={"listen": PROMETHEUS_LISTEN},
            name=f"Prometheus listens on {PROMETHEUS_LISTEN}",
        ),
    ]


def check(config: HostConfig) -> None:
    """Refuse, before anything reaches the host, what cannot work (:class:`ConfigError`)."""
    needs_tuner = [
        what
        for what, wanted in (
            ("monitoring.exporter", config.monitoring.exporter),
            ("power.enforce", config.power.enforce),
        )
        if wanted
    ]
    if needs_tuner and not config.tuner.install:
        raise ConfigError(
            f"{' and '.join(needs_tuner)} run rigforge on the host: set tuner.install: true"
        )


def _put_all(specs: Sequence[FileSpec], step: str | None) -> list[OperationMeta]:
    return [put_pending(spec, step) for spec in specs]


@deploy("Monitoring: exporter, cap enforcement, Prometheus", data_defaults=DEFAULTS)
def monitoring() -> None:
    """Install (or remove) the exporter unit, the enforcement timer and Prometheus."""
    config = cfg()
    check(config)
    m = config.monitoring
    user = config.base.service_user
    if m.exporter:
        step = restart_step(EXPORTER_UNIT)
        changed: list[OperationMeta] = []
        plan = bool(config.serving.plan)
        if plan:
            changed.append(
                put_text_pending(
                    PLAN_PATH,
                    Path(config.serving.plan or "").read_text(encoding="utf-8"),
                    step,
                    name=f"Placement plan ({PLAN_PATH}) for the exporter",
                    mode="640",
                    group=user,
                )
            )
        profile = bool(config.power.profile)  # deploys/gpu_settings.py puts it there
        changed += _put_all([exporter_unit(config, profile=profile, plan=plan)], step)
        service_after_change(EXPORTER_UNIT, changed=changed, name="rigforge exporter", step=step)
    else:
        unit_removed(EXPORTER_UNIT, name="rigforge exporter (monitoring.exporter off)")

    if config.power.enforce:
        step = restart_step(ENFORCE_TIMER)
        changed = _put_all(enforce_units(config), step)
        service_after_change(
            ENFORCE_TIMER, changed=changed, name="Cap enforcement timer", step=step
        )
    else:
        unit_removed(
            ENFORCE_TIMER,
            extra_paths=(f"/etc/systemd/system/{ENFORCE_SERVICE}",),
            name="Cap enforcement timer (power.enforce off)",
        )

    if m.prometheus:
        ensure_packages(host.data.rigforge_monitoring_packages, name="Prometheus from Debian")
        step = restart_step(PROMETHEUS_UNIT)
        changed = _put_all(prometheus_files(config), step)
        changed.append(
            put_text_pending(
                RULES_DEST,
                RULES_SOURCE.read_text(encoding="utf-8"),
                step,
                name="Alert rules (rigforge.rules.yml)",
            )
        )
        service_after_change(PROMETHEUS_UNIT, changed=changed, name="Prometheus", step=step)
    else:
        host.noop("monitoring.prometheus off: Prometheus is not managed here")
