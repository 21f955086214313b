"""The simulated rig: GPUs that behave like hardware, on a virtual clock.

``SimRig`` implements :class:`~tuning.backends.base.Rig` from a rig file
(:mod:`tuning.backends.sim_config`). All GPUs are advanced together in fixed steps
(``step_s``, default 0.1 s; the step on Python floats, see ``SimRig._run_steps``) whenever
``rig.clock.sleep(s)`` is called; nothing here calls :func:`time.sleep` unless the clock
was locked to wall time for a load outside the process (:meth:`SimClock.follow_wall_time`).

The model, per GPU and step (f = SM clock / max SM clock):

* **Power and throughput** come from the physical model: a workload is a description
  (:class:`~tuning.workloads.spec.WorkloadSpec`: model, engine, split, concurrency, context,
  phase; ``decode``, ``prefill``, ``batched`` are named presets of it, on the rig file's
  ``model:``), each GPU's :class:`~tuning.model.step.StepTime` comes from
  :func:`tuning.model.serving.predict` on that GPU's preset (:mod:`.sim_workload`), once per
  workload, and the power model (:mod:`tuning.model.power`) gives board power and tokens/s at
  every 15 MHz clock bin. A split over named GPUs is the plan's split
  (:mod:`tuning.model.split`): each member at its own clock, the pipeline paced by its
  stages; a stage that waits is busy less and draws less.
  **DVFS**: under an effective limit L the card runs the highest bin with
  ``P(f) <= L`` (never below the preset's ``f_min``), so a limit above the natural draw
  ``P(1)`` never binds. The knee of a cap curve emerges from the step's memory / compute /
  waiting shares; there is no per-class curve.
* **Heat**: inlet = ambient + Σ_j coupling_ij · P_j (neighbours by slot distance, or a
  front-to-back chain, plus a closed case's own air: :mod:`~tuning.backends.sim_air`); the
  die relaxes towards ``inlet + R(fan) · P`` with time constant ``tau_s`` (exact exponential
  step). Fans follow temperature; R rises as the fan slows.
* **SW thermal slowdown**: above the target temperature (or the max operating temperature
  where a card has no target) the limit becomes ``min(cap, natural) - KP_W_PER_C · (T -
  target)``, which holds the card about a degree above target. **HW slowdown** at the
  slowdown threshold halves the clock until the card is 5 °C below it.
* **Measurement**: ``power_draw_w`` is the mean of the last second of steps (NVML's 1 s
  average) plus seeded Gaussian noise; temperatures read as whole degrees; tokens/s carries
  relative noise. Noise is drawn per step from the seed, so reads never disturb the trace.

The workload API: ``set_workload(uuid, name | spec | None)`` (one GPU; a spec without named
GPUs), ``run_workload(name | spec) -> WorkloadHandle`` (every GPU, or one split over the
spec's GPUs), ``stop_workload(handle)``, ``workload_tokens_total(handle)`` (tokens since the
handle started), ``tokens_total(uuid)`` (a split's tokens are shared out over its members, so
the per-GPU counts sum to the pipeline's).

One module on purpose (about 670 lines): a :class:`SimGpu` is a view onto its
:class:`SimRig`'s state arrays (index ``i`` of every vector the rig steps together), so the
GPU, the rig's step and its readings are one piece of state; the rig file's schema and the
presets live apart in :mod:`tuning.backends.sim_config`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import math
import operator
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuning.backends.base import Clock, ClockEventReason, Gpu, PowerConstraints, Rig
from tuning.backends.cpu_spec import cpu_topology_of
from tuning.backends.sim_air import air_coupling
from tuning.backends.sim_config import (
    WORKLOADS,
    ModelSpec,
    PresetSpec,
    RigSpec,
    load_rig_file,
    load_rig_spec,
    parse_cpu_list,
)
from tuning.backends.sim_workload import (
    group_ring,
    hardware_of,
    host_share,
    replica_step,
    worst_link,
)
from tuning.core.cpu import CpuTopology
from tuning.core.pcie import PcieLink, TopologyLink
from tuning.core.power import BudgetModel, Circuit, Psu
from tuning.core.rig import HostInfo, RigSnapshot, Thresholds
from tuning.errors import ConfigError
from tuning.model.power import (
    PowerTable,
    clock_bins,
    params_for,
    power_table,
)
from tuning.model.serving import Link, nominal_link
from tuning.model.split import Ring, RingTables

if TYPE_CHECKING:  # tuning.workloads imports this module: no cycle at run time
    from tuning.workloads.spec import WorkloadSpec

#: SW thermal slowdown's proportional gain. Units: W per °C above target.
KP_W_PER_C = 40.0
#: Clock fraction kept during HW slowdown (a "big clock cut").
HW_SLOWDOWN_CLOCK_FRAC = 0.5
#: HW slowdown releases this far below the slowdown threshold. Units: °C.
HW_SLOWDOWN_HYSTERESIS_C = 5.0
#: Fans start ramping at this temperature and reach 100 % five degrees above target. Units: °C.
FAN_START_C = 40.0
#: Thermal resistance at minimum fan, relative to full fan (R = r·(1 + gain·(1 − duty))).
FAN_GAIN = 0.5
#: Noise is drawn in blocks of this many steps (indexed by step number: deterministic).
_NOISE_BLOCK = 1024


def _uuid_for(rig_name: str, bus_id: str, preset: str) -> str:
    digest = hashlib.sha256(f"rigforge-sim:{rig_name}:{bus_id}:{preset}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class SimClock(Clock):
    """Virtual time. ``sleep`` advances the rig's model; ``now_s`` is exact virtual time.

    Free-running by default (a 30-minute sweep in about a second). After
    :meth:`follow_wall_time` it is locked to wall time from that moment: ``sleep`` advances
    the model, then waits until ``time.monotonic()`` has moved as far as the virtual clock
    since the lock (a deadline, not a fixed pause, so the model's own compute time does not
    add up into drift). That is the pace a load outside the process needs: the rig is
    simulated, the tokens are real.
    """

    def __init__(self, rig: SimRig) -> None:
        self._rig = rig
        self._now_s = 0.0
        #: (wall monotonic s, virtual s) at :meth:`follow_wall_time`; ``None``: free-running
        self._wall_anchor: tuple[float, float] | None = None

    def now_s(self) -> float:
        """Seconds since the rig was created. Units: s."""
        return self._now_s

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (the model runs in whole steps); when locked
        to wall time, also wait until wall time has caught up. Units: s."""
        if seconds < 0 or math.isnan(seconds):
            raise ValueError(f"cannot sleep {seconds!r} s")
        self._now_s += seconds
        self._rig._advance_to(self._now_s)
        if self._wall_anchor is not None:
            wall_s, virtual_s = self._wall_anchor
            behind_s = wall_s + (self._now_s - virtual_s) - time.monotonic()
            if behind_s > 0:
                time.sleep(behind_s)

    def follow_wall_time(self) -> None:
        """Lock virtual time to wall time from now on (see the class docstring)."""
        if self._wall_anchor is None:
            self._wall_anchor = (time.monotonic(), self._now_s)


