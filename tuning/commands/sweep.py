"""``rigforge sweep``: find per-GPU power caps under a workload, inside the power budget.

Progress goes to stderr (so ``--json`` stdout stays clean); the final table or the JSON
document goes to stdout; ``--out DIR`` writes ``DIR/profile.yaml``, ``DIR/curves.png`` and
``DIR/heat_soak.png``; ``--profile-out FILE`` writes only the profile; ``--host NAME`` writes it
back as inventory host data (``INVENTORY_DIR/host_data/NAME/profile.yaml``, the path the
inventory's ``power.profile`` defaults to), so the next ``pyinfra`` run applies it; an
inventory in ``--inventory-dir`` (default: ``--inventory``'s folder, else ``./inventory``) must
declare the host.
The original settings are journaled before the first change and restored when the sweep ends,
however it ends.

Exit status: 0 when the heat-soak validation passed and no GPU is flagged; 1 otherwise, and
then the profile is not written to ``--host``'s data or ``--profile-out`` (what gets applied)
unless ``--force``; ``--out DIR`` still gets it (``validation.passed: false``) and the plots.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import TaskID

from inventory.host_data import host_data_path
from tuning.apply.actuator import open_tuning_rig
from tuning.apply.journal import recover_stale_journals
from tuning.apply.session import SafetySession
from tuning.budget import Policy
from tuning.commands.budget_opts import budget_options, resolve_budget
from tuning.commands.options import (
    full_soak_option,
    heat_soak_option,
    host_option,
    json_option,
    out_option,
    policy_options,
    rig_option,
)
from tuning.commands.progress import probe_status, show_probe, sweep_progress
from tuning.profile import dump_profile, profile_from_result
from tuning.report import (
    PlotsUnavailable,
    floor_warning,
    plot_curves,
    plot_heat_soak,
    results_table,
)
from tuning.sweep import Sweep, SweepConfig, SweepResult
from tuning.workloads import make_workload
from tuning.workloads.spec import is_workload_file, load_workload_file


def _log(message: str) -> None:
    click.echo(message, err=True)


class _Bars:
    """One rich progress bar per GPU (probes done / expected), plus the heat-soak."""

    def __init__(self, names: Mapping[str, str], expected: int, *, enabled: bool) -> None:
        self.progress = sweep_progress(Console(stderr=True), enabled=enabled)
        self.tasks = {
            uuid: self.progress.add_task(name, total=expected, status="waiting")
            for uuid, name in names.items()
        }
        self.soak: TaskID | None = None

    def __call__(self, uuid: str, event: str, details: Mapping[str, Any]) -> None:
        if self.progress.disable:
            self._line(uuid, event, details)
            return
        if event == "probe":
            show_probe(self.progress, self.tasks[uuid], details)
        elif event == "done":
            task = self.tasks[uuid]
            self.progress.update(task, total=details["probes"], completed=details["probes"])
        elif event == "soak":
            self.soak = self.progress.add_task("heat-soak", total=1, status="running")
        elif event == "soak_done" and self.soak is not None:
            self.progress.update(self.soak, completed=1, status=f"{details['events']} events")

    def _line(self, uuid: str, event: str, details: Mapping[str, Any]) -> None:
        """Off a terminal (a log, a remote sweep): one plain stderr line per event."""
        name = self.progress.tasks[self.tasks[uuid]].description if uuid in self.tasks else ""
        if event == "probe":
            _log(f"rigforge: {name}: probe {details['probes']}: {probe_status(details)}")
        elif event == "done":
            _log(f"rigforge: {name}: done after {details['probes']} probes")
        elif event == "soak":
            _log(
                f"rigforge: heat-soak of the chosen caps (at most {details.get('seconds', 0):.0f}"
                " s; it stops once every GPU's steady temperature is predicted)"
            )
        elif event == "soak_done":
            _log(
                f"rigforge: heat-soak done after {details.get('seconds', 0):.0f} s: "
                f"{details['events']} throttle events"
            )


def _check_tps_regex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a regex that does not compile or has no ``tps`` group, before any cap changes."""
    if value is None:
        return None
    try:
        compiled = re.compile(value)
    except re.error as error:
        raise click.BadParameter(f"{value!r} does not compile: {error}") from error
    if "tps" not in compiled.groupindex:
        raise click.BadParameter(
            f"{value!r} has no (?P<tps>…) group; name the tokens/s number, "
            r"e.g. 'generation: (?P<tps>\d+(?:\.\d+)?) tok/s'"
        )
    return value


