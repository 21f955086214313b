"""``decode`` | ``prefill`` | ``batched`` or a workload file on a simulated rig: the rig runs
the description itself (:meth:`tuning.backends.sim.SimRig.set_workload`)."""

from __future__ import annotations

from typing import Any, ClassVar

from tuning.errors import ConfigError
from tuning.workloads.base import WORKLOAD_CLASSES, Workload
from tuning.workloads.spec import WorkloadSpec


class SimWorkload(Workload):
    """The simulated rig's workload classes; the only sim-specific code in the tuner.

    Its tokens come from the rig's model, on the rig's virtual clock: not :attr:`real_time`.
    """

    real_time: ClassVar[bool] = False

    def __init__(self, rig: Any, workload_class: str | WorkloadSpec) -> None:
        """``workload_class``: a preset name, or a description without named GPUs (one
        replica on every GPU the sweep loads)."""
        if isinstance(workload_class, WorkloadSpec):
            if workload_class.grouped:
                raise ConfigError(
                    f"workload {workload_class.name} is a split over named GPUs; the sweep "
                    "measures one GPU at a time: leave gpus: out (one replica per GPU)"
                )
        elif workload_class not in WORKLOAD_CLASSES:
            raise ConfigError(
                f"unknown workload class {workload_class!r}; choose one of {WORKLOAD_CLASSES}"
            )
        self.rig = rig
        self.spec = workload_class
        self.name = workload_class if isinstance(workload_class, str) else workload_class.name
        self._running: set[str] = set()

    def start(self, uuid: str) -> None:
        if uuid not in self._running:
            self.rig.set_workload(uuid, self.spec)
            self._running.add(uuid)

    def stop(self, uuid: str) -> None:
        if uuid in self._running:
            self.rig.set_workload(uuid, None)
            self._running.discard(uuid)

    def tokens_total(self, uuid: str) -> float:
        return float(self.rig.tokens_total(uuid))

    def close(self) -> None:
        for uuid in list(self._running):
            self.stop(uuid)
