"""``rigforge apply PROFILE``: set a profile's caps on this rig's GPUs, by UUID.

What the boot-time unit runs. Caps are clamped to each GPU's range and read back; a UUID the
rig lacks, or caps that (with the platform draw) exceed the power budget, refuse the whole
profile before anything changes. Caps are lowered before any is raised, inside a journaled
session: a set or read-back that fails transiently (read-back mismatch, NVML unknown/timeout)
is retried (``--retries``, default 3, ``--retry-delay-s`` apart); a failure that persists, or any
other failure on any GPU (lost GPU, no permission, a signal), puts every GPU back and exits
non-zero naming the GPU; on success the caps stay applied (no restore): that is the point.
``--record FILE`` (the ``power.enforce`` timer) counts the GPUs whose cap had to be put back
(:mod:`tuning.exporter.enforcement`; the exporter reports it).

The budget: ``--budget FILE``, ``--inventory FILE --host NAME``, else
``/etc/rigforge/budget.yaml`` for ``--rig nvml`` when present (``deploys/tune.py`` installs
it), else a simulated rig's own PSUs; real GPUs without any are applied unchecked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from tuning.apply.actuator import open_tuning_rig
from tuning.apply.caps import apply_caps
from tuning.apply.journal import recover_stale_journals
from tuning.budget import BudgetModel
from tuning.commands.budget_opts import budget_options, resolve_budget
from tuning.commands.options import host_option, json_option, rig_option
from tuning.core.profile import load_profile
from tuning.exporter.enforcement import record_run


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.command("apply")
@click.argument("profile_path", metavar="PROFILE", type=click.Path(path_type=Path))
@rig_option("nvml (this machine), sim:NAME or a rig YAML file.", default="nvml")
@click.option("--dry-run", is_flag=True, help="show what would change; change nothing.")
@json_option(None)
@host_option("the --inventory host whose budget to use.")
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=3,
    show_default=True,
    help="retries of a set/read-back that fails transiently (read-back mismatch, NVML "
    "unknown/timeout) before the whole apply rolls back.",
)
@click.option(
    "--retry-delay-s",
    type=click.FloatRange(0.0, 60.0),
    default=0.5,
    show_default=True,
    help="seconds between retries.",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="add this run to an enforcement record (caps re-applied per GPU; the exporter "
    "reports it): what the power.enforce timer passes.",
)
@budget_options
def command(
    profile_path: Path,
    rig_spec: str,
    dry_run: bool,
    as_json: bool,
    host_name: str | None,
    retries: int,
    retry_delay_s: float,
    record_path: Path | None,
    budget_path: Path | None,
    inventory_path: Path | None,
    no_budget: bool,
) -> None:
    """Apply the power caps of a tuning profile (PROFILE: profile.yaml or its folder)."""
    profile = load_profile(profile_path)
    budget = resolve_budget(
        rig_spec,
        budget_path=budget_path,
        inventory_path=inventory_path,
        host_name=host_name,
        no_budget=no_budget,
        required=False,
        log=_log,
    )
    if not dry_run:
        recover_stale_journals(_log)
    rig, actuator = open_tuning_rig(rig_spec, budget=budget)
    budget_model = budget.model(rig.gpus) if budget is not None else BudgetModel.from_rig(rig)
    fingerprint = rig.snapshot().fingerprint()
    if fingerprint != profile.rig.fingerprint:
        click.echo(
            f"rigforge: warning: the profile was made on a rig with fingerprint "
            f"{profile.rig.fingerprint}, this one is {fingerprint} (a GPU moved or changed); "
            "applying by UUID",
            err=True,
        )
    results = apply_caps(
        actuator,
        profile.caps_w(),
        dry_run=dry_run,
        budget=budget_model,
        log=_log,
        retries=retries,
        retry_delay_s=retry_delay_s,
    )
    if record_path is not None and not dry_run:
        reapplied = [r.uuid for r in results if r.changed]
        for uuid in reapplied:
            _log(f"rigforge: enforcement: GPU {uuid}'s cap had reverted; re-applied")
        record_run(record_path, reapplied, time.time())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "gpus": [
                        {
                            "uuid": r.uuid,
                            "before_w": r.before_w,
                            "cap_w": r.target_w,
                            "requested_w": r.requested_w,
                            "read_back_w": r.read_back_w,
                            "changed": r.changed,
                        }
                        for r in results
                    ],
                },
                indent=1,
            )
        )
        return
    verb = "would set" if dry_run else "set"
    for r in results:
        clamp = f" (clamped from {r.requested_w:g})" if r.target_w != r.requested_w else ""
        if r.changed:
            click.echo(f"{r.uuid}: {verb} {r.before_w:g} → {r.target_w:g} W{clamp}")
        else:
            click.echo(f"{r.uuid}: already {r.target_w:g} W")
