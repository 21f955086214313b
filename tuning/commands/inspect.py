"""``rigforge inspect``: what the rig is — GPUs, limits, links, topology, power, host.

Reads a live rig (``--rig sim:reference`` by default, a rig YAML, or ``nvml``) or a folder of
captured command output (``--from-captures DIR``), and prints tables or, with ``--json``,
``RigSnapshot.to_json()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tuning.apply.actuator import open_tuning_rig
from tuning.backends import DEFAULT_RIG
from tuning.captures.fabric import CapturedFabric
from tuning.captures.folder import load_captures
from tuning.captures.values import format_cpu_list
from tuning.commands.options import json_option, rig_option
from tuning.core.pcie import LinkStatus, PcieLink
from tuning.core.rig import GpuInfo, RigSnapshot
from tuning.errors import ConfigError
from tuning.fabric.graph import Fabric
from tuning.rig_fabric import budget_lines, described_fabric, fabric_json, tree_lines

MIB_PER_GIB = 1024


def _num(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "?"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text}{unit}"


def _link_text(gen: int | None, width: int | None) -> str:
    return f"gen {_num(gen)} x{_num(width)}"


def _gpu_label(gpu: GpuInfo) -> str:
    parts = [p for p in (gpu.name, gpu.pci_bus_id) if p]
    return f"GPU {gpu.index} ({', '.join(parts)})" if parts else f"GPU {gpu.index}"


def link_notes(snapshot: RigSnapshot) -> list[tuple[LinkStatus, str]]:
    """One sentence per GPU whose PCIe link is degraded or needs a recheck under load.

    Degraded: width below max, or gen below max under load — a riser, slot or BIOS problem.
    Recheck: gen below max while idle — normal power-saving downtraining until seen busy.
    """
    notes: list[tuple[LinkStatus, str]] = []
    for gpu in snapshot.gpus:
        link: PcieLink = gpu.pcie
        current = _link_text(link.gen_current, link.width_current)
        maximum = _link_text(link.gen_max, link.width_max)
        if link.status is LinkStatus.DEGRADED:
            notes.append(
                (
                    LinkStatus.DEGRADED,
                    f"{_gpu_label(gpu)}: PCIe {current} of {maximum} — degraded; "
                    "check the riser/slot",
                )
            )
        elif link.status is LinkStatus.RECHECK_UNDER_LOAD:
            when = "while idle" if link.under_load is False else "with the load unknown"
            notes.append(
                (
                    LinkStatus.RECHECK_UNDER_LOAD,
                    f"{_gpu_label(gpu)}: PCIe {current} of {maximum} {when} — GPUs lower the "
                    "link speed to save power; recheck under load",
                )
            )
    return notes


def gpu_table(snapshot: RigSnapshot) -> Table:
    """Identity, VRAM, power range and temperature thresholds per GPU."""
    table = Table(title=f"GPUs of {snapshot.name}", title_justify="left")
    table.add_column("#")
    table.add_column("name", overflow="fold")
    table.add_column("UUID", no_wrap=True)
    table.add_column("bus id", no_wrap=True)
    table.add_column("VRAM GiB", justify="right")
    table.add_column("power W min/default/max", justify="right")
    table.add_column("limit W", justify="right")
    table.add_column("temp °C slow/shut/maxop/target", justify="right")
    for gpu in snapshot.gpus:
        vram = (
            f"{gpu.memory_total_mib / MIB_PER_GIB:.1f}" if gpu.memory_total_mib is not None else "?"
        )
        t = gpu.thresholds
        table.add_row(
            str(gpu.index),
            gpu.name or "?",
            gpu.uuid or "?",
            gpu.pci_bus_id or "?",
            vram,
            f"{_num(gpu.power_min_w)}/{_num(gpu.power_default_w)}/{_num(gpu.power_max_w)}",
            _num(gpu.power_limit_w),
            "/".join(_num(v) for v in (t.slowdown_c, t.shutdown_c, t.max_operating_c, t.target_c)),
        )
    return table


def link_table(snapshot: RigSnapshot) -> Table:
    """PCIe current vs max, the verdict, and each GPU's NUMA node and local CPUs."""
    table = Table(title="PCIe links and affinity", title_justify="left")
    for header in ("#", "PCIe now", "PCIe max", "verdict", "NUMA", "CPUs", "PSU"):
        table.add_column(header, overflow="fold")
    styles = {LinkStatus.DEGRADED: "bold red", LinkStatus.RECHECK_UNDER_LOAD: "yellow"}
    for gpu in snapshot.gpus:
        link = gpu.pcie
        status = link.status
        verdict = status.value.replace("_", " ")
        table.add_row(
            str(gpu.index),
            _link_text(link.gen_current, link.width_current),
            _link_text(link.gen_max, link.width_max),
            f"[{styles[status]}]{verdict}[/]" if status in styles else verdict,
            _num(gpu.numa_node),
            format_cpu_list(gpu.cpu_list),
            gpu.psu or "?",
        )
    return table


def topology_table(snapshot: RigSnapshot) -> Table | None:
    """The GPU×GPU matrix in nvidia-smi names (``X`` on the diagonal, ``?`` unknown)."""
    if not snapshot.topology or len(snapshot.gpus) < 2:
        return None
    table = Table(title="Topology (nvidia-smi topo -m names)", title_justify="left")
    table.add_column("")
    for gpu in snapshot.gpus:
        table.add_column(f"GPU{gpu.index}", justify="center")
    table.add_column("CPU Affinity")
    table.add_column("NUMA")
    for row in snapshot.gpus:
        cells = [snapshot.link(row.index, col.index) or "?" for col in snapshot.gpus]
        table.add_row(f"GPU{row.index}", *cells, format_cpu_list(row.cpu_list), _num(row.numa_node))
    return table


