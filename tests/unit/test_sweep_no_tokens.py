"""A load that makes no tokens at the top cap stops the sweep (exit 2), no profile of 0 tok/s.

Found on the CI target: an engine pinned to too few cores served nothing, and a sweep over it
exited 0 with a profile whose every cap "kept" 0 tok/s.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from tuning.apply.actuator import Actuator
from tuning.backends import open_rig
from tuning.errors import WorkloadFailed
from tuning.sweep import Sweep, SweepConfig
from tuning.workloads.base import Workload


class _Silent(Workload):
    """Starts, stops, never counts a token (an engine that accepted and never answered)."""

    name = "silent"
    real_time: ClassVar[bool] = False  # keep the simulated rig's fast clock in the test

    def start(self, uuid: str) -> None:
        pass

    def stop(self, uuid: str) -> None:
        pass

    def tokens_total(self, uuid: str) -> float:
        return 0.0


def test_no_tokens_at_the_uncapped_probe_is_a_failed_load() -> None:
    """WorkloadFailed is what the safety session turns into restored caps and exit 2 (as for
    an engine killed mid-sweep, tests/target/test_engine_tune.py)."""
    rig = open_rig("sim:4x3090", seed=0)
    actuator = Actuator(rig, "sim:4x3090", persist=False)
    sweep = Sweep(rig, actuator, _Silent(), SweepConfig(workload="decode", seed=0))
    with pytest.raises(WorkloadFailed, match="no tokens at the uncapped probe"):
        sweep.run()
