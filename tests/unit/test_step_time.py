"""StepTime: the roofline sum and the shares, on hand-worked numbers."""

from __future__ import annotations

import pytest

from tuning.model.step import StepTime


def test_memory_bound_decode_step() -> None:
    """8 ms of reads, 2 ms of math, 1 ms host, 0 links, 4 tokens.

    Kernel = max(8, 2) = 8 ms; total = 8 + 0 + 1 = 9 ms; 4 / 0.009 = 444.4 tok/s.
    Kernel split 8:2 -> memory 6.4 ms, compute 1.6 ms: shares 0.711, 0.178, 0, 0.111.
    """
    step = StepTime(memory_s=0.008, compute_s=0.002, interconnect_s=0.0, host_s=0.001, tokens=4)
    assert step.total_s == pytest.approx(0.009)
    assert step.tokens_per_s == pytest.approx(444.44, rel=1e-3)
    shares = step.breakdown()
    assert shares["memory"] == pytest.approx(0.7111, rel=1e-3)
    assert shares["compute"] == pytest.approx(0.1778, rel=1e-3)
    assert shares["host"] == pytest.approx(0.1111, rel=1e-3)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert step.bottleneck == "memory"


def test_interconnect_bound_step_names_it() -> None:
    """2 ms kernel, 5 ms all-reduce: interconnect is 5/7 of the step."""
    step = StepTime(memory_s=0.002, compute_s=0.0, interconnect_s=0.005, host_s=0.0, tokens=1)
    assert step.bottleneck == "interconnect"
    assert step.breakdown()["interconnect"] == pytest.approx(5 / 7)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_refuses_impossible_times(bad: float) -> None:
    with pytest.raises(ValueError, match="memory_s"):
        StepTime(memory_s=bad, compute_s=0.0, interconnect_s=0.0, host_s=0.001, tokens=1)


def test_refuses_an_empty_step() -> None:
    with pytest.raises(ValueError, match="every component is 0"):
        StepTime(memory_s=0.0, compute_s=0.0, interconnect_s=0.0, host_s=0.0, tokens=1)
