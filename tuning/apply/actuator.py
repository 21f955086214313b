"""The actuator: the one place a GPU's power limit changes (set, read back, persisted).

Every change the tuner makes goes through an :class:`Actuator`; a
:class:`~tuning.apply.session.SafetySession` around it journals the originals first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuning.apply import sim_state
from tuning.backends.base import Rig
from tuning.core.power import POWER_LIMIT_TOLERANCE_W
from tuning.errors import ReadBackMismatch, RigforgeError

if TYPE_CHECKING:
    from tuning.budget import RigBudget


@dataclass(frozen=True)
class GpuSettings:
    """What the journal restores: power limit (W) and persistence mode."""

    power_limit_w: float
    persistence_mode: bool | None


class Actuator:
    """Sets caps on a rig; persists a simulated rig's caps so they outlive the process.

    ``on_change(uuid, cap_w)`` is called after every successful change (the sweep's trace).
    """

    def __init__(self, rig: Rig, spec: str, *, persist: bool | None = None) -> None:
        self.rig = rig
        self.spec = spec
        self.persist = spec != "nvml" if persist is None else persist
        self.on_change: Callable[[str, float], None] | None = None

    @property
    def sim_state_path(self) -> Path:
        return sim_state.sim_state_path(self.spec)

    def load_persisted(self) -> None:
        """Re-apply a simulated rig's caps from a previous process (its "hardware" state)."""
        if not self.persist:
            return
        sim_state.reapply(self.rig, self.spec)

    def _save(self) -> None:
        if not self.persist:
            return
        sim_state.save(self.rig, self.spec)

    def settings(self) -> dict[str, GpuSettings]:
        """The current settings of every GPU, by UUID."""
        return {
            gpu.uuid: GpuSettings(gpu.power_limit_w(), gpu.persistence_mode())
            for gpu in self.rig.gpus
        }

    def set_cap(self, uuid: str, cap_w: float) -> float:
        """Set a power limit, read it back, persist it; return the enforced limit. Units: W.

        Raises :class:`ReadBackMismatch` when the card reads back a limit further off than
        :data:`~tuning.core.power.POWER_LIMIT_TOLERANCE_W`.
        """
        gpu = self.rig.gpu(uuid)
        current = gpu.power_limit_w()
        if abs(current - cap_w) < POWER_LIMIT_TOLERANCE_W:
            return current
        try:
            enforced = gpu.set_power_limit_w(cap_w)
        finally:
            # even a failed set may have changed something: record what the GPU now holds
            self._save()
        configured = gpu.power_limit_w()
        if abs(configured - cap_w) > POWER_LIMIT_TOLERANCE_W:
            raise ReadBackMismatch(
                f"GPU {uuid}: asked for a {cap_w:g} W limit, the card reads back {configured:g} W "
                f"(enforced {enforced:g} W); check for another tool managing power limits"
            )
        if self.on_change is not None:
            self.on_change(uuid, configured)
        return enforced

    def restore(self, original: Mapping[str, GpuSettings]) -> dict[str, str]:
        """Put every GPU back; return ``{uuid: error}`` for the ones that could not be."""
        failures: dict[str, str] = {}
        for uuid, settings in original.items():
            try:
                self.set_cap(uuid, settings.power_limit_w)
                gpu = self.rig.gpu(uuid)
                if (
                    settings.persistence_mode is not None
                    and gpu.persistence_mode() is not None
                    and gpu.persistence_mode() != settings.persistence_mode
                ):
                    gpu.set_persistence_mode(settings.persistence_mode)
            except (RigforgeError, OSError) as error:
                failures[uuid] = f"{type(error).__name__}: {error}"
        return failures


def open_tuning_rig(
    spec: str, *, seed: int | None = None, budget: RigBudget | None = None
) -> tuple[Rig, Actuator]:
    """Open a rig and its actuator; a simulated rig gets back its persisted caps.

    ``budget``: the PSUs/circuits of real GPUs (see :func:`tuning.backends.open_rig`).
    """
    from tuning import backends

    rig = backends.open_rig(spec, seed=seed, budget=budget)
    actuator = Actuator(rig, spec)
    actuator.load_persisted()
    return rig, actuator
