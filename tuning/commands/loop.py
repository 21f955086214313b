"""``rigforge loop``: the whole story on a simulated rig, in one command.

inspect → stock baseline → sweep → tuned run → plan → serving run → rendered deploy files →
summary
(:mod:`tuning.loop` does the work; this module shows it). A one-line header per stage, rich
progress bars on stderr for the sweep and the sustained runs when stderr is a terminal, then
the stock-vs-tuned summary, the placement and the files written. ``--json`` prints one JSON
object (``stock``, ``tuned``, ``circuits``, ``plan``, ``files``, …) on stdout and everything
else on stderr. Exit status 1 when the tuned run still throttles or overloads a circuit or a
PSU, or when a model could not be placed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from tuning.budget import Policy
from tuning.captures.values import format_cpu_list
from tuning.commands.inspect import MIB_PER_GIB, host_line, link_notes, power_table
from tuning.commands.options import (
    full_soak_option,
    heat_soak_option,
    json_option,
    out_option,
    policy_options,
    rig_option,
)
from tuning.commands.progress import show_probe, sweep_progress
from tuning.core.pcie import LinkStatus
from tuning.core.rig import RigSnapshot
from tuning.loop import (
    STAGES,
    LoopConfig,
    LoopObserver,
    LoopResult,
    default_models_path,
)
from tuning.serving import unit_name
from tuning.serving_run import BAR_PCT, ServingRun
from tuning.sustained import SustainedRun
from tuning.workloads import WORKLOAD_CLASSES
from tuning.workloads.spec import is_workload_file, load_workload_file


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal:
        # pipes and test runners get 80 columns by default; the tables need more
        console = Console(stderr=stderr, width=max(console.width, 120))
    return console


class _Show(LoopObserver):
    """Stage headers and compact inspect tables on ``console``; bars on stderr (a TTY)."""

    def __init__(self, console: Console, *, bars: bool) -> None:
        self.console = console
        self.err = Console(stderr=True)
        self.bars = bars
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.names: dict[str, str] = {}

    def _progress(self) -> Progress:
        return sweep_progress(self.err, enabled=self.bars)

    def stage(self, number: int, title: str) -> None:
        self.console.print(f"[bold cyan]▶ {number}/{len(STAGES)} {title}[/]", highlight=False)

    def log(self, message: str) -> None:
        self.err.print(message, highlight=False)

    def inspected(self, snapshot: RigSnapshot) -> None:
        show_inspect(snapshot, self.console)

    # the sweep ---------------------------------------------------------------------------
    def sweep_begin(self, names: Mapping[str, str]) -> None:
        self.names = dict(names)
        self.progress = self._progress()
        self.tasks = {
            uuid: self.progress.add_task(name, total=5, status="waiting")
            for uuid, name in names.items()
        }
        self.progress.start()

    def sweep_event(self, uuid: str, event: str, details: Mapping[str, Any]) -> None:
        assert self.progress is not None
        if event == "probe":
            show_probe(self.progress, self.tasks[uuid], details)
        elif event == "done":
            self.progress.update(
                self.tasks[uuid],
                total=details["probes"],
                completed=details["probes"],
                status="done",
            )
            if not self.bars:
                self.err.print(f"  {self.names[uuid]}: {details['probes']} probes", highlight=False)
        elif event == "soak":
            self.tasks["soak"] = self.progress.add_task(
                f"heat-soak ≤ {details['seconds'] / 60:.0f} min", total=1, status="running"
            )
        elif event == "soak_done":
            self.progress.update(
                self.tasks["soak"], completed=1, status=f"{details['events']} events"
            )
            if not self.bars:
                self.err.print(
                    f"  heat-soak round: {details['seconds'] / 60:.1f} min, "
                    f"{details['events']} throttle samples",
                    highlight=False,
                )

    def sweep_end(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # sustained runs ----------------------------------------------------------------------
    def sustained(self, label: str, elapsed_s: float, total_s: float) -> None:
        if self.progress is None:
            self.progress = self._progress()
            self.tasks[label] = self.progress.add_task(
                f"{label}: {total_s / 60:.0f} min sustained", total=total_s, status=""
            )
            self.progress.start()
        self.progress.update(
            self.tasks[label], completed=elapsed_s, status=f"{elapsed_s / 60:.0f} min"
        )
        if elapsed_s >= total_s - 1e-6:
            self.progress.stop()
            self.progress = None


def show_inspect(snapshot: RigSnapshot, console: Console) -> None:
    """The compact inspect view: host line, one row per GPU, degraded links, power."""
    console.print(host_line(snapshot), highlight=False)
    table = Table(title_justify="left", box=None, pad_edge=False)
    for header in ("#", "GPU", "bus id", "VRAM GiB", "stock W", "PSU", "PCIe (loaded)"):
        table.add_column(header, justify="right" if header in ("VRAM GiB", "stock W") else "left")
    for gpu in snapshot.gpus:
        link = gpu.pcie
        text = (
            f"gen {link.gen_current} x{link.width_current} of gen {link.gen_max} x{link.width_max}"
        )
        if link.status is LinkStatus.DEGRADED:
            text = f"[bold red]{text} degraded[/]"
        vram = gpu.memory_total_mib / MIB_PER_GIB if gpu.memory_total_mib else 0.0
        table.add_row(
            str(gpu.index),
            gpu.name or "?",
            gpu.pci_bus_id or "?",
            f"{vram:.0f}",
            f"{gpu.power_default_w:g}" if gpu.power_default_w is not None else "?",
            gpu.psu or "?",
            text,
        )
    console.print(table)
    for status, sentence in link_notes(snapshot):
        if status is LinkStatus.DEGRADED:
            console.print(f"[bold red]warning:[/] {sentence}", highlight=False)
    power = power_table(snapshot)
    if power is not None:
        power.title = None
        console.print(power)


def _delta(stock: float, tuned: float) -> str:
    return f"{(tuned / stock - 1.0):+.1%}" if stock else ""


def summary_table(result: LoopResult) -> Table:
    """Stock vs tuned: draw, per-circuit load, throughput, tokens/J, throttling, heat."""
    stock, tuned = result.stock, result.tuned
    minutes = stock.seconds / 60
    table = Table(
        title=f"{result.snapshot.name}: stock vs tuned, {minutes:.0f} min sustained "
        f"{result.config.workload} on every GPU (seed {result.config.seed})",
        title_justify="left",
    )
    table.add_column("")
    table.add_column("stock", justify="right")
    table.add_column("tuned", justify="right")
    table.add_column("change", justify="right")

    def row(label: str, s: float, t: float, fmt: str) -> None:
        table.add_row(label, format(s, fmt), format(t, fmt), _delta(s, t))

    row("Σ power caps (W)", sum(stock.caps_w.values()), sum(tuned.caps_w.values()), ".0f")
    row("GPU draw (W)", stock.power_w, tuned.power_w, ".0f")
    row("wall draw, all circuits (W)", stock.wall_w, tuned.wall_w, ".0f")
    for s, t in zip(stock.circuits, tuned.circuits, strict=True):
        table.add_row(
            f"{s.name} mean / peak (budget {s.budget_w:.0f} W)",
            f"{s.mean_w:.0f} / {_load(s.peak_w, s.peak_pct, s.within_budget)}",
            f"{t.mean_w:.0f} / {_load(t.peak_w, t.peak_pct, t.within_budget)}",
            _delta(s.peak_w, t.peak_w),
        )
        table.add_row(
            f"{s.name} at full caps",
            _load(s.at_caps_w, s.at_caps_pct, s.at_caps_w <= s.budget_w),
            _load(t.at_caps_w, t.at_caps_pct, t.at_caps_w <= t.budget_w),
            _delta(s.at_caps_w, t.at_caps_w),
        )
    for ps, pt in zip(stock.psus, tuned.psus, strict=True):
        table.add_row(
            f"{ps.name} peak / at full caps (rating {ps.rating_w:.0f} W DC)",
            f"{_load(ps.peak_w, ps.peak_pct, ps.within_rating)} / "
            f"{_load(ps.at_caps_w, ps.at_caps_pct, ps.at_caps_w <= ps.rating_w)}",
            f"{_load(pt.peak_w, pt.peak_pct, pt.within_rating)} / "
            f"{_load(pt.at_caps_w, pt.at_caps_pct, pt.at_caps_w <= pt.rating_w)}",
            _delta(ps.peak_w, pt.peak_w),
        )
    row("aggregate throughput (tok/s)", stock.throughput_tps, tuned.throughput_tps, ".1f")
    row("tokens/J", stock.tokens_per_joule, tuned.tokens_per_joule, ".4f")
    table.add_row(
        "throttle events (samples)",
        _events(stock),
        _events(tuned),
        "",
    )
    table.add_row(
        "peak temperature (°C)",
        _num(stock.peak_temp_c),
        _num(tuned.peak_temp_c),
        "",
    )
    return table


def _load(watts: float, pct: float, ok: bool) -> str:
    text = f"{watts:.0f} W ({pct:.0f} %)"
    return text if ok else f"[bold red]{text}[/]"


def _events(run: SustainedRun) -> str:
    text = f"{run.throttle_events} ({run.throttle_samples})"
    return f"[bold red]{text}[/]" if run.throttle_events else text


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def gpu_table(result: LoopResult) -> Table:
    """Per GPU, stock → tuned."""
    table = Table(title="per GPU, stock → tuned", title_justify="left")
    for header in ("#", "GPU", "cap W", "tok/s", "draw W", "tokens/J", "peak °C", "throttle"):
        table.add_column(header, justify="left" if header == "GPU" else "right")
    for s, t in zip(result.stock.gpus, result.tuned.gpus, strict=True):
        reasons = ",".join(r.replace("_slowdown", "") for r in s.throttle_reasons)
        table.add_row(
            str(s.index),
            s.name,
            f"{s.cap_w:.0f} → {t.cap_w:.0f}",
            f"{s.throughput_tps:.1f} → {t.throughput_tps:.1f}",
            f"{s.power_w:.0f} → {t.power_w:.0f}",
            f"{s.tokens_per_joule:.3f} → {t.tokens_per_joule:.3f}",
            f"{_num(s.peak_temp_c)} → {_num(t.peak_temp_c)}",
            f"{s.throttle_events}{f' ({reasons})' if reasons else ''} → {t.throttle_events}",
        )
    return table


def placement_table(result: LoopResult) -> Table:
    """Model → GPUs, split, NUMA node, port and the serving unit it renders to."""
    plan = result.plan
    names = {g.uuid: f"{g.index}" for g in result.snapshot.gpus}
    table = Table(
        title=f"placement ({len(plan.placements)} placed, score {plan.score:.4f})",
        title_justify="left",
    )
    for header in ("model", "engine", "GPUs", "TP×PP", "NUMA", "CPUs", "port", "unit"):
        table.add_column(header)
    for p in plan.placements:
        table.add_row(
            p.model if p.replica == 0 else f"{p.model}#{p.replica}",
            p.engine,
            ",".join(names.get(u, u) for u in p.gpus),
            f"{p.tp}×{p.pp}",
            "-" if p.numa_node is None else str(p.numa_node),
            format_cpu_list(p.cpu_list) if p.cpu_list else "-",
            str(p.port),
            unit_name(p),
        )
    return table


def serving_table(run: ServingRun) -> Table:
    """Per placement, the plan's predicted tokens/s vs the serving run's measured, and the sum."""
    table = Table(
        title=f"serving run: the plan served at the tuned caps, {run.seconds / 60:.0f} min "
        "(predicted by the plan vs measured)",
        title_justify="left",
    )
    for header in (
        "model",
        "GPUs",
        "TP×PP",
        "predicted tok/s",
        "measured tok/s",
        "diff",
        "peak °C",
    ):
        table.add_column(header, justify="left" if header in ("model", "GPUs") else "right")
    for p in run.placements:
        table.add_row(
            p.label,
            ",".join(str(i) for i in p.gpu_indices),
            f"{p.tp}×{p.pp}",
            f"{p.predicted_tokens_per_s:.1f}",
            f"{p.measured_tokens_per_s:.1f}",
            f"{p.diff_pct:+.2f} %",
            _num(p.peak_temp_c) + (f" ({p.throttle_events} throttle)" if p.throttle_events else ""),
        )
    table.add_row(
        "total",
        "",
        "",
        f"{run.predicted_total:.1f}",
        f"{run.measured_total:.1f}",
        f"{run.diff_pct:+.2f} %",
        "",
    )
    return table


def serving_lines(run: ServingRun) -> list[str]:
    """The serving run's verdict in words: the sum against the bar, what heat did, and any
    placement it could not serve."""
    verdict = "within" if run.within_bar else "[bold red]outside[/]"
    return [
        f"serving run: measured {run.measured_total:.1f} tok/s vs the plan's "
        f"{run.predicted_total:.1f} ({run.diff_pct:+.2f} %), {verdict} {BAR_PCT:.0f} %",
        ("" if not run.throttle_events else "[bold red]")
        + run.heat_note()
        + ("" if not run.throttle_events else "[/]"),
        *(f"not served: {label} {why}" for label, why in run.not_served),
    ]


def cpu_plan_lines(result: LoopResult) -> list[str]:
    """The CPU plan in words: housekeeping, each unit's cores and threads, each GPU's IRQs."""
    cpu = result.cpu_plan
    if cpu is None:
        return ["CPU plan: none (the rig file has no cpu: section)"]
    names = {g.uuid: f"GPU{g.index}" for g in result.snapshot.gpus}
    lines = [
        f"CPU plan: housekeeping CPUs {format_cpu_list(cpu.housekeeping_cpus)} (the OS, sshd, "
        "irqbalance, non-GPU interrupts)"
    ]
    for u in cpu.units:
        how = "pinned by cpus:" if u.pinned else u.rule
        lines.append(
            f"  {u.name}: CPUs {u.cpu_list} ({u.cores} cores, {u.threads} engine threads; {how})"
        )
    irqs = ", ".join(f"{names.get(i.gpu, i.gpu)} → {format_cpu_list(i.cpus)}" for i in cpu.irqs)
    lines.append(f"  GPU IRQs: {irqs}")
    for c in result.core_shares:
        lines.append(
            f"  {c.unit}: decode {c.shared_tok_s:.1f} tok/s on shared cores ({c.shared_cores} "
            f"cores, {c.shared_with} other engine(s)) vs {c.partitioned_tok_s:.1f} tok/s on its "
            f"own {c.partitioned_cores} (the plan's prediction)"
        )
    return lines


def render_summary(result: LoopResult, console: Console) -> None:
    """The last stage: the tables, the verdict, the files."""
    console.print(summary_table(result))
    console.print(gpu_table(result))
    sweep = result.sweep
    console.print(
        f"sweep: {sweep.total_probes} probes in {sweep.sweep_sim_s / 60:.1f} min, heat-soak "
        f"{sweep.soak_sim_s / 60:.0f} min over {len(sweep.soak_rounds)} round(s), policy "
        f"{sweep.config.policy}; max PSU/circuit load while sweeping "
        f"{sweep.max_psu_load_ratio:.0%} of budget",
        highlight=False,
    )
    if result.tuned_ok:
        console.print(
            "[bold green]tuned: 0 throttle events, every circuit within its continuous budget, "
            "every PSU within its rating[/]"
        )
    else:
        console.print(
            "[bold red]tuned: still throttles or overloads a circuit or a PSU; see above[/]"
        )
    console.print(placement_table(result))
    if result.serving is not None:
        console.print(serving_table(result.serving))
        for line in serving_lines(result.serving):
            console.print(line, highlight=False)
    for line in cpu_plan_lines(result):
        console.print(line, highlight=False)
    for u in result.plan.unplaced:
        console.print(f"[red]not placed[/red] {u.model}: {u.reason}", highlight=False)
    files = result.files
    console.print("files:", highlight=False)
    for label, path in (
        ("profile", files.profile),
        ("plan", files.plan),
        ("plot", files.curves_png),
        ("plot", files.heat_soak_png),
    ):
        if path is not None:
            console.print(f"  {label:8} {path}", highlight=False)
    console.print(
        f"  rendered {files.rendered_root}/ ({len(files.rendered)} files):", highlight=False
    )
    for target in sorted(files.rendered):
        console.print(f"    {target}", highlight=False)
    console.print(f"wall time {result.wall_s:.1f} s", highlight=False)


def _check_workload(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A preset name, or a workload file validated now (every problem before the rig opens)."""
    if value in WORKLOAD_CLASSES:
        return value
    if is_workload_file(value):
        load_workload_file(value)
        return value
    raise click.BadParameter(
        f"{value!r} is neither {', '.join(WORKLOAD_CLASSES)} nor a workload file (FILE.yaml)"
    )


