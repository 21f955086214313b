"""``rigforge restore``: put GPUs back to the settings journaled before an interrupted run."""

from __future__ import annotations

import json
from typing import Any

import click

from tuning.apply.journal import (
    Journal,
    backup_path,
    journal_path,
    restore_journal,
    stale_journals,
)
from tuning.commands.options import json_option, rig_option
from tuning.errors import RigforgeError


@click.command("restore")
@rig_option("only this rig's journal (default: every journal left by a dead run).", default=None)
@json_option("print what was restored as JSON.")
def command(rig_spec: str | None, as_json: bool) -> None:
    """Restore original GPU settings from journals left by interrupted runs."""
    if rig_spec is not None:
        path = journal_path(rig_spec)
        exists = path.is_file() or backup_path(path).is_file()
        if exists and Journal.load(path).owner_alive():
            raise RigforgeError(
                f"a running rigforge (pid {Journal.load(path).pid}) holds {rig_spec}; "
                "stop it (it restores on exit) instead"
            )
        paths = [path] if exists else []
    else:
        paths = stale_journals()
    report: list[dict[str, Any]] = []
    for path in paths:
        journal = Journal.load(path)
        failures = restore_journal(path, log=lambda m: click.echo(m, err=True))
        report.append(
            {
                "rig": journal.rig_spec,
                "journal": str(path),
                "restored": {
                    uuid: s.power_limit_w
                    for uuid, s in journal.original.items()
                    if uuid not in failures
                },
                "failures": failures,
            }
        )
    if as_json:
        click.echo(json.dumps({"journals": report}, indent=1))
    elif not report:
        click.echo("nothing to restore: no journal left by an interrupted run")
    for entry in report:
        if not as_json:
            for uuid, cap in entry["restored"].items():
                click.echo(f"{entry['rig']}: {uuid} back at {cap:g} W")
        for uuid, error in entry["failures"].items():
            click.echo(f"{entry['rig']}: {uuid} NOT restored: {error}", err=True)
    if any(entry["failures"] for entry in report):
        raise SystemExit(1)
