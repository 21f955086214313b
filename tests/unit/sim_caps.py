"""The caps a simulated rig's "hardware" holds, read as a fresh process reads them.

The simulated rig persists its power limits under ``RIGFORGE_STATE_DIR`` (as a real GPU keeps
its limit when the process that set it dies), so opening the rig again shows what a crashed,
killed or finished run left behind. Used by the fault, recovery and journal tests.
"""

from __future__ import annotations

from tuning.apply.actuator import open_tuning_rig


def caps_now(spec: str) -> dict[str, float]:
    """``{uuid: power limit}`` the rig ``spec`` holds now. Units: W."""
    rig, _ = open_tuning_rig(spec)
    return {gpu.uuid: gpu.power_limit_w() for gpu in rig.gpus}


def stock_caps(spec: str) -> dict[str, float]:
    """``{uuid: default power limit}`` of the rig ``spec`` (its presets'). Units: W."""
    rig, _ = open_tuning_rig(spec)
    return {gpu.uuid: gpu.power_constraints().default_w for gpu in rig.gpus}
