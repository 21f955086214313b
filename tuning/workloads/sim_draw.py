"""A real load (``openai:``, ``cmd:``) measured against a *simulated* rig draws simulated power.

On a simulated rig the tokens of an outside load are real but the GPUs are not: without this,
the simulated cards sit idle (~30 W, below every minimum cap) while the real engine answers,
so every cap looks free and the search stops after one probe. :class:`SimDrawMirror` runs the
GPU's simulated workload class (``decode``: an engine serving requests one token at a time,
the class an inference server's steady state is closest to) exactly while the real load runs
on it, so the caps the sweep probes act on a drawing card. A real rig never gets one.
"""

from __future__ import annotations

from typing import Protocol

from tuning.workloads.base import Workload

#: The simulated class a real serving load draws as (see the module docstring).
MIRRORED_CLASS = "decode"


class _SimRigLoad(Protocol):
    def set_workload(self, uuid: str, workload: str | None) -> None: ...


class SimDrawMirror(Workload):
    """``inner``'s tokens, with the simulated GPU drawing ``MIRRORED_CLASS`` while loaded."""

    def __init__(self, inner: Workload, rig: _SimRigLoad, mirrored: str = MIRRORED_CLASS):
        self.inner = inner
        self.rig = rig
        self.mirrored = mirrored
        self.name = inner.name

    def start(self, uuid: str) -> None:
        self.rig.set_workload(uuid, self.mirrored)
        self.inner.start(uuid)

    def stop(self, uuid: str) -> None:
        self.inner.stop(uuid)
        self.rig.set_workload(uuid, None)

    def tokens_total(self, uuid: str) -> float:
        return self.inner.tokens_total(uuid)

    def ready(self, uuid: str) -> bool:
        return self.inner.ready(uuid)

    def settle(self, uuid: str) -> None:
        self.inner.settle(uuid)

    def close(self) -> None:
        self.inner.close()