class SimGpu(Gpu):
    """One simulated GPU; a view onto its rig's state arrays at ``index``."""

    def __init__(
        self,
        rig: SimRig,
        index: int,
        preset_key: str,
        preset: PresetSpec,
        uuid: str,
        bus_id: str,
        slot: int,
        numa_node: int | None,
        cpu_list: tuple[int, ...] | None,
        pcie_negotiated: tuple[int, int],
        persistence: bool,
    ) -> None:
        self._rig = rig
        self._index = index
        self.preset_key = preset_key
        self.preset = preset
        self._uuid = uuid
        self._bus_id = bus_id
        self.slot = slot
        self._numa_node = numa_node
        self._cpu_list = cpu_list
        self._pcie_negotiated = pcie_negotiated
        self._persistence = persistence
        p = preset.power
        self._constraints = PowerConstraints(min_w=p.min_w, max_w=p.max_w, default_w=p.default_w)
        t = preset.thresholds
        self._thresholds = Thresholds(
            slowdown_c=t.slowdown_c,
            shutdown_c=t.shutdown_c,
            max_operating_c=t.max_operating_c,
            target_c=t.target_c,
        )

    # identity -------------------------------------------------------------------------------
    @property
    def index(self) -> int:
        return self._index

    @property
    def uuid(self) -> str:
        return self._uuid

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def pci_bus_id(self) -> str:
        return self._bus_id

    @property
    def memory_total_mib(self) -> int:
        return self.preset.memory_mib

    # power ----------------------------------------------------------------------------------
    def power_constraints(self) -> PowerConstraints:
        return self._constraints

    def power_draw_w(self) -> float | None:
        """NVML's 1 s average of board power plus measurement noise. Units: W."""
        return self._rig._power_reading_w(self._index)

    def instant_power_w(self) -> float:
        """The model's true instantaneous board power (no averaging, no noise). Units: W."""
        return float(self._rig._power_w[self._index])

    def power_limit_w(self) -> float:
        return float(self._rig._cap_w[self._index])

    def enforced_power_limit_w(self) -> float:
        return float(self._rig._cap_w[self._index])

    def total_energy_j(self) -> float | None:
        """Energy since the rig was created. Units: J (NVML reports mJ)."""
        return float(self._rig._energy_j[self._index])

    # heat -----------------------------------------------------------------------------------
    def temperature_c(self) -> float | None:
        """Die temperature in whole degrees, as NVML reports it. Units: °C."""
        return float(round(float(self._rig._temp_c[self._index])))

    def thresholds(self) -> Thresholds:
        return self._thresholds

    def fan_speed_pct(self) -> float | None:
        """Fan duty, whole percent; ``None`` on passive cards. Units: %."""
        if self.preset.cooling.kind == "passive":
            return None
        return float(round(float(self._rig._fan_pct[self._index])))

    # clocks ---------------------------------------------------------------------------------
    def sm_clock_mhz(self) -> float | None:
        return float(self._rig._clock_mhz[self._index])

    def max_sm_clock_mhz(self) -> float | None:
        return self.preset.sm_clock_mhz.max

    def utilization_pct(self) -> float | None:
        return float(self._rig._util_pct[self._index])

    def clock_event_durations_s(self) -> Mapping[ClockEventReason, float]:
        """Virtual seconds spent in each counted reason, as NVML's field-value counters.

        The reasons NVML counts (power cap, SW/HW thermal; this model has no sync boost or
        power brake, so those stay 0). Units: s.
        """
        return self._rig._event_seconds(self._index)

    def pcie_replay_count(self) -> int | None:
        """Always 0: the model's links are lossless (a riser downtrains; it does not replay)."""
        return 0

    def clock_event_reasons(self) -> frozenset[ClockEventReason]:
        return self._rig._reasons(self._index)

    # topology -------------------------------------------------------------------------------
    def pcie_link(self) -> PcieLink:
        """Idle cards downtrain to gen 1; under load the negotiated gen (riser: below max)."""
        busy = self._rig._workload_idx[self._index] >= 0
        gen, width = self._pcie_negotiated
        return PcieLink(
            gen_current=gen if busy else 1,
            gen_max=self.preset.pcie.gen,
            width_current=width,
            width_max=self.preset.pcie.width,
            under_load=bool(busy),
        )

    def numa_node(self) -> int | None:
        return self._numa_node

    def cpu_list(self) -> tuple[int, ...] | None:
        return self._cpu_list

    def persistence_mode(self) -> bool | None:
        return self._persistence

    # actuators ------------------------------------------------------------------------------
    def set_power_limit_w(self, power_limit_w: float) -> float:
        """Set the power limit; OutOfRange (nothing changed) outside the constraints.

        Stored in whole milliwatts as NVML does; returns the enforced limit read back. Units: W.
        """
        self._constraints.check(power_limit_w)
        wanted = round(power_limit_w * 1000.0) / 1000.0
        if wanted != self._rig._cap_w[self._index]:
            self._rig._cap_w[self._index] = wanted
        return self.enforced_power_limit_w()

    def set_persistence_mode(self, enabled: bool) -> bool:
        self._persistence = bool(enabled)
        return self._persistence


