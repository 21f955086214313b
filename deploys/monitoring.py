"""Monitoring: ``rigforge-exporter.service``, the cap-enforcement timer, Prometheus from Debian.

* ``monitoring.exporter: true`` — the exporter as an unprivileged, hardened unit (exposure ≤ 3
  by ``systemd-analyze security``) on ``monitoring.listen`` (localhost unless
  ``monitoring.open``), reading the profile and the plan this deploy puts in ``/etc/rigforge``
  and Xid events from the journal (``SupplementaryGroups=systemd-journal``).
* ``power.enforce: true`` — ``rigforge-enforce-caps.timer`` runs ``rigforge apply PROFILE
  --record …`` every ``ENFORCE_INTERVAL_MIN`` minutes: a cap that reverted is put back,
  logged and counted (``rigforge_cap_enforcement_reapplied_total``).
* ``monitoring.prometheus: true`` — Debian's ``prometheus`` on 127.0.0.1:9090 with a scrape
  config for the exporter and each serving engine's ``/metrics`` and the shipped alert rules.

The files' contents are :mod:`tuning.render.files` (``exporter_unit``, ``enforce_units``,
``prometheus_files``). Turning a part off removes what an earlier deploy installed (units
stopped, disabled, deleted). Files change only when their content does; units restart only
then.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta

from deploys.util import (
    TEMPLATES,
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
from tuning.render.files import (
    ENFORCE_SERVICE,
    ENFORCE_TIMER,
    EXPORTER_UNIT,
    PLAN_TARGET,
    RULES_DEST,
    enforce_units,
    exporter_unit,
    prometheus_files,
)

PROMETHEUS_UNIT = "prometheus.service"
RULES_SOURCE = TEMPLATES / "etc" / "prometheus" / "rules" / "rigforge.rules.yml"

DEFAULTS = {
    "rigforge_monitoring_packages": ["prometheus"],
}


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
                    PLAN_TARGET,
                    Path(config.serving.plan or "").read_text(encoding="utf-8"),
                    step,
                    name=f"Placement plan ({PLAN_TARGET}) for the exporter",
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
