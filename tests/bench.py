"""``bench/``'s scripts imported as modules, for the tests that check their data and figures.

The scripts import one another by bare name (``import fidelity_curves``), so ``bench/`` is on
``sys.path`` while one is imported, and only then.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (imported once; later calls return the same one)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