class SimRig(Rig):
    """A simulated rig built from a rig file. See the module docstring for the model."""

    def __init__(
        self,
        spec: RigSpec,
        presets: dict[str, PresetSpec],
        *,
        seed: int | None = None,
        source: str = "<rig>",
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.source = source
        self.seed = spec.seed if seed is None else int(seed)
        self.step_s = spec.step_s
        self._clock = SimClock(self)
        n = len(spec.gpus)
        self._n = n

        gpus: list[SimGpu] = []
        for i, g in enumerate(spec.gpus):
            preset = presets[g.preset]
            pcie = (g.pcie.gen, g.pcie.width) if g.pcie else (preset.pcie.gen, preset.pcie.width)
            gpus.append(
                SimGpu(
                    self,
                    i,
                    g.preset,
                    preset,
                    uuid=g.uuid or _uuid_for(spec.name, g.bus_id.lower(), g.preset),
                    bus_id=_nvml_bus_id(g.bus_id),
                    slot=g.slot,
                    numa_node=g.numa_node,
                    cpu_list=parse_cpu_list(g.cpus) if g.cpus else None,
                    pcie_negotiated=pcie,
                    persistence=g.persistence,
                )
            )
        self._gpus: tuple[SimGpu, ...] = tuple(gpus)

        def arr(values: Sequence[float]) -> np.ndarray:
            return np.asarray(values, dtype=float)

        ps = [gpu.preset for gpu in gpus]
        self._default_w = arr([p.power.default_w for p in ps])
        self._idle_w = arr([p.power.idle_w for p in ps])
        self._idle_clk = arr([p.sm_clock_mhz.idle for p in ps])
        self._target_c = arr(
            [
                p.thresholds.target_c
                if p.thresholds.target_c is not None
                else p.thresholds.max_operating_c
                for p in ps
            ]
        )
        self._slowdown_c = arr([p.thresholds.slowdown_c for p in ps])
        self._r_c_per_w = arr(
            [g.r_c_per_w or p.cooling.r_c_per_w for g, p in zip(spec.gpus, ps, strict=True)]
        )
        tau = arr([g.tau_s or p.cooling.tau_s for g, p in zip(spec.gpus, ps, strict=True)])
        self._hw_release_c = self._slowdown_c - HW_SLOWDOWN_HYSTERESIS_C
        # Fan duty = min(max(lo + (T - FAN_START_C)·slope, lo), hi); passive cards: all 0.
        has_fan = np.array([p.cooling.kind != "passive" for p in ps])
        self._has_fan = has_fan
        self._fan_lo = np.where(has_fan, arr([p.cooling.fan_min_pct or 0.0 for p in ps]), 0.0)
        span_c = np.maximum(self._target_c + 5.0 - FAN_START_C, 1.0)
        self._fan_slope = np.where(has_fan, (100.0 - self._fan_lo) / span_c, 0.0)
        self._fan_hi = np.where(has_fan, 100.0, 0.0)
        # R = r·(1 + g·(1 − duty/100)) = r1 − r2·duty, g = FAN_GAIN with fans, 0 passive.
        gain = np.where(has_fan, FAN_GAIN, 0.0)
        self._r1 = self._r_c_per_w * (1.0 + gain)
        self._r2 = self._r_c_per_w * gain / 100.0
        self._decay = 1.0 - np.exp(-self.step_s / tau)
        self._ambient_c = spec.rack.ambient_c
        # inlet = ambient + offset + coupling @ P: neighbours, a front-to-back chain, a case
        self._coupling, self._inlet_offset_c = air_coupling(
            spec.rack, [g.slot for g in spec.gpus], sum(p.platform_w for p in spec.psus)
        )

        # Per GPU: the power model's split and the step-time model's view of its preset.
        self._params = [
            params_for(g.preset, p.power.default_w) for g, p in zip(spec.gpus, ps, strict=True)
        ]
        self._hardware = [hardware_of(p) for p in ps]
        self._max_mhz = arr([p.sm_clock_mhz.max for p in ps])
        # Bins: every card's 15 MHz clock bins from its f_min up (padded to a common count
        # with +inf power, never chosen).
        self._bins = max(
            len(clock_bins(p.sm_clock_mhz.max, prm.f_min))
            for prm, p in zip(self._params, ps, strict=True)
        )
        #: The named presets as descriptions of this rig's model (tuning/workloads/presets.yaml).
        self.preset_workloads: dict[str, WorkloadSpec] = {
            w: _preset(w, spec.model) for w in WORKLOADS
        }
        #: (description, GPU index) → that GPU's table running one replica of it (see _Row).
        self._row_cache: dict[tuple[WorkloadSpec, int], _Row] = {}
        self._preset_rows = [
            [self._replica_row(self.preset_workloads[w], i) for i in range(n)] for w in WORKLOADS
        ]
        #: Uncapped tokens/s per GPU and workload class, for reports and tests.
        self.peak_tps: dict[str, dict[str, float]] = {
            gpu.uuid: {w: self._preset_rows[k][i].peak_tps for k, w in enumerate(WORKLOADS)}
            for i, gpu in enumerate(gpus)
        }
        #: Names of running descriptions beyond the presets (codes len(WORKLOADS) + j).
        self._names: list[str] = list(WORKLOADS)
        self._groups: dict[int, _Group] = {}
        self._group_of = np.full(n, -1, dtype=int)
        self._next_handle = 0
        self._handles: dict[int, WorkloadHandle] = {}
        bins = self._bins

        # Current workload's table per GPU; set_workload() fills it so that an idle card goes
        # through the same arithmetic (idle power at every bin, its idle clock, no tokens).
        self._workload_idx = np.full(n, -1, dtype=int)
        self._rows = np.arange(n)
        self._tab_p = np.zeros((n, bins))
        self._tab_clk = np.zeros((n, bins))
        self._tab_t = np.zeros((n, bins))
        self._hw_idx = np.zeros(n, dtype=int)
        self._nat_w = np.zeros(n)
        self._util_pct = np.zeros(n)
        for i in range(n):
            self._set_workload_index(i, -1)

        self._cap_w = arr(
            [g.power_limit_w or p.power.default_w for g, p in zip(spec.gpus, ps, strict=True)]
        )
        self._psus = tuple(spec.psus)
        self._circuits = tuple(spec.circuits)
        self._psu_of = {gpu.uuid: g.psu for gpu, g in zip(gpus, spec.gpus, strict=True)}
        self._topology = self._build_topology()
        self._noise = spec.noise
        self._window = max(1, round(1.0 / self.step_s))
        self._tokens = np.zeros(n)
        self._energy_j = np.zeros(n)
        #: Steps each GPU spent busy in a counted clock-event state (NVML's field counters).
        self._steps_power_cap = np.zeros(n, dtype=np.int64)
        self._steps_sw_thermal = np.zeros(n, dtype=np.int64)
        self._steps_hw_thermal = np.zeros(n, dtype=np.int64)
        self._steps = 0
        self._rng = np.random.default_rng(self.seed)
        self._noise_block = np.zeros((0, 2, n))
        self._noise_block_start = 0
        self._noise_tps: list[list[float]] = []  # the block's throughput draws, as lists
        self.reset_thermals()

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: Path | str, *, seed: int | None = None) -> SimRig:
        """Load a rig file; :class:`ConfigError` names the file and the YAML path."""
        path = Path(path)
        spec, presets = load_rig_file(path)
        return cls(spec, presets, seed=seed, source=str(path))

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "<inline>", seed: int | None = None
    ) -> SimRig:
        """Build a rig from an in-memory rig document (tests); errors name ``source``."""
        spec, presets = load_rig_spec(data, source)
        return cls(spec, presets, seed=seed, source=source)

    def reset_thermals(self, temp_c: float | None = None) -> None:
        """Start cold: every card at ``temp_c`` (default: its idle steady state), power
        history at the current draw, no thermal limiter, no HW slowdown latched."""
        self._hw_latched = np.zeros(self._n, dtype=bool)
        self._any_hw = False
        if temp_c is None:
            inlet = self._ambient_c + self._inlet_offset_c + self._coupling @ self._idle_w
            self._temp_c = inlet + (self._r1 - self._r2 * self._fan_lo) * self._idle_w
        else:
            self._temp_c = np.full(self._n, float(temp_c))
        self._update_fans()
        self._update_hw_latch()
        self._solve_operating_point()
        self._ring = np.tile(self._power_w, (self._window, 1))
        self._ring_sum = self._ring.sum(axis=0)

    def _build_topology(self) -> tuple[TopologyLink, ...]:
        explicit = {frozenset((e.a, e.b)): e.link for e in self.spec.topology.links}
        links = []
        for a in range(self._n):
            for b in range(a + 1, self._n):
                link = explicit.get(frozenset((a, b)))
                if link is None:
                    same = self._gpus[a].numa_node() == self._gpus[b].numa_node()
                    link = self.spec.topology.same_numa if same else self.spec.topology.cross_numa
                links.append(TopologyLink(a=a, b=b, link=link))
        return tuple(links)

    # Rig interface --------------------------------------------------------------------------
    @property
    def gpus(self) -> Sequence[SimGpu]:
        return self._gpus

    @property
    def clock(self) -> SimClock:
        return self._clock

    def topology(self) -> tuple[TopologyLink, ...]:
        return self._topology

    def psus(self) -> tuple[Psu, ...]:
        return self._psus

    def circuits(self) -> tuple[Circuit, ...]:
        return self._circuits

    def psu_of(self, uuid: str) -> str | None:
        return self._psu_of[self.gpu(uuid).uuid]

    def host(self) -> HostInfo:
        h = self.spec.host
        return HostInfo(
            cpu_model=h.cpu_model,
            cpu_cores=h.cpu_cores,
            memory_gib=h.memory_gib,
            numa_nodes=h.numa_nodes,
        )

    def cpu_topology(self) -> CpuTopology | None:
        """The host CPU from the rig file's ``cpu:`` section; ``None`` when it has none."""
        if self.spec.cpu is None:
            return None
        return cpu_topology_of(self.spec.cpu, source=f"rig {self.spec.name}: cpu")

    def gpu(self, key: str | int) -> SimGpu:
        found = super().gpu(key)
        assert isinstance(found, SimGpu)
        return found

    def snapshot(self) -> RigSnapshot:
        snap = super().snapshot()
        gpus = tuple(
            dataclasses.replace(info, slot=g.slot)
            for info, g in zip(snap.gpus, self._gpus, strict=True)
        )
        return dataclasses.replace(snap, gpus=gpus)

    # the tuner's API ------------------------------------------------------------------------
    def set_workload(self, uuid: str, workload: str | WorkloadSpec | None) -> None:
        """Run ``workload`` on one GPU, or idle it (None): a preset name ("decode" | "prefill"
        | "batched") or a :class:`~tuning.workloads.spec.WorkloadSpec` without named GPUs
        (one replica on this GPU). A GPU that is part of a running split leaves it, and the
        split stops on every member (a pipeline missing a stage serves nothing)."""
        i = self.gpu(uuid).index
        self._leave_group(i)
        if workload is None:
            self._set_workload_index(i, -1)
            return
        if isinstance(workload, str):
            if workload not in WORKLOADS:
                raise ConfigError(
                    f"unknown workload {workload!r}; use one of {', '.join(WORKLOADS)}, a "
                    "workload description or None (idle)"
                )
            self._set_workload_index(i, WORKLOADS.index(workload))
            return
        if workload.grouped:
            raise ConfigError(
                f"workload {workload.name} names GPUs (a split): start it with run_workload()"
            )
        self._assign(i, self._code(workload.name), self._replica_row(workload, i))

    def run_workload(self, workload: str | WorkloadSpec) -> WorkloadHandle:
        """Start a workload and return its handle. A preset name or a description without
        named GPUs runs one replica on every GPU; a description with named GPUs runs one split
        over them, paced by its slowest stage (module docstring of
        :mod:`tuning.backends.sim_workload`). GPUs it takes leave what they ran."""
        spec = self.preset_workloads[workload] if isinstance(workload, str) else workload
        if isinstance(workload, str) and workload not in WORKLOADS:
            raise ConfigError(f"unknown workload {workload!r}; use one of {', '.join(WORKLOADS)}")
        self._next_handle += 1
        hid = self._next_handle
        if not spec.grouped:
            members = list(range(self._n))
            for i in members:
                self.set_workload(self._gpus[i].uuid, workload)
        else:
            from tuning.workloads.spec import resolve_gpus

            members = resolve_gpus(
                spec, [g.uuid for g in self._gpus], [g.pci_bus_id for g in self._gpus]
            )
            for i in members:
                self._leave_group(i)
            self._groups[hid] = self._build_group(spec, members)
            code = self._code(spec.name)
            for i in members:
                self._workload_idx[i] = code
                self._group_of[i] = hid
            self._pace_groups()
        handle = WorkloadHandle(
            id=hid,
            name=spec.name,
            uuids=tuple(self._gpus[i].uuid for i in members),
            started_tokens=float(self._tokens[members].sum()),
        )
        self._handles[hid] = handle
        return handle

    def stop_workload(self, handle: WorkloadHandle) -> None:
        """Idle the handle's GPUs (those still running it; idempotent)."""
        for uuid in handle.uuids:
            i = self.gpu(uuid).index
            if self._group_of[i] == handle.id or (
                handle.id not in self._groups and self._workload_idx[i] >= 0
            ):
                self.set_workload(uuid, None)
        self._groups.pop(handle.id, None)

    def workload_tokens_total(self, handle: WorkloadHandle) -> float:
        """Tokens the handle's workload produced since it started (a split: the pipeline's
        tokens; replicas: their sum)."""
        members = [self.gpu(u).index for u in handle.uuids]
        return float(self._tokens[members].sum()) - handle.started_tokens

    def _code(self, name: str) -> int:
        if name in self._names:
            return self._names.index(name)
        self._names.append(name)
        return len(self._names) - 1

    def _replica_row(self, spec: WorkloadSpec, i: int) -> _Row:
        key = (spec, i)
        row = self._row_cache.get(key)
        if row is None:
            gpu = self._gpus[i]
            preset = gpu.preset
            host = host_share([gpu._pcie_negotiated], [gpu.numa_node()])
            step = replica_step(spec, self._hardware[i], host)
            table = power_table(self._params[i], step, preset.sm_clock_mhz.max)
            row = _Row.of(table, self._bins, HW_SLOWDOWN_CLOCK_FRAC * preset.sm_clock_mhz.max)
            self._row_cache[key] = row
        return row

    def _set_workload_index(self, i: int, k: int) -> None:
        if k < 0:
            self._workload_idx[i] = k
            self._tab_p[i] = self._idle_w[i]
            self._tab_clk[i] = self._idle_clk[i]
            self._tab_t[i] = 0.0
            self._hw_idx[i] = self._bins - 1
            self._nat_w[i] = self._idle_w[i]
            self._util_pct[i] = 0.0
        else:
            self._assign(i, k, self._preset_rows[k][i])

    def _assign(self, i: int, code: int, row: _Row) -> None:
        self._workload_idx[i] = code
        self._tab_p[i] = row.power_w
        self._tab_clk[i] = row.clock_mhz
        self._tab_t[i] = row.tokens_per_s
        self._hw_idx[i] = row.hw_idx
        self._nat_w[i] = row.natural_w
        self._util_pct[i] = row.util_pct

    def _leave_group(self, i: int) -> None:
        hid = int(self._group_of[i])
        if hid < 0:
            return
        group = self._groups.pop(hid)
        for j in group.members:
            self._group_of[j] = -1
            self._set_workload_index(int(j), -1)

    def _build_group(self, spec: WorkloadSpec, members: Sequence[int]) -> _Group:
        pairs = []
        for x, a in enumerate(members):
            for b in members[x + 1 :]:
                ga, gb = self._gpus[a]._pcie_negotiated, self._gpus[b]._pcie_negotiated
                pairs.append((self._link_between(a, b), (min(ga[0], gb[0]), min(ga[1], gb[1]))))
        worst = worst_link(pairs)
        host = host_share(
            [self._gpus[i]._pcie_negotiated for i in members],
            [self._gpus[i].numa_node() for i in members],
        )
        ring = group_ring(spec, [self._hardware[i] for i in members], worst or _no_link(), host)
        return _Group.of(self, ring, members)

    def _link_between(self, a: int, b: int) -> str:
        for t in self._topology:
            if {t.a, t.b} == {a, b}:
                return t.link
        return "PHB"

    def _pace_groups(self) -> None:
        """Every split at its current clocks: the pipeline's tokens/s (split over its members,
        so the rig's per-GPU tokens sum to the pipeline's), each member's busy share, and the
        power table each member's limiter sees next step (its own clock varied, the others as
        they are now)."""
        for group in self._groups.values():
            group.pace(self)

    def workload(self, uuid: str) -> str | None:
        """The workload running on a GPU (a preset's or a description's name), ``None`` idle."""
        k = int(self._workload_idx[self.gpu(uuid).index])
        return None if k < 0 else self._names[k]

    def tokens_total(self, uuid: str) -> float:
        """Tokens produced by the GPU's workloads since the rig was created."""
        return float(self._tokens[self.gpu(uuid).index])

    def throughput_tps(self, uuid: str) -> float:
        """Tokens/s now, with benchmark-like relative noise. Units: tokens/s."""
        i = self.gpu(uuid).index
        return float(self._tps[i] * (1.0 + self._noise.throughput_rel * self._noise_now()[1, i]))

    def _psu_loads_w(self) -> dict[str, float]:
        """DC load per PSU now, by the one budget formula (:mod:`tuning.core.power`). Units: W."""
        draws = {gpu.uuid: float(self._power_w[i]) for i, gpu in enumerate(self._gpus)}
        return BudgetModel.from_rig(self).psu_dc_w(draws)

    def psu_draw_w(self, psu_name: str) -> float:
        """DC load on a PSU now: its GPUs' instantaneous draw plus its platform draw (shared
        within a redundant group). Units: W."""
        return self._psu_loads_w()[self._psu(psu_name).name]

    def circuit_draw_w(self, circuit_name: str) -> float:
        """AC wall draw on a circuit now: its ``reserved_w`` plus Σ over its PSUs of DC load /
        efficiency (:mod:`tuning.core.power`). Units: W."""
        if circuit_name not in {c.name for c in self._circuits}:
            known = ", ".join(c.name for c in self._circuits) or "none"
            raise ConfigError(f"no circuit {circuit_name!r} on rig {self.name!r}; it has: {known}")
        budget = BudgetModel.from_rig(self)
        return budget.circuit_wall_w(self._psu_loads_w())[circuit_name]

    def inlet_temps_c(self) -> dict[str, float]:
        """Each card's inlet air now: room, case air and upstream heat (:mod:`sim_air`),
        by UUID. Units: °C."""
        inlet = self._ambient_c + self._inlet_offset_c + self._coupling @ self._power_w
        return {gpu.uuid: float(inlet[i]) for i, gpu in enumerate(self._gpus)}

    @property
    def ambient_c(self) -> float:
        """Room air temperature around the rack. Units: °C."""
        return self._ambient_c

    @ambient_c.setter
    def ambient_c(self, value: float) -> None:
        self._ambient_c = float(value)

    def _psu(self, name: str) -> Psu:
        for psu in self._psus:
            if psu.name == name:
                return psu
        known = ", ".join(p.name for p in self._psus) or "none"
        raise ConfigError(f"no PSU {name!r} on rig {self.name!r}; it has: {known}")

    # the model ------------------------------------------------------------------------------
    # The step runs on Python floats, one list per quantity: on a rig's handful of GPUs a
    # numpy call (~1 µs each, some 50 a step) cost more than the arithmetic. Between
    # advances the state lives in the arrays the readings index.
    def _solve_operating_point(self) -> None:
        """The operating point at the current temperatures (:func:`_dvfs`), splits paced."""
        idx, over = _dvfs(
            self._temp_c.tolist(),
            self._target_c.tolist(),
            self._cap_w.tolist(),
            self._nat_w.tolist(),
            self._tab_p.tolist(),
            self._hw_latched.tolist(),
            self._hw_idx.tolist(),
            self._any_hw,
        )
        self._over_c = np.array(over)
        self._idx = np.array(idx, dtype=int)
        rows = self._rows
        self._clock_mhz = self._tab_clk[rows, self._idx]
        self._power_w = self._tab_p[rows, self._idx]
        self._tps = self._tab_t[rows, self._idx]
        if self._groups:
            self._pace_groups()

    def _update_fans(self) -> None:
        self._fan_pct = np.array(
            _fans(
                self._temp_c.tolist(),
                self._fan_lo.tolist(),
                self._fan_slope.tolist(),
                self._fan_hi.tolist(),
            )
        )

    def _update_hw_latch(self) -> None:
        latched, self._any_hw = _hw_latch(
            self._temp_c.tolist(),
            self._slowdown_c.tolist(),
            self._hw_release_c.tolist(),
            self._hw_latched.tolist(),
            self._any_hw,
        )
        self._hw_latched = np.array(latched, dtype=bool)

    def _noise_at(self, step: int) -> np.ndarray:
        """Standard-normal draws (power, throughput) × GPUs for step number ``step``."""
        offset = step - self._noise_block_start
        if offset >= self._noise_block.shape[0] or offset < 0:
            self._noise_block_start = (step // _NOISE_BLOCK) * _NOISE_BLOCK
            # One generator per block, seeded from (seed, block): deterministic by step number.
            rng = np.random.default_rng([self.seed, step // _NOISE_BLOCK])
            self._noise_block = rng.standard_normal((_NOISE_BLOCK, 2, self._n))
            self._noise_tps = self._noise_block[:, 1, :].tolist()
            offset = step - self._noise_block_start
        return self._noise_block[offset]

    def _noise_now(self) -> np.ndarray:
        """Standard-normal draws (power, throughput) × GPUs for the current step."""
        return self._noise_at(self._steps)

    def _advance_to(self, now_s: float) -> None:
        target = math.floor(now_s / self.step_s + 1e-9)
        if target > self._steps:
            self._run_steps(target - self._steps)

    def _run_steps(self, k: int) -> None:
        """Advance the model ``k`` steps. Each step: the operating point from the current
        temperatures (:func:`_dvfs`; splits paced at the chosen clocks), then tokens, energy,
        the clock-event counters, the 1 s power window, and heat (exact first-order
        relaxation towards ``inlet + R(fan)·P``), fans and the HW slowdown latch."""
        n = self._n
        temp = self._temp_c.tolist()
        target = self._target_c.tolist()
        cap = self._cap_w.tolist()
        nat = self._nat_w.tolist()
        tab_p = self._tab_p.tolist()
        tab_t = self._tab_t.tolist()
        hw_idx = self._hw_idx.tolist()
        latched = self._hw_latched.tolist()
        any_hw = self._any_hw
        busy = (self._workload_idx >= 0).tolist()
        fan = self._fan_pct.tolist()
        fan_lo, fan_slope = self._fan_lo.tolist(), self._fan_slope.tolist()
        fan_hi = self._fan_hi.tolist()
        slowdown, release = self._slowdown_c.tolist(), self._hw_release_c.tolist()
        tokens, energy = self._tokens.tolist(), self._energy_j.tolist()
        n_cap = self._steps_power_cap.tolist()
        n_sw = self._steps_sw_thermal.tolist()
        n_hw = self._steps_hw_thermal.tolist()
        ring, ring_sum = self._ring.tolist(), self._ring_sum.tolist()
        base = [self._ambient_c + self._inlet_offset_c] * n
        coupling = self._coupling.tolist()
        r1, r2, decay = self._r1.tolist(), self._r2.tolist(), self._decay.tolist()
        rel, dt, window = self._noise.throughput_rel, self.step_s, self._window
        groups = list(self._groups.values())
        members = [int(m) for g in groups for m in g.members]
        gpus = range(n)
        steps = self._steps
        self._noise_at(steps + 1)
        idx: list[int] = []
        over: list[float] = []
        power: list[float] = []
        tps: list[float] = []
        for _ in range(k):
            idx, over = _dvfs(temp, target, cap, nat, tab_p, latched, hw_idx, any_hw)
            power = [tab_p[i][j] for i, j in enumerate(idx)]
            if groups:
                self._idx = np.array(idx, dtype=int)
                self._tps = np.array([tab_t[i][j] for i, j in enumerate(idx)])
                for group in groups:
                    group.pace(self)
                tps = self._tps.tolist()
                nat = self._nat_w.tolist()
                for m in members:
                    tab_p[m] = self._tab_p[m].tolist()
            else:
                tps = [tab_t[i][j] for i, j in enumerate(idx)]
            for i in gpus:
                if busy[i]:
                    if over[i] > 0.0:
                        n_sw[i] += 1
                    elif cap[i] < nat[i]:
                        n_cap[i] += 1
                    if any_hw and latched[i]:
                        n_hw[i] += 1
            steps += 1
            offset = steps - self._noise_block_start
            if offset >= _NOISE_BLOCK:
                self._noise_at(steps)
                offset = steps - self._noise_block_start
            noise = self._noise_tps[offset]
            slot = steps % window
            old = ring[slot]
            ring[slot] = power
            for i in gpus:
                p = power[i]
                tokens[i] += tps[i] * (1.0 + rel * noise[i]) * dt
                energy[i] += p * dt
                ring_sum[i] += p - old[i]
                inlet = base[i] + sum(map(operator.mul, coupling[i], power))
                steady = inlet + (r1[i] - r2[i] * fan[i]) * p
                temp[i] += (steady - temp[i]) * decay[i]
            fan = _fans(temp, fan_lo, fan_slope, fan_hi)
            latched, any_hw = _hw_latch(temp, slowdown, release, latched, any_hw)
        self._steps = steps
        self._over_c = np.array(over)
        self._idx = np.array(idx, dtype=int)
        self._clock_mhz = self._tab_clk[self._rows, self._idx]
        self._power_w = np.array(power)  # the step's draw: a split's pacing moved _tab_p since
        self._tps = np.array(tps)
        self._temp_c = np.array(temp)
        self._fan_pct = np.array(fan)
        self._hw_latched = np.array(latched, dtype=bool)
        self._any_hw = any_hw
        self._tokens, self._energy_j = np.array(tokens), np.array(energy)
        self._steps_power_cap = np.array(n_cap, dtype=np.int64)
        self._steps_sw_thermal = np.array(n_sw, dtype=np.int64)
        self._steps_hw_thermal = np.array(n_hw, dtype=np.int64)
        self._ring, self._ring_sum = np.array(ring), np.array(ring_sum)

    def _power_reading_w(self, i: int) -> float:
        mean = self._ring_sum[i] / self._window
        return float(max(0.0, mean + self._noise.power_w * self._noise_now()[0, i]))

    def _event_seconds(self, i: int) -> dict[ClockEventReason, float]:
        dt = self.step_s
        return {
            ClockEventReason.SW_POWER_CAP: float(self._steps_power_cap[i]) * dt,
            ClockEventReason.SYNC_BOOST: 0.0,
            ClockEventReason.SW_THERMAL_SLOWDOWN: float(self._steps_sw_thermal[i]) * dt,
            ClockEventReason.HW_THERMAL_SLOWDOWN: float(self._steps_hw_thermal[i]) * dt,
            ClockEventReason.HW_POWER_BRAKE_SLOWDOWN: 0.0,
        }

    def _reasons(self, i: int) -> frozenset[ClockEventReason]:
        if self._workload_idx[i] < 0:
            return frozenset({ClockEventReason.GPU_IDLE})
        reasons: set[ClockEventReason] = set()
        if self._hw_latched[i]:
            reasons |= {ClockEventReason.HW_SLOWDOWN, ClockEventReason.HW_THERMAL_SLOWDOWN}
        if self._over_c[i] > 0.0:
            reasons.add(ClockEventReason.SW_THERMAL_SLOWDOWN)
        elif self._cap_w[i] < self._nat_w[i]:
            reasons.add(ClockEventReason.SW_POWER_CAP)
        return frozenset(reasons)


@dataclasses.dataclass(frozen=True)
class WorkloadHandle:
    """A running workload (:meth:`SimRig.run_workload`): its id, name, GPUs (UUIDs) and the
    rig's token count over those GPUs when it started."""

    id: int
    name: str
    uuids: tuple[str, ...]
    started_tokens: float


def _preset(name: str, model: ModelSpec) -> WorkloadSpec:
    """A named preset as a description of the rig file's ``model:``."""
    from tuning.workloads.spec import preset_workload

    return preset_workload(
        name,
        params_b=model.params_b,
        weights_gb=model.weights_gb,
        batch=model.batch,
        model_name=model.name,
    )


def _no_link() -> Link:
    """A split on one GPU crosses no link; the model still asks for one."""
    return nominal_link()


@dataclasses.dataclass(frozen=True)
class _Row:
    """One GPU's table running one replica: per clock bin (padded to the rig's bin count),
    board power (+inf past the card's top bin: never chosen), clock and tokens/s."""

    power_w: np.ndarray
    clock_mhz: np.ndarray
    tokens_per_s: np.ndarray
    hw_idx: int
    natural_w: float
    peak_tps: float
    #: A replica keeps its GPU running kernels every step (NVML counts any kernel in the
    #: sample period): 100 %.
    util_pct: float = 100.0

    @classmethod
    def of(cls, table: PowerTable, bins: int, hw_max_mhz: float) -> _Row:
        m = len(table.clock_mhz)
        power = np.full(bins, np.inf)
        power[:m] = table.power_w
        clock = np.full(bins, float(table.clock_mhz[-1]))
        clock[:m] = table.clock_mhz
        tps = np.zeros(bins)
        tps[:m] = table.tokens_per_s
        return cls(
            power_w=power,
            clock_mhz=clock,
            tokens_per_s=tps,
            hw_idx=max(int((table.clock_mhz <= hw_max_mhz + 1e-9).sum()) - 1, 0),
            natural_w=float(table.power_w[-1]),
            peak_tps=float(table.tokens_per_s[-1]),
        )


@dataclasses.dataclass
class _Group:
    """A running split: its members (rig indices) and the split's clock-bin tables
    (:class:`tuning.model.split.RingTables`, padded to the rig's bin count), paced at every
    step by :meth:`~tuning.model.split.RingTables.pace` (:mod:`tuning.backends.sim_workload`).
    """

    members: np.ndarray
    tables: RingTables

    @classmethod
    def of(cls, rig: SimRig, ring: Ring, members: Sequence[int]) -> _Group:
        power = [(rig._params[i], float(rig._max_mhz[i])) for i in members]
        tables = RingTables.of(ring, power, bins=rig._bins)
        idx = np.asarray(members)
        for r, i in enumerate(members):
            hw_max = HW_SLOWDOWN_CLOCK_FRAC * float(rig._max_mhz[i]) + 1e-9
            own = tables.clock_mhz[r, : tables.top[r] + 1]
            rig._hw_idx[i] = max(int((own <= hw_max).sum()) - 1, 0)
        rig._tab_clk[idx] = tables.clock_mhz
        rig._tab_t[idx] = 0.0
        return cls(members=idx, tables=tables)

    def pace(self, rig: SimRig) -> None:
        """The split at the clocks the rig chose this step (see :meth:`SimRig._pace_groups`)."""
        members = self.members
        tables = self.tables
        chosen = np.minimum(rig._idx[members], tables.kernel_s.shape[1] - 1)
        now = tables.pace(chosen)
        rig._tps[members] = tables.ring.tokens_per_pass * now.passes_per_s / len(members)
        rig._util_pct[members] = 100.0 * now.busy_frac()
        # Next step's limiter: each member's own clock varied, the others where they are.
        rig._tab_p[members] = now.power_w
        rig._nat_w[members] = now.power_w[np.arange(len(members)), tables.top]


def _dvfs(
    temp_c: list[float],
    target_c: list[float],
    cap_w: list[float],
    natural_w: list[float],
    power_rows_w: list[list[float]],
    hw_latched: list[bool],
    hw_idx: list[int],
    any_hw: bool,
) -> tuple[list[int], list[float]]:
    """DVFS per GPU: the highest clock bin whose power (a non-decreasing row of
    ``power_rows_w``, W) fits under the cap and the SW thermal limit
    ``min(cap, natural) - KP·(T - target)`` (the latter only above target); the lowest bin
    (the preset's ``f_min``) when none fits; no higher than ``hw_idx`` while HW slowdown is
    latched. Returns (bin per GPU, °C above target per GPU)."""
    idx: list[int] = []
    over: list[float] = []
    for i, t in enumerate(temp_c):
        o = t - target_c[i]
        over.append(o)
        c, nat = cap_w[i], natural_w[i]
        limit = (c if c < nat else nat) - KP_W_PER_C * (o if o > 0.0 else 0.0)
        j = bisect.bisect_right(power_rows_w[i], limit + 1e-9) - 1
        if j < 0:
            j = 0
        if any_hw and hw_latched[i] and hw_idx[i] < j:
            j = hw_idx[i]
        idx.append(j)
    return idx, over


def _fans(
    temp_c: list[float], lo_pct: list[float], slope: list[float], hi_pct: list[float]
) -> list[float]:
    """Fan duty per GPU: from ``lo`` at FAN_START_C up ``slope`` %/°C, held in [lo, hi]. %."""
    out: list[float] = []
    for t, lo, s, hi in zip(temp_c, lo_pct, slope, hi_pct, strict=True):
        duty = lo + (t - FAN_START_C) * s
        duty = duty if duty > lo else lo
        out.append(duty if duty < hi else hi)
    return out


def _hw_latch(
    temp_c: list[float],
    slowdown_c: list[float],
    release_c: list[float],
    latched: list[bool],
    any_hw: bool,
) -> tuple[list[bool], bool]:
    """HW slowdown latches at the slowdown threshold and releases below ``release_c``.
    Returns (latched per GPU, any latched)."""
    if not any_hw and not any(t >= s for t, s in zip(temp_c, slowdown_c, strict=True)):
        return latched, any_hw
    now = [
        t >= s or (held and t >= r)
        for t, s, r, held in zip(temp_c, slowdown_c, release_c, latched, strict=True)
    ]
    return now, any(now)


def _nvml_bus_id(bus_id: str) -> str:
    """``0000:41:00.0``/``41:00.0`` → NVML's ``00000000:41:00.0`` (upper-case hex)."""
    parts = bus_id.strip().split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    return ":".join([parts[0].rjust(8, "0"), *parts[1:]]).upper()