def power_table(snapshot: RigSnapshot) -> Table | None:
    """PSUs and circuits with ratings and the continuous budget each circuit allows."""
    if not snapshot.psus and not snapshot.circuits:
        return None
    table = Table(title="Power", title_justify="left")
    for header in ("supply", "rating W", "circuit", "circuit rating W", "continuous budget W"):
        table.add_column(header)
    table.add_column("GPU limits W", justify="right")
    circuits = {c.name: c for c in snapshot.circuits}
    for psu in snapshot.psus:
        circuit = circuits.get(psu.circuit) if psu.circuit is not None else None
        caps = [g.power_limit_w for g in snapshot.gpus if g.psu == psu.name]
        table.add_row(
            psu.name,
            _num(psu.rating_w),
            psu.circuit or "-",
            _num(circuit.rating_w) if circuit else "?",
            _num(circuit.budget_w) if circuit else "?",
            _num(sum(c for c in caps if c is not None)) if caps else "?",
        )
    named = {p.circuit for p in snapshot.psus}
    for circuit in snapshot.circuits:
        if circuit.name not in named:
            table.add_row(
                "—", "—", circuit.name, _num(circuit.rating_w), _num(circuit.budget_w), "—"
            )
    return table


def host_line(snapshot: RigSnapshot) -> str:
    """``Host: CPU · cores · RAM · NUMA nodes · VRAM total``, ``?`` where unknown."""
    host = snapshot.host
    vram_gib = snapshot.memory_total_mib / MIB_PER_GIB
    return (
        f"Host: {host.cpu_model or '?'} · {_num(host.cpu_cores)} cores · "
        f"{_num(host.memory_gib)} GiB RAM · {_num(host.numa_nodes)} NUMA nodes · "
        f"{len(snapshot.gpus)} GPUs, {vram_gib:.1f} GiB VRAM"
    )


def render(
    snapshot: RigSnapshot,
    console: Console,
    notes: Iterable[str] = (),
    fabric: Fabric | None = None,
) -> None:
    """Print every table of ``inspect`` for ``snapshot``, then link verdicts and notes;
    with a ``fabric``, its tree (root port → switch/chipset → device) and the lane budget."""
    console.print(host_line(snapshot))
    console.print(gpu_table(snapshot))
    console.print(link_table(snapshot))
    for status, sentence in link_notes(snapshot):
        style = "bold red" if status is LinkStatus.DEGRADED else "yellow"
        label = "warning" if status is LinkStatus.DEGRADED else "note"
        console.print(f"[{style}]{label}:[/] {sentence}", highlight=False)
    for table in (topology_table(snapshot), power_table(snapshot)):
        if table is not None:
            console.print(table)
    if fabric is not None:
        console.print("[bold]Fabric[/]", highlight=False)
        for line in [*tree_lines(fabric), *budget_lines(fabric)]:
            console.print(line, highlight=False, markup=False)
    for note in notes:
        console.print(f"[dim]capture note:[/] {note}", highlight=False)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Pipes and test runners get 80 columns by default; the GPU table needs more.
        console = Console(width=max(console.width, 200))
    return console


@click.command("inspect")
@rig_option(f"sim:NAME, a rig YAML file, or nvml (default {DEFAULT_RIG}).", default=None)
@click.option(
    "--from-captures",
    "captures_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A folder of one machine's nvidia-smi/lspci/numactl/lscpu outputs (any file names).",
)
@json_option("Print RigSnapshot.to_json() instead.")
def command(rig_spec: str | None, captures_dir: Path | None, as_json: bool) -> None:
    """Show the rig: GPUs, power limits, PCIe links, topology, PSUs and host."""
    if rig_spec is not None and captures_dir is not None:
        raise click.UsageError("--rig and --from-captures are alternatives; give one of them")
    notes: tuple[str, ...] = ()
    fabric: Fabric | None = None
    captured_fabric: CapturedFabric | None = None
    if captures_dir is not None:
        captured = load_captures(captures_dir)
        snapshot, notes = captured.snapshot, captured.warnings
        captured_fabric = captured.fabric
        if not snapshot.gpus:
            raise ConfigError(
                f"{captures_dir}: no GPU in any capture; capture nvidia-smi -q (or "
                "nvidia-smi --query-gpu=index,name,pci.bus_id,uuid --format=csv) on the machine"
                + "".join(f"\n  {note}" for note in notes)
            )
    else:
        # a simulated rig comes back with the caps earlier runs left on its "hardware"
        rig, _ = open_tuning_rig(rig_spec or DEFAULT_RIG)
        try:
            snapshot = rig.snapshot()
            fabric = described_fabric(rig)
        finally:
            rig.close()
    if as_json:
        for note in notes:
            click.echo(f"capture note: {note}", err=True)
        document = snapshot.to_json()
        if fabric is not None:
            document["fabric"] = fabric_json(fabric)
        if captured_fabric is not None:
            document["fabric"] = captured_fabric.to_json()
        click.echo(json.dumps(document, indent=2))
        return
    console = _console()
    render(snapshot, console, notes, fabric)
    if captured_fabric is not None:
        console.print("[bold]Fabric (from the captures)[/]", highlight=False)
        for line in captured_fabric.tree_lines():
            console.print(line, highlight=False, markup=False)