@click.command("sweep")
@rig_option("sim:NAME, a rig YAML file, or nvml.")
@click.option(
    "--workload",
    default="decode",
    show_default=True,
    help="decode|prefill|batched|FILE.yaml (a workload file, docs/workload.md)|cmd:COMMAND|"
    "openai:URL",
)
@click.option(
    "--tps-regex",
    default=None,
    callback=_check_tps_regex,
    help="cmd: workloads: regex whose group (?P<tps>…) is one run's tokens/s "
    "(default: llama-bench's '| … | 131.66 ± 0.23 |' column; the last match of a run counts).",
)
@policy_options
@click.option(
    "--strategy", type=click.Choice(["adaptive", "grid"]), default="adaptive", show_default=True
)
@click.option(
    "--step-w", type=click.IntRange(1, 100), default=5, show_default=True, help="grid step (W)."
)
@click.option("--seed", type=int, default=None, help="simulated rig noise seed.")
@json_option("print the result as JSON.")
@out_option("write profile.yaml and PNG plots here.")
@heat_soak_option
@full_soak_option
@host_option(
    "write the profile back as this inventory host's data: "
    "INVENTORY_DIR/host_data/HOST/profile.yaml (where power.profile points by default)."
)
@click.option(
    "--inventory-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the inventory's folder: one of its *.yaml must declare --host, whose data goes under "
    "its host_data/ (default: --inventory's folder, else ./inventory).",
)
@click.option(
    "--profile-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write only the profile YAML to this file (no plots; what a remote sweep uses).",
)
@click.option(
    "--force",
    is_flag=True,
    help="write the profile to --host/--profile-out even when the heat-soak validation failed "
    "or a GPU is flagged (the exit status is still 1).",
)
@budget_options
@click.option(
    "--pace-s",
    type=float,
    default=0.0,
    hidden=True,
    help="real seconds to sleep per sample (slow motion for demos and tests).",
)
def command(
    rig_spec: str,
    workload: str,
    tps_regex: str | None,
    policy: str,
    floor: float,
    strategy: str,
    step_w: int,
    seed: int | None,
    as_json: bool,
    out: Path | None,
    heat_soak_s: float,
    full_soak: bool,
    host_name: str | None,
    inventory_dir: Path | None,
    profile_out: Path | None,
    force: bool,
    budget_path: Path | None,
    inventory_path: Path | None,
    no_budget: bool,
    pace_s: float,
) -> None:
    """Probe power caps per GPU and pick the best inside the power budget and heat.

    Real GPUs (--rig nvml) need a power budget: --budget FILE, --inventory FILE --host NAME,
    /etc/rigforge/budget.yaml, or --no-budget (unsafe, warned).
    """
    if tps_regex is not None and not workload.startswith("cmd:"):
        raise click.UsageError("--tps-regex applies to cmd: workloads only")
    if is_workload_file(workload):
        load_workload_file(workload)  # every problem in it before any GPU is opened
    if inventory_dir is None:
        # --inventory FILE --host NAME: the host's data lives beside the file that declares it
        inventory_dir = inventory_path.parent if inventory_path is not None else Path("inventory")
    targets = profile_targets(host_name, inventory_dir, profile_out)
    budget = resolve_budget(
        rig_spec,
        budget_path=budget_path,
        inventory_path=inventory_path,
        host_name=host_name,
        no_budget=no_budget,
        required=True,
        log=_log,
    )
    recover_stale_journals(_log, keep_spec=rig_spec)
    rig, actuator = open_tuning_rig(rig_spec, seed=seed, budget=budget)
    budget_model = budget.model(rig.gpus) if budget is not None else None
    if budget is not None and rig_spec != "nvml":
        _log(f"rigforge: judging caps against {budget.source}, not the rig file's PSUs")
    config = SweepConfig(
        workload=workload,
        policy=Policy(policy),
        floor=floor,
        strategy=strategy,
        step_w=step_w,
        seed=seed,
        heat_soak_s=heat_soak_s,
        full_soak=full_soak,
        tps_regex=tps_regex,
    )
    load = make_workload(workload, rig, tps_regex=tps_regex)
    bars = _Bars(
        {g.uuid: f"{g.name} {g.pci_bus_id[-7:]}" for g in rig.gpus},
        5,
        enabled=sys.stderr.isatty(),
    )
    try:
        with SafetySession(actuator, sweep_key=config.resume_key(rig_spec), log=_log) as session:
            if session.resumed_probes:
                done = sum(len(p) for p in session.resumed_probes.values())
                _log(f"rigforge: resuming an interrupted sweep after {done} completed probes")
            sweep = Sweep(
                rig,
                actuator,
                load,
                config,
                session=session,
                progress=bars,
                rig_spec=rig_spec,
                budget=budget_model,
            )
            if pace_s > 0:
                _pace(rig, pace_s)
            with bars.progress:
                result = sweep.run()
    finally:
        load.close()
    _emit(result, as_json=as_json, out=out, profile_paths=targets, force=force)
    if not result.validation_passed:
        raise SystemExit(1)


