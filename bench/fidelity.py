"""The physical model against published figures, one line each (issue 12's calibration bar).

Each line: the figure, the model's value, the published range, the error (pp for points on a cap
curve, % for ratios and speeds) and the source. Ends with
``fidelity: N/M within bounds, worst …``. Exit status 1 when a figure misses its bar.

The figures live beside this file, by concern: ``fidelity_caps.py`` (cap curves: the power model
and the simulator), ``fidelity_speed.py`` (speeds and ratios: the step-time model) and
``fidelity_curves.py`` (the published cap curves of ``bench/curves/*.yaml`` run through the
simulator; docs/fidelity.md); each defines ``FIGURES: list[Figure]``.

    .venv/bin/python bench/fidelity.py
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fidelity_common import Figure

MODULES = ("fidelity_caps", "fidelity_speed", "fidelity_curves")


def collect() -> list[Figure]:
    """Every figure of the modules that exist (a concern not built yet contributes none)."""
    figures: list[Figure] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"({name}.py: not present)")
            continue
        figures.extend(module.FIGURES)
    return figures


def report(figures: list[Figure]) -> int:
    """Print one line per figure and the summary line; 0 when every figure meets its bar."""
    worst: tuple[float, str] | None = None
    passed = 0
    for fig in figures:
        value = fig.model()
        err = fig.error(value)
        ok = fig.within(value)
        passed += ok
        shown = f"{err:.1f} pp" if fig.kind == "curve" else f"{err * 100:.1f} %"
        published = f"{fig.low:g}" if fig.low == fig.high else f"{fig.low:g}-{fig.high:g}"
        print(
            f"{'ok ' if ok else 'MISS'} {fig.label}: model {value:.3g} {fig.unit}, "
            f"published {published} {fig.unit}, error {shown}  [{fig.source}]"
        )
        if worst is None or (err * (1 if fig.kind == "curve" else 100)) > worst[0]:
            worst = (err * (1 if fig.kind == "curve" else 100), f"{fig.label} ({shown})")
    worst_text = worst[1] if worst else "none"
    print(f"fidelity: {passed}/{len(figures)} within bounds, worst {worst_text}")
    return 0 if passed == len(figures) else 1


def main() -> int:
    return report(collect())


if __name__ == "__main__":
    raise SystemExit(main())
