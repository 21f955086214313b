"""``rigforge links``: measure the fabric — every GPU's host link and every GPU pair — and judge it.

Per GPU: H2D and D2H alone, then every GPU at once (can the CPU feed them all?), then both
directions at once; per ordered pair: bandwidth, latency, and whether it went peer-to-peer,
over NVLink or staged through host memory. Verdicts (thresholds in :mod:`tuning.links`):
``below_expectation``, ``shared_uplink``, ``behind_chipset``, ``downtrained``,
``p2p_unavailable``, ``write_collapse``. Progress goes to stderr (rich on a terminal, plain
lines off one); ``--json`` prints ``{"gpus": […], "p2p": […], "lanes": {…}}``. Exits 1 when a
GPU's host link is flagged.

Real GPUs (``--rig nvml``) are measured by one worker process per GPU (torch or cupy), read
only: nothing changes a power limit, clock, persistence or P2P setting.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from inventory.host_data import host_data_path
from tuning.backends import open_rig
from tuning.backends.base import Rig
from tuning.commands.options import (
    host_option,
    inventory_dir_option,
    json_option,
    out_option,
    rig_option,
)
from tuning.fabric.links_file import dump_links_file
from tuning.links import (
    DEFAULT_SIZE_MIB,
    LinkProber,
    LinksReport,
    SimProber,
    run_links,
)
from tuning.rig_fabric import fabric_of_rig


def gpu_table(report: LinksReport) -> Table:
    """Per GPU: link, H2D/D2H alone, all at once, both ways, expectation, verdicts."""
    table = Table(title=f"Host links of {report.rig_name} (GB/s)", title_justify="left")
    for header in ("#", "link", "H2D", "D2H", "H2D all", "D2H all", "both", "expected"):
        table.add_column(header, justify="right")
    table.add_column("verdicts", overflow="fold")
    for g in report.gpus:
        link = f"gen {g.gen or '?'} x{g.width or '?'}"
        table.add_row(
            str(g.index),
            link,
            f"{g.h2d_gbps:.1f}",
            f"{g.d2h_gbps:.1f}",
            f"{g.h2d_concurrent_gbps:.1f}",
            f"{g.d2h_concurrent_gbps:.1f}",
            f"{g.bidir_gbps:.1f}" if g.bidir_gbps is not None else "—",
            f"{g.expected_gbps:.1f}" if g.expected_gbps is not None else "?",
            ", ".join(v.value for v, _ in g.verdicts) or "[green]ok[/]",
        )
    return table


def pair_table(report: LinksReport) -> Table | None:
    """The P2P matrix: GB/s and mode (P peer, N NVLink, S staged) of each ordered pair."""
    n = len(report.gpus)
    if n < 2:
        return None
    table = Table(
        title="GPU → GPU (GB/s; P peer, N NVLink, S staged; latency µs)", title_justify="left"
    )
    table.add_column("src \\ dst")
    for g in report.gpus:
        table.add_column(str(g.index), justify="right")
    cells = {(p.src, p.dst): p for p in report.p2p}
    for a in range(n):
        row = []
        for b in range(n):
            pair = cells.get((a, b)) or cells.get((b, a))
            if a == b or pair is None:
                row.append("—")
                continue
            mark = {"peer": "P", "nvlink": "N", "staged": "S"}[pair.mode.value]
            lat = f" {pair.latency_us:.2f}" if pair.latency_us is not None else ""
            row.append(f"{pair.gbps:.1f} {mark}{lat}")
        table.add_row(str(a), *row)
    return table


def plot_heatmap(report: LinksReport, path: Path) -> Path:
    """The P2P matrix as a heatmap PNG (matplotlib Agg); staged pairs hatched."""
    from tuning.report import _pyplot, save_figure

    plt = _pyplot()
    n = len(report.gpus)
    grid = [[float("nan")] * n for _ in range(n)]
    for p in report.p2p:
        grid[p.src][p.dst] = p.gbps
        if grid[p.dst][p.src] != grid[p.dst][p.src]:  # quick mode: one direction measured
            grid[p.dst][p.src] = p.gbps
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.0 * n + 1.5))
    image = ax.imshow(grid, cmap="viridis")
    fig.colorbar(image, ax=ax, label="GB/s")
    for p in report.p2p:
        mark = {"peer": "P", "nvlink": "N", "staged": "S"}[p.mode.value]
        ax.text(
            p.dst, p.src, f"{p.gbps:.0f}{mark}", ha="center", va="center", color="w", fontsize=8
        )
    ax.set_xticks(range(n), [str(g.index) for g in report.gpus])
    ax.set_yticks(range(n), [str(g.index) for g in report.gpus])
    ax.set_xlabel("destination GPU")
    ax.set_ylabel("source GPU")
    ax.set_title(f"{report.rig_name}: GPU → GPU bandwidth")
    return save_figure(fig, path)


def _prober_for(rig: Rig, size_mib: int) -> LinkProber:
    from tuning.backends.sim import SimRig

    if isinstance(rig, SimRig):
        fabric = fabric_of_rig(rig)
        return SimProber(fabric, noise_rel=rig.spec.noise.throughput_rel, seed=rig.seed)
    from tuning.links_gpu import GpuProber

    return GpuProber.start(rig, size_mib)


@click.command("links")
@rig_option("sim:NAME, a rig YAML file, or nvml (this machine's GPUs, read only).")
@click.option(
    "--size-mib",
    type=click.IntRange(1, 16384),
    default=DEFAULT_SIZE_MIB,
    show_default=True,
    help="Size of each measured copy, in MiB.",
)
@click.option("--quick", is_flag=True, help="One direction per GPU pair, no bidirectional runs.")
@json_option("Print the JSON document instead of tables.")
@out_option("Write links.yaml and p2p.png (the heatmap) here.", dest="out_dir")
@host_option(
    "Write links.yaml back as this inventory host's data: INVENTORY_DIR/host_data/HOST/"
    "links.yaml (where the placement reads it)."
)
@inventory_dir_option
def command(
    rig_spec: str,
    size_mib: int,
    quick: bool,
    as_json: bool,
    out_dir: Path | None,
    host_name: str | None,
    inventory_dir: Path,
) -> None:
    """Measure PCIe/NVLink bandwidth and latency per GPU and per GPU pair, with verdicts.

    \b
    Per GPU: H2D and D2H alone, all GPUs at once, both directions; per GPU pair:
    bandwidth each way, latency, and the mode (peer, NVLink, staged through host memory).
    Verdicts: below_expectation (< 80 % of what gen x width carries), shared_uplink,
    behind_chipset, downtrained, p2p_unavailable, write_collapse (docs/links.md).

    \b
    Examples:
      rigforge links                                 # the simulated reference box
      rigforge links --rig nvml --out links/         # this machine's GPUs, read only
      rigforge links --rig nvml --host ws1           # save for the placement

    Exit status: 0 every host link healthy, 1 a GPU's host link flagged, 2 bad input.
    """
    host_file = host_data_path(inventory_dir, host_name, "links.yaml") if host_name else None
    rig = open_rig(rig_spec)
    err = Console(stderr=True)
    terminal = sys.stderr.isatty()

    def progress(line: str) -> None:
        if terminal:
            err.print(f"[dim]{line}[/]", highlight=False)
        else:
            click.echo(f"links: {line}", err=True)

    try:
        prober = _prober_for(rig, size_mib)
        try:
            from tuning.backends.sim import SimRig

            fabric = fabric_of_rig(rig) if isinstance(rig, SimRig) else None
            report = run_links(
                rig, prober, fabric, size_mib=size_mib, quick=quick, progress=progress
            )
        finally:
            close = getattr(prober, "close", None)
            if close is not None:
                close()
    finally:
        rig.close()
    text = dump_links_file(report.to_links_file())
    written: list[Path] = []
    for path in (out_dir / "links.yaml" if out_dir else None, host_file):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    if out_dir is not None:
        from tuning.report import PlotsUnavailable

        try:
            written.append(plot_heatmap(report, out_dir / "p2p.png"))
        except PlotsUnavailable as error:
            click.echo(f"rigforge: wrote {out_dir / 'links.yaml'}; no heatmap: {error}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        console = Console(width=max(Console().width, 120))
        console.print(gpu_table(report))
        for g in report.gpus:
            for _, sentence in g.verdicts:
                console.print(f"[bold red]warning:[/] {sentence}", highlight=False)
        table = pair_table(report)
        if table is not None:
            console.print(table)
        for p in report.p2p:
            for verdict, sentence in p.verdicts:
                if verdict.value != "p2p_unavailable":
                    console.print(f"[bold red]warning:[/] {sentence}", highlight=False)
        staged = sum(1 for p in report.p2p if p.mode.value == "staged")
        if staged:
            console.print(
                f"note: {staged} of {len(report.p2p)} GPU pairs have no peer access "
                "(p2p_unavailable): their copies are staged through host memory",
                highlight=False,
            )
        if report.lanes is not None:
            b = report.lanes
            console.print(f"Lanes: {b.used} used / {b.total} ({b.free} free)", highlight=False)
        for path in written:
            console.print(f"written: {path}", highlight=False)
    if report.flagged:
        raise SystemExit(1)
