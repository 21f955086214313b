"""A simulated rig's "hardware" state: the caps it holds, persisted between processes.

Simulated rigs have no hardware that outlives the process, so the actuator persists their
applied limits in ``sim-<rig>.json`` in the state dir and re-applies them when the rig is
opened again — through the :class:`~tuning.backends.base.Gpu` interface only. That makes a
``kill -9`` test mean something: the "hardware" really is left at the probe's cap.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from tuning.apply.state import atomic_write_json, rig_slug, state_dir
from tuning.backends.base import Rig
from tuning.core.power import POWER_LIMIT_TOLERANCE_W
from tuning.errors import GpuLost

#: Who may read a simulated rig's caps: everyone (UUIDs and watts, nothing secret).
SIM_STATE_MODE = 0o644


def sim_state_path(spec: str) -> Path:
    """Where a simulated rig's caps are kept, in :func:`~tuning.apply.state.state_dir`."""
    return state_dir() / f"sim-{rig_slug(spec)}.json"


def reapply(rig: Rig, spec: str) -> None:
    """Re-apply a simulated rig's caps from a previous process (its "hardware" state)."""
    path = sim_state_path(spec)
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    for gpu in rig.gpus:
        cap = saved.get("power_limit_w", {}).get(gpu.uuid)
        if cap is not None and abs(gpu.power_limit_w() - cap) >= POWER_LIMIT_TOLERANCE_W:
            gpu.set_power_limit_w(float(cap))


def save(rig: Rig, spec: str) -> None:
    """Record the caps the simulated GPUs hold now."""
    path = sim_state_path(spec)
    # record what the simulated GPUs hold; a lost GPU keeps its last persisted value. Only
    # GpuLost: a signal's Terminated (a RigforgeError too) raised here must end the run.
    saved: dict[str, float] = {}
    if path.is_file():
        saved = json.loads(path.read_text()).get("power_limit_w", {})
    for gpu in rig.gpus:
        with contextlib.suppress(GpuLost):
            saved[gpu.uuid] = gpu.power_limit_w()
    # a simulated rig has no power to lose: surviving kill -9 (page cache) is enough. World-
    # readable, as a real card's limit is (nvidia-smi needs no root): the unprivileged
    # exporter reads what root's `rigforge apply` left on the simulated "hardware".
    atomic_write_json(
        path, {"spec": spec, "power_limit_w": saved}, durable=False, mode=SIM_STATE_MODE
    )
