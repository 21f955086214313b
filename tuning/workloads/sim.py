"""``decode`` | ``prefill`` | ``batched`` or a workload file on a simulated rig: the rig runs
the description itself (:meth:`tuning.backends.sim.SimRig.set_workload`, or
:meth:`~tuning.backends.sim.SimRig.run_workload` for a split over named GPUs)."""

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
        """``workload_class``: a preset name, or a description: without named GPUs one
        replica on every GPU the sweep loads; with them one split (:meth:`swept_together`)."""
        if not isinstance(workload_class, WorkloadSpec) and workload_class not in WORKLOAD_CLASSES:
            raise ConfigError(
                f"unknown workload class {workload_class!r}; choose one of {WORKLOAD_CLASSES}"
            )
        self.rig = rig
        self.spec = workload_class
        self.name = workload_class if isinstance(workload_class, str) else workload_class.name
        self._running: set[str] = set()
        #: a split's GPUs (UUIDs, stage-major) and its handle while it runs
        self._members: tuple[str, ...] = ()
        self._handle: Any = None
        if isinstance(workload_class, WorkloadSpec) and workload_class.grouped:
            from tuning.workloads.spec import resolve_gpus

            gpus = list(rig.gpus)
            order = resolve_gpus(
                workload_class, [g.uuid for g in gpus], [g.pci_bus_id for g in gpus]
            )
            self._members = tuple(gpus[i].uuid for i in order)

    def swept_together(self) -> tuple[str, ...]:
        return self._members

    def start(self, uuid: str) -> None:
        """Load the GPU; a split starts on all its GPUs at once (idempotent)."""
        if self._members:
            if self._handle is None:
                self._handle = self.rig.run_workload(self.spec)
                self._running.update(self._members)
            return
        if uuid not in self._running:
            self.rig.set_workload(uuid, self.spec)
            self._running.add(uuid)

    def stop(self, uuid: str) -> None:
        """Idle the GPU; stopping any GPU of a split stops the split (a pipeline missing a
        stage serves nothing)."""
        if self._members:
            if self._handle is not None and uuid in self._members:
                self.rig.stop_workload(self._handle)
                self._handle = None
                self._running.clear()
            return
        if uuid in self._running:
            self.rig.set_workload(uuid, None)
            self._running.discard(uuid)

    def tokens_total(self, uuid: str) -> float:
        """The GPU's tokens; a split's are shared out evenly over its GPUs by the rig, so
        the members' counts sum to the pipeline's."""
        return float(self.rig.tokens_total(uuid))

    def close(self) -> None:
        for uuid in list(self._running):
            self.stop(uuid)
