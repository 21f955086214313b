"""``rigforge plan``: place the models of a models file on the rig's GPUs.

Prints a table (model → GPUs by index and UUID, TP × PP, NUMA node, the model's own CPUs from
the CPU plan, VRAM used/free per GPU, estimated throughput), the housekeeping CPUs, every
model it could not place with the reason, the plan's score and the best alternative's.
``--out`` writes the plan YAML the ``serving`` deploy consumes (with each placement's
``cpu_list`` and the plan's ``housekeeping_cpus``); ``--host NAME`` writes it as inventory
host data (``INVENTORY_DIR/host_data/NAME/plan.yaml``); ``--json`` prints the plan as JSON
instead of the table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import click
import yaml
from rich.console import Console
from rich.table import Table

from inventory.host_data import host_data_path
from inventory.models import load_models
from tuning.apply.actuator import open_tuning_rig
from tuning.captures.values import format_cpu_list
from tuning.commands.options import (
    host_option,
    inventory_dir_option,
    json_option,
    out_option,
    rig_option,
)
from tuning.core.profile import load_profile, profile_mismatch
from tuning.core.rig import RigSnapshot
from tuning.cpuplan.placements import load_cpu_topology, with_models_cpu_plan
from tuning.cpuplan.plan import CpuPlan
from tuning.errors import ConfigError
from tuning.fabric.links_file import LinksFile, load_links_file
from tuning.placement import Plan, load_profile_hints, plan

#: Used when ``--models`` is not given and the file exists relative to the working directory.
DEFAULT_MODELS = Path("inventory/examples/models-reference.yaml")


def load_snapshot(spec: str) -> RigSnapshot:
    """Open the rig named by ``spec`` (see :func:`tuning.backends.open_rig`) and freeze it."""
    rig, _ = open_tuning_rig(spec)  # a simulated rig keeps the caps runs left on it
    try:
        return rig.snapshot()
    finally:
        rig.close()


def _shares(bottleneck: str, breakdown: Mapping[str, float]) -> str:
    if not bottleneck:
        return "-"
    rest = ", ".join(
        f"{k} {v * 100:.0f} %" for k, v in breakdown.items() if k != bottleneck and v >= 0.005
    )
    return f"{bottleneck} {breakdown.get(bottleneck, 0) * 100:.0f} %" + (
        f" ({rest})" if rest else ""
    )


def render_table(
    result: Plan,
    console: Console,
    cpu_plan: CpuPlan | None = None,
    gpu_names: Mapping[str, str] | None = None,
) -> None:
    """The human view of a plan; with ``cpu_plan``, where each GPU's interrupts go
    (``gpu_names``: UUID → how the table names the GPU)."""
    table = Table(title=f"placement on {result.rig_name} ({result.fingerprint})")
    for column in (
        "model", "GPUs", "UUIDs", "TP×PP", "NUMA", "CPUs", "link", "VRAM/GPU", "free/GPU",
    ):  # fmt: skip
        table.add_column(column)
    table.add_column("tok/s (per seq)", justify="right")
    table.add_column("TTFT", justify="right")
    table.add_column("bottleneck")
    for p in result.placements:
        label = p.model if p.replica == 0 else f"{p.model}#{p.replica}"
        table.add_row(
            label,
            ",".join(str(i) for i in p.gpu_indices),
            "\n".join(p.gpus),
            f"{p.tp}×{p.pp}",
            "-" if p.numa_node is None else str(p.numa_node),
            format_cpu_list(p.cpu_list) if p.cpu_list else "-",
            p.worst_link + ("" if p.p2p else " (no P2P)"),
            f"{p.vram_mib} MiB",
            ", ".join(f"{free} MiB" for free in p.vram_free_mib),
            f"{p.tokens_per_s:.1f} ({p.tokens_per_s_per_seq:.1f})",
            f"{p.ttft_s:.2f} s",
            _shares(p.bottleneck, p.breakdown),
        )
    console.print(table)
    for p in result.placements:
        if p.caps_w and p.clock_mhz:
            label = p.model if p.replica == 0 else f"{p.model}#{p.replica}"
            caps = " / ".join("?" if c is None else f"{c:.0f} W" for c in p.caps_w)
            clocks = " / ".join(f"{c:.0f}" for c in p.clock_mhz)
            console.print(f"{label}: under caps {caps} the GPUs decode at {clocks} MHz")
    if any(p.clock_mhz for p in result.placements):
        console.print(
            "tok/s are predicted under each GPU's power limit (the profile's cap, else its "
            "current limit), the clock whose power fits it; heat is not in the prediction "
            "(rigforge loop's serving run measures it)"
        )
    for p in result.placements:
        if p.alternative:
            label = p.model if p.replica == 0 else f"{p.model}#{p.replica}"
            console.print(f"{label}: best alternative {p.alternative}")
    if result.housekeeping_cpus:
        console.print(
            f"housekeeping CPUs {format_cpu_list(result.housekeeping_cpus)}: the OS, sshd, "
            "irqbalance and non-GPU interrupts; each GPU's interrupts go to its model's CPUs"
        )
    if cpu_plan is not None:
        names = gpu_names or {}
        console.print(
            "GPU IRQs: "
            + ", ".join(
                f"{names.get(i.gpu, i.gpu)} → {format_cpu_list(i.cpus)}" for i in cpu_plan.irqs
            ),
            highlight=False,
        )
    for u in result.unplaced:
        console.print(f"[red]not placed[/red] {u.model}: {u.reason}")
    if result.placements:
        console.print(
            f"predicted decode total: {result.tokens_per_s_total:.1f} tok/s over "
            f"{len(result.placements)} placement(s) ("
            + " + ".join(f"{p.tokens_per_s:.1f}" for p in result.placements)
            + ")",
            highlight=False,
        )
    alt = "none" if result.alternative_score is None else f"{result.alternative_score:.1f}"
    console.print(
        f"score {result.score:.1f} priority-weighted tok/s (best alternative {alt}): "
        f"{result.alternative}"
    )


@click.command("plan")
@rig_option("'nvml', 'sim:NAME' or a rig YAML file.")
@click.option(
    "--models",
    "models_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Models file (default: {DEFAULT_MODELS} when it exists here).",
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Tuning profile from 'rigforge sweep' (caps, heat-soak temperatures).",
)
@click.option(
    "--links",
    "links_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="links.yaml from 'rigforge links' on this rig: GPU sets are predicted over the "
    "measured GPU-to-GPU links instead of nominal ones.",
)
@json_option("Print the plan as JSON.")
@out_option("Write the plan YAML the serving deploy consumes.", dest="out_path", file=True)
@host_option(
    "Write the plan back as this inventory host's data: INVENTORY_DIR/host_data/HOST/"
    "plan.yaml (where serving.plan points by default); its profile.yaml and links.yaml "
    "there are used when --profile / --links are not given."
)
@inventory_dir_option
@click.pass_context
def command(
    ctx: click.Context,
    rig_spec: str,
    models_path: Path | None,
    profile_path: Path | None,
    links_path: Path | None,
    as_json: bool,
    out_path: Path | None,
    host_name: str | None,
    inventory_dir: Path,
) -> None:
    """Place models on GPUs: exact, topology-, NUMA-, heat- and power-aware.

    Exits 1 when a model could not be placed (the plan and the reasons are still written).
    """
    host_plan: Path | None = None
    if host_name is not None:
        if ctx.get_parameter_source("rig_spec") is click.core.ParameterSource.DEFAULT:
            raise click.UsageError(
                f"--host {host_name} plans for a real host: say which rig with --rig "
                "(nvml on the box itself, or the host's rig file)"
            )
        host_plan = host_data_path(inventory_dir, host_name, "plan.yaml")
        host_profile = host_plan.with_name("profile.yaml")
        if profile_path is None and host_profile.is_file():
            profile_path = host_profile
        host_links = host_plan.with_name("links.yaml")
        if links_path is None and host_links.is_file():
            links_path = host_links
    if models_path is None:
        if not DEFAULT_MODELS.is_file():
            raise click.UsageError("--models FILE is required (no models file found here)")
        models_path = DEFAULT_MODELS
    models = load_models(models_path)
    profile = load_profile_hints(profile_path) if profile_path is not None else None
    snapshot = load_snapshot(rig_spec)
    if profile_path is not None:
        _check_profile_matches(profile_path, snapshot)
    links = load_links_file(links_path) if links_path is not None else None
    if links is not None and links_path is not None:
        _check_links_match(links_path, links, snapshot)
    result = plan(snapshot, models, profile, links)
    topo = load_cpu_topology(rig_spec)
    cpu_plan: CpuPlan | None = None
    if topo is not None:
        result, cpu_plan = with_models_cpu_plan(result, snapshot, topo, models, str(models_path))
    text = yaml.safe_dump(result.to_yaml(), sort_keys=False, allow_unicode=True)
    written = [p for p in (out_path, host_plan) if p is not None]
    for path in written:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        console = Console(width=max(Console().width, 160))  # UUIDs and model names stay whole
        names = {g.uuid: f"GPU{g.index}" for g in snapshot.gpus if g.uuid}
        render_table(result, console, cpu_plan, names)
        for path in written:
            console.print(f"plan written to {path}")
    if result.unplaced:
        raise SystemExit(1)


def _check_links_match(path: Path, links: LinksFile, snapshot: RigSnapshot) -> None:
    """Refuse a links.yaml measured on other GPUs (its fingerprint is the rig's, as a
    profile's is): its pairs would be matched to the wrong cards."""
    actual = snapshot.fingerprint()
    if links.rig.fingerprint != actual:
        raise ConfigError(
            f"{path}: rig.fingerprint: measured on rig {links.rig.fingerprint}, but the GPUs "
            f"here are {actual}; re-run rigforge links on this rig (--host writes it back)"
        )


def _check_profile_matches(profile_path: Path, snapshot: RigSnapshot) -> None:
    """Refuse a profile tuned on other GPUs (its caps and temperatures would mislead)."""
    problem = profile_mismatch(load_profile(profile_path), snapshot.gpus)
    if problem:
        raise ConfigError(
            f"{profile_path}: rig.fingerprint: the profile {problem}, not on the rig being "
            f"planned ({snapshot.name}); pass the --rig the profile was tuned on, or re-run "
            "rigforge sweep on this rig"
        )
