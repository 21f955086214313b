"""Terminal report and PNG plots of a sweep.

* :func:`results_table` — GPU, chosen cap, % of uncapped (stock) throughput, tokens/J gain,
  peak temperature, probes; :func:`floor_warning` — the line under it when the efficiency
  floor did not fit the power budget.
* :func:`plot_curves` — throughput and tokens/J against the cap, one panel pair per GPU, the
  chosen cap marked. :func:`plot_heat_soak` — temperature traces of the final heat-soak.
  Both use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from tuning.errors import RigforgeError

if TYPE_CHECKING:
    from tuning.sweep import SweepResult


class PlotsUnavailable(RigforgeError):
    """matplotlib is not installed (the on-box tuner install leaves it out)."""


def results_table(result: SweepResult) -> Table:
    """The final table of a sweep."""
    cfg = result.config
    table = Table(
        title=(
            f"{result.rig_name}: {cfg.workload}, policy {cfg.policy}"
            + (f" (floor {cfg.floor:.0%})" if str(cfg.policy) == "efficiency" else "")
        )
    )
    for header, justify in (
        ("GPU", "left"),
        ("bus id", "left"),
        ("cap W", "right"),
        ("stock W", "right"),
        ("throughput", "right"),
        ("tokens/J gain", "right"),
        ("peak °C", "right"),
        ("probes", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for g in result.gpus:
        table.add_row(
            g.name + (" [red](flagged)[/red]" if g.flagged else ""),
            g.pci_bus_id,
            f"{g.cap_w:.0f}",
            f"{g.stock_cap_w:.0f}",
            f"{g.throughput_rel:.1%}",
            f"{g.tokens_per_joule_gain:+.1%}",
            f"{g.peak_temp_c:.0f}",
            str(g.probes),
        )
    final = result.final_soak
    events = len(final.throttle_events) if final else 0
    table.caption = (
        f"{result.total_probes} probes in {result.sweep_sim_s / 60:.1f} min; heat-soak "
        f"{result.soak_sim_s / 60:.0f} min over {len(result.soak_rounds)} round(s), "
        f"{events} throttle events in the final one; max PSU/circuit load "
        f"{result.max_psu_load_ratio:.0%} of budget; objective {result.objective:.4g}"
    )
    return table


def _budget_part(name: str) -> str:
    """``"psu:p1"`` → ``"PSU p1"``, ``"circuit:c1"`` → ``"circuit c1"``."""
    kind, _, label = name.partition(":")
    return f"{'PSU' if kind == 'psu' else kind} {label}" if label else name


def floor_warning(result: SweepResult) -> str | None:
    """The line printed under the table when the efficiency floor did not fit the budget
    (the caps then maximise throughput instead), else ``None``."""
    if not result.floor_relaxed:
        return None
    where = ", ".join(_budget_part(n) for n in result.floor_blocked_by) or "the PSUs/circuits"
    return (
        f"floor {result.config.floor:.0%} does not fit the power budget on {where}: "
        "caps maximise throughput instead"
    )


def _pyplot():
    """matplotlib's pyplot on the Agg backend; :class:`PlotsUnavailable` without matplotlib."""
    try:
        import matplotlib
    except ImportError as error:
        raise PlotsUnavailable(
            "plots need matplotlib, which this install lacks: pip install 'rigforge[plots]'"
        ) from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG, 80 dpi; folders made) and free it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    _pyplot().close(fig)
    return path


def plot_curves(result: SweepResult, path: Path) -> Path:
    """Throughput and tokens/J vs cap per GPU, chosen cap marked; writes ``path`` (PNG)."""
    plt = _pyplot()
    n = len(result.gpus)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n), squeeze=False)
    for row, g in enumerate(result.gpus):
        caps = [p.cap_w for p in g.curve]
        for col, (values, label) in enumerate(
            (
                ([p.throughput_tps for p in g.curve], "tokens/s"),
                ([p.tokens_per_joule for p in g.curve], "tokens/J"),
            )
        ):
            ax = axes[row][col]
            ax.plot(caps, values, "o-", ms=4)
            ax.axvline(g.cap_w, color="tab:red", ls="--", label=f"chosen {g.cap_w:.0f} W")
            ax.set_xlabel("power cap (W)")
            ax.set_ylabel(label)
            ax.set_title(f"{g.name} {g.pci_bus_id[-7:]}", fontsize=9)
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_heat_soak(result: SweepResult, path: Path) -> Path:
    """Temperature traces of the final heat-soak; writes ``path`` (PNG)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    final = result.final_soak
    if final is not None:
        for g in result.gpus:
            trace = final.temp_trace.get(g.uuid, ())
            ax.plot(
                [t / 60 for t, _ in trace],
                [c for _, c in trace],
                label=f"{g.name} @ {g.cap_w:.0f} W",
            )
    ax.set_xlabel("heat-soak time (min)")
    ax.set_ylabel("GPU temperature (°C)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
