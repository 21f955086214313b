"""PSUs, circuits and the one budget model: what each PSU and circuit carries for given GPU watts.

This is the only place the load formula is written (the inventory validator, the sweep, the
budget allocator, the placement and the simulator all call it):

* PSU DC load = ``platform_w`` + Σ watts of the GPUs it feeds; it must stay ≤ ``rating_w``;
* **redundant PSUs** (the same ``redundant_group``) pool their DC loads and share the pool
  equally — what active current sharing between redundant supplies does (``estimate``: a
  current-sharing bus holds members within a few per cent of an equal share; a group may
  span circuits, an A/B feed, so each circuit carries its members' shares);
* circuit wall load = ``reserved_w`` (loads on the circuit that are not the box: a second
  PC, monitors, a heater) + Σ over its PSUs of ``DC load / efficiency``; it must stay ≤ the
  circuit's continuous budget ``voltage_v × breaker_a × continuous_ratio`` (NEC 210.19/210.20:
  continuous loads at most 80 % of the breaker rating).

Worked example: two 1600 W PSUs in one redundant group, each on its own 120 V 15 A circuit
(budget 1440 W) with 200 W reserved on the first; four GPUs at 300 W all mapped to the first
PSU and 200 W platform on it. Pool 1400 W → 700 W DC per PSU; wall 700 / 0.92 = 760.9 W per
PSU; circuit 1: 200 + 760.9 = 960.9 W (0.667 of budget), circuit 2: 760.9 W (0.528).

A GPU mapped to no PSU counts against the only PSU when there is exactly one, and against none
otherwise (a validator or a rig file refuses that case where it matters). Units: W, V, A.

:class:`Psu` and :class:`Circuit` are pydantic models so the inventory, rig files and budget
files parse straight into them (unknown keys refused, every field checked); construct them
with keywords.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import Field, field_validator, model_validator

from tuning.core.limits import (
    MAX_BREAKER_A,
    MAX_MAINS_V,
    MAX_PSU_RATING_W,
    MIN_MAINS_V,
    MIN_PSU_EFFICIENCY,
    psu_efficiency_hint,
)
from tuning.core.strict import StrictModel

#: How far a GPU's read-back power limit may sit from the cap asked for and still count as that
#: cap (W). ``estimate``: NVML takes limits in milliwatts, but ``nvidia-smi -pl`` and several
#: boards enforce whole watts, so a limit can read back up to 1 W off what was asked. Used by
#: the actuator (skip a set that is already in force, refuse a read-back further off), by
#: ``rigforge apply``'s "changed" column, and rendered into the boot-time cap script.
POWER_LIMIT_TOLERANCE_W = 1.0

#: A PSU or circuit name: what ``gpus[].psu`` and ``psus[].circuit`` refer to.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Circuit(StrictModel):
    """A branch circuit. Continuous budget = ``voltage_v * breaker_a * continuous_ratio``.

    NEC 210.19/210.20: continuous loads at most 80 % of the breaker rating.
    """

    name: str = Field(
        pattern=NAME_PATTERN, description="circuit name, referenced by psus[].circuit"
    )
    voltage_v: float = Field(
        ge=MIN_MAINS_V, le=MAX_MAINS_V, description="nominal voltage, V (100–480)"
    )
    breaker_a: float = Field(gt=0, le=MAX_BREAKER_A, description="breaker rating, A")
    continuous_ratio: float = Field(
        0.8, gt=0, le=1, description="share of the breaker usable continuously (NEC: 0.8)"
    )
    reserved_w: float = Field(
        0.0,
        ge=0,
        description="wall load on this circuit that is not the box (monitors, a second PC), W AC",
    )

    @model_validator(mode="after")
    def _reserve_leaves_room(self) -> Circuit:
        if self.reserved_w >= self.budget_w:
            raise ValueError(
                f"reserved_w {self.reserved_w:g} W is at or above the circuit's continuous "
                f"budget {self.budget_w:g} W ({self.voltage_v:g} V × {self.breaker_a:g} A × "
                f"{self.continuous_ratio:g}): nothing would be left for the box; lower "
                "reserved_w (W, AC, the other loads on this circuit) or check the breaker"
            )
        return self

    @property
    def rating_w(self) -> float:
        """The breaker's rating as power. Units: W (AC)."""
        return self.voltage_v * self.breaker_a

    @property
    def budget_w(self) -> float:
        """Continuous wall power the circuit may carry. Units: W (AC)."""
        return self.rating_w * self.continuous_ratio


class Psu(StrictModel):
    """A power supply. ``rating_w`` DC; ``platform_w``: non-GPU DC load it carries (CPU, board).

    ``circuit``: the circuit it is plugged into (``None``: no described circuit, only the PSU's
    own rating binds). ``efficiency``: DC/AC at load, so the wall draw is ``dc_w / efficiency``.
    """

    name: str = Field(pattern=NAME_PATTERN, description="PSU name, referenced by gpus[].psu")
    rating_w: float = Field(gt=0, le=MAX_PSU_RATING_W, description="DC rating, W")
    circuit: str | None = Field(None, description="circuit it is plugged into (circuits[].name)")
    efficiency: float = Field(
        0.92, ge=MIN_PSU_EFFICIENCY, le=1, description="DC/AC efficiency at load (0.5–1.0)"
    )
    platform_w: float = Field(0.0, ge=0, description="non-GPU DC load on this PSU, W")
    redundant_group: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="PSUs naming the same group share their pooled DC load equally",
    )

    @field_validator("efficiency", mode="before")
    @classmethod
    def _efficiency_is_a_ratio(cls, value: Any) -> Any:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        hint = psu_efficiency_hint(value) if number else None
        if hint:
            raise ValueError(hint)
        return value

    @model_validator(mode="after")
    def _platform_fits(self) -> Psu:
        if self.platform_w > self.rating_w:
            raise ValueError(
                f"platform_w {self.platform_w:g} W is above rating_w {self.rating_w:g} W: the "
                "PSU could not even carry the platform; check both values (W, DC)"
            )
        return self

    def wall_w(self, dc_w: float) -> float:
        """AC draw at the wall for a DC load. Units: W."""
        return dc_w / self.efficiency


