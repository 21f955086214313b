"""The ``systemd-analyze security`` exposure reader the template tests and the placement bench
share. The serving-unit value checks live in :mod:`tuning.core.checks` (every importer in the
tree uses that); they are re-exported here for one more round only, for branches still
importing them from here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tuning.core.checks import (
    API_KEY_MIN_CHARS,
    BUS_ID_RE,
    DEVICE_REF_RE,
    GPU_ID_HINT,
    SECRET_VALUE_RE,
    UUID_RE,
    api_key_problem,
    gpu_id_problem,
    is_placeholder_secret,
    placement_problems,
    secret_arg_problem,
    secret_args,
    text_problem,
    unit_name_collisions,
    unit_slug,
)

__all__ = [
    "API_KEY_MIN_CHARS",
    "BUS_ID_RE",
    "DEVICE_REF_RE",
    "GPU_ID_HINT",
    "SECRET_VALUE_RE",
    "UUID_RE",
    "api_key_problem",
    "gpu_id_problem",
    "is_placeholder_secret",
    "placement_problems",
    "secret_arg_problem",
    "secret_args",
    "systemd_exposure",
    "text_problem",
    "unit_name_collisions",
    "unit_slug",
]


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
