"""``decode`` | ``prefill`` | ``batched`` on a simulated rig: its own workload classes."""

from __future__ import annotations

from typing import Any, ClassVar

from tuning.errors import ConfigError
from tuning.workloads.base import WORKLOAD_CLASSES, Workload


class SimWorkload(Workload):
    """The simulated rig's workload classes; the only sim-specific code in the tuner.

    Its tokens come from the rig's model, on the rig's virtual clock: not :attr:`real_time`.
    """

    real_time: ClassVar[bool] = False

    def __init__(self, rig: Any, workload_class: str) -> None:
        if workload_class not in WORKLOAD_CLASSES:
            raise ConfigError(
                f"unknown workload class {workload_class!r}; choose one of {WORKLOAD_CLASSES}"
            )
        self.rig = rig
        self.name = workload_class
        self._running: set[str] = set()

    def start(self, uuid: str) -> None:
        if uuid not in self._running:
            self.rig.set_workload(uuid, self.name)
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
