"""Fixtures shared by the tuner's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: Two cards on one PSU and one 120 V / 15 A circuit: the smallest rig with a budget.
TWO_CARD_RIG_YAML = """
name: two-card-test
seed: 0
circuits: [{name: c1, voltage_v: 120, breaker_a: 15}]
psus: [{name: p1, rating_w: 1200, circuit: c1, platform_w: 150}]
gpus:
  - {preset: rtx3090, slot: 1, bus_id: "00000000:01:00.0", psu: p1}
  - {preset: rtx_a6000, slot: 3, bus_id: "00000000:21:00.0", psu: p1}
"""


@pytest.fixture
def write_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Writes a simulated rig file (the YAML text given) as ``tmp_path/rig.yaml``; journals
    and simulated caps live in ``tmp_path/state`` (``RIGFORGE_STATE_DIR``), not this machine's."""
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))

    def write(rig_yaml: str) -> Path:
        path = tmp_path / "rig.yaml"
        path.write_text(rig_yaml)
        return path

    return write


@pytest.fixture
def rig_file(write_rig: Callable[[str], Path]) -> str:
    """The two-card simulated rig file (:data:`TWO_CARD_RIG_YAML`)."""
    return str(write_rig(TWO_CARD_RIG_YAML))