def _pace(rig: Any, pace_s: float) -> None:
    """Make the rig's clock also sleep in real time (signals land mid-sweep in tests)."""
    clock = rig.clock
    original = clock.sleep

    def paced(seconds: float) -> None:
        original(seconds)
        time.sleep(pace_s)

    clock.sleep = paced


def profile_targets(
    host_name: str | None, inventory_dir: Path, profile_out: Path | None
) -> list[Path]:
    """Where the profile goes besides ``--out``: ``--profile-out`` and/or the host's data.

    ``--host NAME`` means ``INVENTORY_DIR/host_data/NAME/profile.yaml``; the name must be a
    valid host name that an inventory in ``inventory_dir`` declares
    (:func:`inventory.host_data.host_data_path`, checked before the sweep starts, so a typo
    costs no sweep). Raises :class:`ConfigError`.
    """
    paths = [profile_out] if profile_out is not None else []
    if host_name is not None:
        paths.append(host_data_path(inventory_dir, host_name, "profile.yaml"))
    return paths


def _rejection(result: SweepResult) -> str | None:
    """Why the sweep's caps are not fit to deploy, or ``None`` when they are."""
    reasons = []
    final = result.final_soak
    if final is None or not final.passed:
        events = len(final.throttle_events) if final else 0
        reasons.append(f"the heat-soak validation failed ({events} throttle events)")
    if result.flagged_uuids:
        reasons.append(f"GPU(s) {', '.join(result.flagged_uuids)} flagged")
    return "; ".join(reasons) or None


def _emit(
    result: SweepResult,
    *,
    as_json: bool,
    out: Path | None,
    profile_paths: list[Path],
    force: bool = False,
) -> None:
    """Write the profile and plots, print the table or JSON.

    A rejected sweep (validation failed, GPU flagged) writes ``profile_paths`` — what a
    deploy or the boot unit applies — only with ``force``; ``--out`` always gets the profile
    (``validation.passed: false``) and plots for inspection.
    """
    rejection = _rejection(result)
    if rejection is not None and profile_paths:
        if force:
            _log(f"rigforge: warning: {rejection}; writing the profile anyway (--force)")
        else:
            where = ", ".join(str(p) for p in profile_paths)
            _log(
                f"rigforge: {rejection}: not writing {where} (inspect it with --out DIR, "
                "or --force to write it anyway)"
            )
            profile_paths = []
    elif rejection is not None:
        _log(f"rigforge: {rejection}")
    if profile_paths:
        profile = profile_from_result(result)
        for path in profile_paths:
            dump_profile(profile, path)
            _log(f"rigforge: wrote {path}")
    if out is not None:
        dump_profile(profile_from_result(result), out / "profile.yaml")
        try:
            plot_curves(result, out / "curves.png")
            plot_heat_soak(result, out / "heat_soak.png")
        except PlotsUnavailable as error:
            _log(f"rigforge: wrote {out / 'profile.yaml'}; no plots: {error}")
        else:
            _log(f"rigforge: wrote {out / 'profile.yaml'}, curves.png, heat_soak.png")
    warning = floor_warning(result)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        if warning is not None:
            _log(f"rigforge: warning: {warning}")
    else:
        console = Console(width=max(Console().width, 120))
        console.print(results_table(result))
        if warning is not None:
            console.print(f"[yellow]warning: {warning}[/yellow]", highlight=False)
