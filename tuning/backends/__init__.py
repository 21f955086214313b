"""GPU backends behind one interface (:mod:`tuning.backends.base`).

``open_rig(spec)`` is the probing factory every command uses:

* ``sim:NAME`` — a preset simulated rig shipped in ``tuning/backends/rigs/NAME.yaml``
  (``sim:reference`` is the embedded default);
* a path to a rig YAML file — a simulated rig of your own;
* ``nvml`` — the GPUs of this machine through NVML.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tuning.backends.base import Rig
from tuning.errors import ConfigError

if TYPE_CHECKING:
    from tuning.budget import RigBudget

DEFAULT_RIG = "sim:reference"
RIGS_DIR = Path(__file__).with_name("rigs")


def preset_rig_names() -> list[str]:
    """Names accepted after ``sim:``."""
    return sorted(p.stem for p in RIGS_DIR.glob("*.yaml"))


def open_rig(
    spec: str = DEFAULT_RIG, *, seed: int | None = None, budget: RigBudget | None = None
) -> Rig:
    """Open the rig named by ``spec`` (see module docstring).

    ``seed`` overrides a simulated rig's noise seed; it is ignored for real GPUs.
    ``budget``: the PSUs and circuits of real GPUs (NVML knows nothing of them); every GPU
    must resolve to a PSU (:meth:`~tuning.budget.RigBudget.psu_map`). A simulated rig keeps
    its own PSUs here; callers pass a budget given for it to the sweep instead.
    Raises :class:`ConfigError` for an unknown preset or a missing/invalid file and
    :class:`~tuning.errors.BackendUnavailable` when NVML cannot be used.
    """
    if spec == "nvml":
        from tuning.backends.nvml import NvmlRig

        if budget is None:
            return NvmlRig.open()
        # the GPUs must be enumerated before bus ids in the budget can be resolved to UUIDs
        probe = NvmlRig.open()
        try:
            psu_map = budget.psu_map(probe.gpus)
        except BaseException:
            probe.close()
            raise
        return NvmlRig(
            probe.gpus,
            name=probe.name,
            psus=budget.psus,
            circuits=budget.circuits,
            psu_map=psu_map,
        )

    from tuning.backends.sim import SimRig

    if spec.startswith("sim:"):
        name = spec.removeprefix("sim:")
        path = RIGS_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown simulated rig {spec!r}; presets: "
                + ", ".join(f"sim:{n}" for n in preset_rig_names())
                + " (or give a path to a rig YAML file)"
            )
        return SimRig.from_file(path, seed=seed)
    path = Path(spec)
    if not path.exists() and not path.is_symlink():
        raise ConfigError(
            f"rig {spec!r} is neither 'nvml', 'sim:NAME' nor an existing rig file; check the path"
        )
    return SimRig.from_file(path, seed=seed)
