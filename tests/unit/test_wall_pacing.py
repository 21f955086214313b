"""A load outside the process on a simulated rig: the rig's virtual clock follows wall time.

The blocker this pins (found sweeping a real llama-server from a simulated rig): a free-running
virtual clock ends a 9 s probe window (3 s settle + 6 s window) in milliseconds of real time,
before one HTTP request has come back, so an ``openai:`` or ``cmd:`` load measured ~0 tok/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tuning.apply.actuator import Actuator
from tuning.backends.sim import SimRig
from tuning.sweep import Sweep, SweepConfig
from tuning.workloads import OpenAIWorkload, SimWorkload

RIG_YAML = """
name: one-card-test
seed: 0
circuits: [{name: c1, voltage_v: 230, breaker_a: 10}]
psus: [{name: p1, rating_w: 1000, circuit: c1, platform_w: 150}]
gpus:
  - {preset: rtx3090, slot: 1, bus_id: "00000000:01:00.0", psu: p1}
"""


@pytest.fixture
def rig(write_rig: Callable[[str], Path]) -> SimRig:
    return SimRig.from_file(write_rig(RIG_YAML), seed=0)


def _wall_s_of(rig: SimRig, virtual_s: float, steps: int) -> float:
    started = time.monotonic()
    for _ in range(steps):
        rig.clock.sleep(virtual_s / steps)
    return time.monotonic() - started


def test_a_free_running_sim_clock_does_not_sleep(rig: SimRig) -> None:
    """600 virtual seconds (a 10-minute heat-soak) pass in well under a real second."""
    assert _wall_s_of(rig, 600.0, 600) < 1.0
    assert rig.clock.now_s() == pytest.approx(600.0)


def test_a_locked_sim_clock_takes_as_long_as_it_says(rig: SimRig) -> None:
    """Locked, 0.6 virtual seconds in 6 sleeps take at least 0.6 wall seconds from the lock;
    virtual time itself is not stretched (it stays what was slept)."""
    rig.clock.sleep(100.0)  # before the lock: free
    locked_at = time.monotonic()
    rig.clock.follow_wall_time()
    _wall_s_of(rig, 0.6, 6)
    assert time.monotonic() - locked_at >= 0.6
    assert rig.clock.now_s() == pytest.approx(100.6)
    rig.clock.follow_wall_time()  # idempotent: the anchor stays where it was
    _wall_s_of(rig, 0.2, 2)
    assert time.monotonic() - locked_at >= 0.8


def _sweep(rig: SimRig, workload: object) -> Sweep:
    actuator = Actuator(rig, "test", persist=False)
    return Sweep(rig, actuator, workload, SweepConfig(heat_soak_s=60.0))  # type: ignore[arg-type]


def test_a_sweep_of_an_outside_load_locks_the_clock(rig: SimRig) -> None:
    """An ``openai:`` load (nothing started yet: no request is sent) makes the sweep's clock
    follow wall time; the rig's own workload classes keep it free-running."""
    uuid = rig.gpus[0].uuid
    assert OpenAIWorkload("http://127.0.0.1:9").real_time
    assert not SimWorkload(rig, "decode").real_time

    _sweep(rig, SimWorkload(rig, "decode"))
    assert _wall_s_of(rig, 50.0, 50) < 0.5

    before_lock = time.monotonic()
    _sweep(rig, OpenAIWorkload({uuid: "http://127.0.0.1:9"}))
    _wall_s_of(rig, 0.3, 3)
    assert time.monotonic() - before_lock >= 0.3
