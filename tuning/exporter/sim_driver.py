"""Run a simulated rig in (scaled) real time so the exporter serves a living box without a GPU.

Before each scrape the virtual clock advances by the wall time since the last one (times
``speed``), the caps other rigforge processes left on the simulated "hardware" are re-read
(a ``rigforge apply`` against the same spec changes what the exporter sees, as on a real
box), and an optional control file sets the load, the room and the pace of virtual time:
``{"workload": "decode", "ambient_c": 55, "speed": 60}`` (CI drives the rig hot this way
without restarting the exporter; ``speed`` lets minutes of heat-up pass in seconds). The
control exists only for a simulated rig: the exporter refuses ``--sim-control`` on NVML.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuning.apply.actuator import Actuator
from tuning.backends.sim import SimRig
from tuning.backends.sim_config import WORKLOADS
from tuning.errors import ConfigError

#: The most virtual time one scrape advances (a suspended process must not stall the next
#: scrape simulating hours; ``estimate``: 10 min of six GPUs is ~0.3 s of model time).
#: Units: s.
MAX_ADVANCE_S = 600.0
#: The fastest a control file may run virtual time (``estimate``: 10 min of heat-up in 1 s
#: at most; the model's step stays ``step_s`` of the rig, so faster only costs CPU).
MAX_SPEED = 600.0


@dataclass
class SimDriver:
    """``before_scrape`` hook of a :class:`~tuning.exporter.collector.RigCollector`."""

    rig: SimRig
    actuator: Actuator | None = None
    speed: float = 1.0
    control: Path | None = None
    now_s: Callable[[], float] = time.monotonic
    _last_s: float | None = field(default=None, init=False)
    _control_mtime: float | None = field(default=None, init=False)

    def set_load(self, workload: str | None, ambient_c: float | None) -> None:
        """Run ``workload`` on every GPU (``None``: idle) and set the room temperature (°C)."""
        if workload is not None and workload not in WORKLOADS:
            raise ConfigError(
                f"unknown sim workload {workload!r}; use one of {', '.join(WORKLOADS)}"
            )
        for gpu in self.rig.gpus:
            self.rig.set_workload(gpu.uuid, workload)
        if ambient_c is not None:
            self.rig.ambient_c = float(ambient_c)

    def _read_control(self) -> None:
        if self.control is None or not self.control.is_file():
            return
        mtime = self.control.stat().st_mtime
        if mtime == self._control_mtime:
            return
        self._control_mtime = mtime
        try:
            document = json.loads(self.control.read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"{self.control}: not a JSON control document: {error}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{self.control}: expected an object with workload / ambient_c")
        ambient = document.get("ambient_c")
        speed = document.get("speed")
        if speed is not None:
            if (
                isinstance(speed, bool)
                or not isinstance(speed, int | float)
                or not 0 < speed <= MAX_SPEED
            ):
                raise ConfigError(
                    f"{self.control}: speed {speed!r} must be a number in (0, {MAX_SPEED:g}]"
                )
            self.speed = float(speed)
        self.set_load(document.get("workload"), None if ambient is None else float(ambient))

    def __call__(self) -> None:
        now = self.now_s()
        if self._last_s is not None:
            self.rig.clock.sleep(min(max(now - self._last_s, 0.0) * self.speed, MAX_ADVANCE_S))
        self._last_s = now
        if self.actuator is not None:
            self.actuator.load_persisted()
        self._read_control()
