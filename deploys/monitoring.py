"""Monitoring: ``rigforge-exporter.service``, the cap-enforcement timer, Prometheus from Debian.

* ``monitoring.exporter: true`` — the exporter as an unprivileged, hardened unit (exposure ≤ 3
  by ``systemd-analyze security``) on ``monitoring.listen`` (localhost unless
  ``monitoring.open``), reading the profile and the plan this deploy puts in ``/etc/rigforge``
  and Xid events from the journal (``SupplementaryGroups=systemd-journal``).
* ``power.enforce: true`` — ``rigforge-enforce-caps.timer`` runs ``rigforge apply PROFILE
  --record …`` every ``ENFORCE_INTERVAL_MIN`` minutes: a cap that reverted is put back,
  logged and counted (``rigforge_cap_enforcement_reapplied_total``).
* ``monitoring.prometheus: true`` — Debian's ``prometheus`` on ``monitoring.prometheus_listen``
  (127.0.0.1:9090 unless the inventory says otherwise) with a scrape
  config for the exporter and each serving engine's ``/metrics`` and the shipped alert rules.

The files' contents are :mod:`tuning.render.files` (``exporter_unit``, ``enforce_units``,
``prometheus_files``). Turning a part off removes what an earlier deploy installed (units
stopped, disabled, deleted). Files change only when their content does; units restart only
then.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy

from deploys.operations.systemd import restart_step
from deploys.util import (
    TEMPLATES,
    FileSpec,
    TextFile,
    cfg,
    ensure_packages,
    put_files,
    service_after_change,
    snapshot,
    unit_removed,
)
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


@deploy("Monitoring: exporter, cap enforcement, Prometheus", data_defaults=DEFAULTS)
def monitoring() -> None:
    """Install (or remove) the exporter unit, the enforcement timer and Prometheus."""
    config = cfg()  # validated: inventory.host_checks refused what cannot work
    m = config.monitoring
    if m.exporter:
        plan = bool(config.serving.plan)
        files: list[FileSpec | TextFile] = []
        if plan:
            files.append(
                TextFile(
                    dest=PLAN_TARGET,
                    text=Path(config.serving.plan or "").read_text(encoding="utf-8"),
                    name=f"Placement plan ({PLAN_TARGET}) for the exporter",
                    mode="640",
                )
            )
        # the profile: deploys/gpu_settings.py puts it at /etc/rigforge/profile.yaml
        unit = exporter_unit(config, profile=bool(config.power.profile), plan=plan)
        snap = snapshot(paths=[*(f.dest for f in files), unit.dest], units=[EXPORTER_UNIT])
        step = restart_step(EXPORTER_UNIT) if snap.systemd_booted else None
        wanted = put_files(files, snap, step, group=config.base.service_user)
        wanted.update(put_files([unit], snap, step))
        service_after_change(EXPORTER_UNIT, snap=snap, wanted=wanted, name="rigforge exporter")
    else:
        unit_removed(EXPORTER_UNIT, name="rigforge exporter (monitoring.exporter off)")

    if config.power.enforce:
        specs = enforce_units(config)
        snap = snapshot(paths=[s.dest for s in specs], units=[ENFORCE_TIMER])
        step = restart_step(ENFORCE_TIMER) if snap.systemd_booted else None
        wanted = put_files(specs, snap, step)
        service_after_change(ENFORCE_TIMER, snap=snap, wanted=wanted, name="Cap enforcement")
    else:
        unit_removed(
            ENFORCE_TIMER,
            extra_paths=(f"/etc/systemd/system/{ENFORCE_SERVICE}",),
            name="Cap enforcement timer (power.enforce off)",
        )

    if m.prometheus:
        prom: list[FileSpec | TextFile] = [
            *prometheus_files(config),
            TextFile(
                dest=RULES_DEST,
                text=RULES_SOURCE.read_text(encoding="utf-8"),
                name="Alert rules (rigforge.rules.yml)",
            ),
        ]
        snap = snapshot(paths=[f.dest for f in prom], units=[PROMETHEUS_UNIT])
        step = restart_step(PROMETHEUS_UNIT) if snap.systemd_booted else None
        wanted = put_files(prom, snap, step)
        # After the files: the package's postinst starts prometheus.service at once, so it
        # must find our ARGS (listen on monitoring.prometheus_listen, never Debian's default
        # 0.0.0.0:9090) and config already there; --force-confold keeps them as they are.
        ensure_packages(host.data.rigforge_monitoring_packages, name="Prometheus from Debian")
        service_after_change(PROMETHEUS_UNIT, snap=snap, wanted=wanted, name="Prometheus")
    else:
        host.noop("monitoring.prometheus off: Prometheus is not managed here")