@click.command("loop")
@rig_option("sim:NAME or a rig YAML file (nvml is refused: use 'rigforge sweep').")
@click.option(
    "--models",
    "models_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Models file to place (default: inventory/examples/models-reference.yaml).",
)
@click.option(
    "--workload",
    default="decode",
    show_default=True,
    callback=_check_workload,
    help="decode|prefill|batched or FILE.yaml (a workload file without gpus:, docs/workload.md).",
)
@policy_options
@out_option("Where profile.yaml, plan.yaml, the PNG plots and rendered/ go.", default=Path("out"))
@click.option("--seed", type=int, default=0, show_default=True, help="Simulated rig noise seed.")
@click.option(
    "--sustained-s",
    type=click.FloatRange(10.0),
    default=1800.0,
    show_default=True,
    help="Length of the stock and tuned runs (rig-clock seconds).",
)
@heat_soak_option
@full_soak_option
@json_option("Print one JSON object on stdout.")
def command(
    rig_spec: str,
    models_path: Path | None,
    workload: str,
    policy: str,
    floor: float,
    out: Path,
    seed: int,
    sustained_s: float,
    heat_soak_s: float,
    full_soak: bool,
    as_json: bool,
) -> None:
    """Inspect, measure stock, sweep, measure tuned, plan, render deploy files, summarise."""
    from tuning.loop import run_loop

    config = LoopConfig(
        rig_spec=rig_spec,
        models_path=models_path or default_models_path(),
        workload=workload,
        policy=Policy(policy),
        floor=floor,
        out=out,
        seed=seed,
        sustained_s=sustained_s,
        heat_soak_s=heat_soak_s,
        full_soak=full_soak,
    )
    config.check()
    console = _console(stderr=as_json)
    result = run_loop(config, _Show(console, bars=sys.stderr.isatty()))
    console.print(f"[bold cyan]▶ {len(STAGES)}/{len(STAGES)} {STAGES[-1]}[/]", highlight=False)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    else:
        render_summary(result, console)
    if not result.tuned_ok or result.plan.unplaced:
        sys.exit(1)
