"""The ``systemd-analyze security`` exposure reader the template tests and the placement bench
share. (The serving-unit value checks live in :mod:`tuning.core.checks`.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def systemd_exposure(unit_path: Path) -> float | None:
    """``systemd-analyze security --offline=yes`` overall exposure of a unit file (0–10).

    ``None`` when systemd-analyze is missing or prints no score. Lower is better; systemd
    calls ≤ 2 "OK", ≤ 5 "MEDIUM".
    """
    try:
        out = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", str(unit_path)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except FileNotFoundError:
        return None
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    return float(match.group(1)) if match else None