class _Identified(Protocol):
    @property
    def uuid(self) -> str: ...


class PoweredRig(Protocol):
    """What :meth:`BudgetModel.from_rig` reads of a rig (``tuning.backends.base.Rig`` has it)."""

    @property
    def gpus(self) -> Sequence[_Identified]: ...

    def psus(self) -> tuple[Psu, ...]: ...

    def circuits(self) -> tuple[Circuit, ...]: ...

    def psu_of(self, uuid: str) -> str | None: ...


@dataclass(frozen=True)
class Overload:
    """One PSU (DC) or circuit (AC, at the wall) whose load exceeds its limit. Units: W."""

    kind: Literal["psu", "circuit"]
    name: str
    load_w: float
    limit_w: float


#: How a budget keys its GPUs: a UUID (live rigs, the sweep), an index or a solver position.
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class BudgetModel(Generic[K]):
    """The PSUs and circuits of a rig and which PSU feeds each GPU.

    ``gpu_psu`` maps a GPU key (a UUID, an index into an inventory's GPU list, a solver
    position — whatever the caller keys its watts by) to the PSU's name.
    """

    psus: tuple[Psu, ...] = ()
    circuits: tuple[Circuit, ...] = ()
    gpu_psu: Mapping[K, str | None] = field(default_factory=dict)

    @classmethod
    def from_rig(cls, rig: PoweredRig) -> BudgetModel[str]:
        """A live rig's budget, keyed by GPU UUID."""
        return BudgetModel(
            psus=tuple(rig.psus()),
            circuits=tuple(rig.circuits()),
            gpu_psu={gpu.uuid: rig.psu_of(gpu.uuid) for gpu in rig.gpus},
        )

    def psu_of(self, key: K) -> str | None:
        """The PSU feeding GPU ``key``: its mapping, else the only PSU, else ``None``."""
        name = self.gpu_psu.get(key)
        if name is None and len(self.psus) == 1:
            return self.psus[0].name
        return name

    def psu_dc_w(self, watts: Mapping[K, float]) -> dict[str, float]:
        """DC load per PSU name: platform + the watts of its GPUs, pooled and shared equally
        within a redundant group (module doc). Units: W."""
        loads = {psu.name: psu.platform_w for psu in self.psus}
        for key, power_w in watts.items():
            name = self.psu_of(key)
            if name in loads:
                loads[name] += power_w
        groups: dict[str, list[str]] = {}
        for psu in self.psus:
            if psu.redundant_group is not None:
                groups.setdefault(psu.redundant_group, []).append(psu.name)
        for members in groups.values():
            share_w = sum(loads[name] for name in members) / len(members)
            for name in members:
                loads[name] = share_w
        return loads

    def circuit_wall_w(self, dc_w: Mapping[str, float]) -> dict[str, float]:
        """Wall (AC) load per circuit name for the PSUs' DC loads ``dc_w``: the circuit's
        ``reserved_w`` plus each of its PSUs' DC load / efficiency. Units: W."""
        return {
            circuit.name: circuit.reserved_w
            + sum(psu.wall_w(dc_w[psu.name]) for psu in self.psus if psu.circuit == circuit.name)
            for circuit in self.circuits
        }

    def load_ratios(self, watts: Mapping[K, float]) -> dict[str, float]:
        """``{"psu:NAME": ratio, "circuit:NAME": ratio}`` for the given per-GPU watts."""
        dc = self.psu_dc_w(watts)
        ratios = {f"psu:{psu.name}": dc[psu.name] / psu.rating_w for psu in self.psus}
        wall = self.circuit_wall_w(dc)
        for circuit in self.circuits:
            ratios[f"circuit:{circuit.name}"] = wall[circuit.name] / circuit.budget_w
        return ratios

    def max_ratio(self, watts: Mapping[K, float]) -> float:
        """The highest load ratio over all PSUs and circuits (0 when none are described)."""
        return max(self.load_ratios(watts).values(), default=0.0)

    def fits(self, watts: Mapping[K, float], limit_ratio: float = 1.0) -> bool:
        """Whether every PSU and circuit stays at or below ``limit_ratio`` of its limit."""
        return self.max_ratio(watts) <= limit_ratio + 1e-9

    def overloads(self, watts: Mapping[K, float], slack_w: float = 0.0) -> list[Overload]:
        """Every PSU and circuit whose load exceeds its limit by more than ``slack_w``.

        PSUs first (in order), then circuits; ``slack_w`` absorbs float rounding (W).
        """
        dc = self.psu_dc_w(watts)
        found = [
            Overload("psu", psu.name, dc[psu.name], psu.rating_w)
            for psu in self.psus
            if dc[psu.name] > psu.rating_w + slack_w
        ]
        wall = self.circuit_wall_w(dc)
        found += [
            Overload("circuit", circuit.name, wall[circuit.name], circuit.budget_w)
            for circuit in self.circuits
            if wall[circuit.name] > circuit.budget_w + slack_w
        ]
        return found
