"""GPU backends behind one interface (:mod:`tuning.backends.base`).

``open_rig(spec)`` is the probing factory every command uses:

* ``sim:NAME`` — a preset simulated rig shipped in ``tuning/backends/rigs/NAME.yaml``
  (``sim:reference`` is the embedded default);
* a path to a rig YAML file — a simulated rig of your own;
* ``nvml`` — the GPUs of this machine through NVML.
"""

from __future__ import annotations

from pathlib import Path

from tuning.backends.base import Rig
from tuning.errors import ConfigError

DEFAULT_RIG = "sim:reference"
RIGS_DIR = Path(__file__).with_name("rigs")


def preset_rig_names() -> list[str]:
    """Names accepted after ``sim:``."""
    return sorted(p.stem for p in RIGS_DIR.glob("*.yaml"))


def open_rig(spec: str = DEFAULT_RIG, *, seed: int | None = None) -> Rig:
    """Open the rig named by ``spec`` (see module docstring).

    ``seed`` overrides a simulated rig's noise seed; it is ignored for real GPUs.
    Raises :class:`ConfigError` for an unknown preset or a missing/invalid file and
    :class:`~tuning.errors.BackendUnavailable` when NVML cannot be used.
    """
    if spec == "nvml":
        from tuning.backends.nvml import NvmlRig

        return NvmlRig.open()

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
    if not path.is_file():
        raise ConfigError(
            f"rig {spec!r} is neither 'nvml', 'sim:NAME' nor an existing rig file; check the path"
        )
    return SimRig.from_file(path, seed=seed)
