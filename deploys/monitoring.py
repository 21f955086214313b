"""Monitoring: ``rigforge-exporter.service``, the cap-enforcement timer, Prometheus from Debian.

* ``monitoring.exporter: true`` — the exporter as an unprivileged, hardened unit (exposure ≤ 3
  by ``systemd-analyze security``) on ``monitoring.listen`` (localhost unless
  ``monitoring.open``), reading the profile and the plan this deploy puts in ``/etc/rigforge``
  and Xid events from the journal (``SupplementaryGroups=systemd-journal``).
* ``monitoring.textfile: true`` — ``rigforge-textfile.timer`` writes one scrape to
  ``/var/lib/prometheus/node-exporter/rigforge.prom`` every ``monitoring.textfile_interval_s``
  (atomically), for node-exporter's textfile collector; ``monitoring.node_exporter: true``
  installs Debian's ``prometheus-node-exporter`` on ``monitoring.node_exporter_listen``.
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
    TEXTFILE_PATH,
    TEXTFILE_SERVICE,
    TEXTFILE_TIMER,
    enforce_units,
    exporter_unit,
    node_exporter_default,
    prometheus_files,
    textfile_units,
)

PROMETHEUS_UNIT = "prometheus.service"
NODE_EXPORTER_UNIT = "prometheus-node-exporter.service"
RULES_SOURCE = TEMPLATES / "etc" / "prometheus" / "rules" / "rigforge.rules.yml"

DEFAULTS = {
    "rigforge_monitoring_packages": ["prometheus"],
    "rigforge_node_exporter_packages": ["prometheus-node-exporter"],
}


@deploy("Monitoring: exporter, cap enforcement, Prometheus", data_defaults=DEFAULTS)
def monitoring() -> None:
    """Install (or remove) the exporter unit, the enforcement timer and Prometheus."""
    config = cfg()  # validated: inventory.host_checks refused what cannot work
    m = config.monitoring
    plan = bool(config.serving.plan)
    # the profile: deploys/gpu_settings.py puts it at /etc/rigforge/profile.yaml
    profile = bool(config.power.profile)
    plan_files: list[FileSpec | TextFile] = []
    if plan and (m.exporter or m.textfile):
        plan_files.append(
            TextFile(
                dest=PLAN_TARGET,
                text=Path(config.serving.plan or "").read_text(encoding="utf-8"),
                name=f"Placement plan ({PLAN_TARGET}) for the exporter",
                mode="640",
            )
        )
    if m.exporter:
        unit = exporter_unit(config, profile=profile, plan=plan)
        snap = snapshot(paths=[*(f.dest for f in plan_files), unit.dest], units=[EXPORTER_UNIT])
        step = restart_step(EXPORTER_UNIT) if snap.systemd_booted else None
        wanted = put_files(plan_files, snap, step, group=config.base.service_user)
        wanted.update(put_files([unit], snap, step))
        service_after_change(EXPORTER_UNIT, snap=snap, wanted=wanted, name="rigforge exporter")
    else:
        unit_removed(EXPORTER_UNIT, name="rigforge exporter (monitoring.exporter off)")

    if m.textfile:
        # root reads the plan here (it runs as root); the exporter's copy is the same file
        specs = textfile_units(config, profile=profile, plan=plan)
        paths = [*(f.dest for f in plan_files), *(s.dest for s in specs)]
        snap = snapshot(paths=paths, units=[TEXTFILE_TIMER])
        step = restart_step(TEXTFILE_TIMER) if snap.systemd_booted else None
        wanted = put_files(plan_files, snap, step, group=config.base.service_user)
        wanted.update(put_files(specs, snap, step))
        service_after_change(TEXTFILE_TIMER, snap=snap, wanted=wanted, name="Textfile collector")
    else:
        unit_removed(
            TEXTFILE_TIMER,
            extra_paths=(f"/etc/systemd/system/{TEXTFILE_SERVICE}", TEXTFILE_PATH),
            name="Textfile collector timer (monitoring.textfile off)",
        )

    if m.node_exporter:
        default = node_exporter_default(config)
        snap = snapshot(paths=[default.dest], units=[NODE_EXPORTER_UNIT])
        step = restart_step(NODE_EXPORTER_UNIT) if snap.systemd_booted else None
        wanted = put_files([default], snap, step)
        # before the package, as Prometheus's: its postinst starts it on Debian's *:9100
        ensure_packages(host.data.rigforge_node_exporter_packages, name="node-exporter from Debian")
        service_after_change(NODE_EXPORTER_UNIT, snap=snap, wanted=wanted, name="node-exporter")
    else:
        host.noop("monitoring.node_exporter off: node-exporter is not managed here")

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
