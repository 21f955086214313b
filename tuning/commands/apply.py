"""``rigforge apply PROFILE``: set a profile's caps on this rig's GPUs, by UUID.

What the boot-time unit runs. Caps are clamped to each GPU's range and read back; a UUID the
rig lacks refuses the whole profile before anything changes; a read-back mismatch exits
non-zero. The caps stay applied (no restore): that is the point.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tuning.apply import apply_caps, open_tuning_rig, recover_stale_journals
from tuning.profile import load_profile


@click.command("apply")
@click.argument("profile_path", metavar="PROFILE", type=click.Path(path_type=Path))
@click.option(
    "--rig",
    "rig_spec",
    default="nvml",
    show_default=True,
    help="nvml (this machine), sim:NAME or a rig YAML file.",
)
@click.option("--dry-run", is_flag=True, help="show what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def command(profile_path: Path, rig_spec: str, dry_run: bool, as_json: bool) -> None:
    """Apply the power caps of a tuning profile (PROFILE: profile.yaml or its folder)."""
    profile = load_profile(profile_path)
    if not dry_run:
        recover_stale_journals(lambda m: click.echo(m, err=True))
    rig, actuator = open_tuning_rig(rig_spec)
    fingerprint = rig.snapshot().fingerprint()
    if fingerprint != profile.rig.fingerprint:
        click.echo(
            f"rigforge: warning: the profile was made on a rig with fingerprint "
            f"{profile.rig.fingerprint}, this one is {fingerprint} (a GPU moved or changed); "
            "applying by UUID",
            err=True,
        )
    results = apply_caps(actuator, profile.caps_w(), dry_run=dry_run)
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
