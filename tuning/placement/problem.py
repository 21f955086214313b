"""The placement problem's values: a profile's hints, per-GPU facts, units, options.

A :class:`Problem` holds the GPUs (:class:`GpuView`), the units (model replicas) in search
order, every unit's candidate :class:`Option` s and which used-GPU masks fit the power
budget; :func:`tuning.placement.build.build_problem` makes one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inventory.models import ModelSpec
from tuning.core.power import Circuit, Psu
from tuning.core.profile import Profile, load_profile
from tuning.model.serving import GpuHardware, Link, Prediction


@dataclass(frozen=True)
class GpuHint:
    """What a tuning profile says about one GPU (every field optional)."""

    cap_w: float | None = None
    peak_temp_c: float | None = None
    throughput_rel: float | None = None


@dataclass(frozen=True)
class ProfileHints:
    """The parts of a tuning profile placement uses, keyed by GPU UUID."""

    gpus: Mapping[str, GpuHint] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def from_profile(cls, profile: Profile, source: str | None = None) -> ProfileHints:
        """The per-GPU cap, heat-soak peak and relative throughput of a typed profile."""
        return cls(
            gpus={
                gpu.uuid: GpuHint(
                    cap_w=gpu.cap_w,
                    peak_temp_c=gpu.peak_temp_c,
                    throughput_rel=gpu.throughput_rel,
                )
                for gpu in profile.gpus
            },
            source=source,
        )


def load_profile_hints(path: str | Path) -> ProfileHints:
    """The placement's view of a profile file, read by the one profile loader.

    :func:`tuning.core.profile.load_profile` refuses a malformed profile with every problem
    and its YAML path (a directory means ``DIR/profile.yaml``).
    """
    return ProfileHints.from_profile(load_profile(path), source=str(path))


@dataclass(frozen=True)
class GpuView:
    """Per-GPU planning facts derived from the snapshot and the profile."""

    position: int  # bit position in masks (order of ``RigSnapshot.gpus``)
    index: int
    uuid: str
    memory_total_mib: int
    usable_mib: float
    numa_node: int | None
    cpu_list: tuple[int, ...] | None
    psu: str | None
    degraded: bool
    power_w: float | None
    hardware: GpuHardware  # memory bandwidth, tensor TFLOPS (presets.yaml)
    hardware_known: bool = True  # False: no preset matched the GPU's name; nominal figures
    pcie_gen: int | None = None  # current link (a degraded link carries less)
    pcie_width: int | None = None


@dataclass(frozen=True)
class Unit:
    """One replica of one model."""

    model: ModelSpec
    replica: int
    port: int

    @property
    def label(self) -> str:
        return self.model.name if self.model.replicas == 1 else f"{self.model.name}#{self.replica}"


@dataclass(frozen=True)
class Option:
    """A candidate placement of one unit: GPU set (bit mask), split, and what it costs/earns."""

    mask: int
    tp: int
    pp: int
    need_mib: float  # per GPU
    reserve_mib: tuple[float, ...]  # per GPU position in the mask order (for sharing)
    throughput: float  # predicted aggregate decode tokens/s
    value: float  # priority · throughput
    worst_link: str
    prediction: Prediction | None = None


@dataclass(frozen=True)
class Problem:
    """A placement problem: GPUs, units in search order, candidate options per unit."""

    rig_name: str
    fingerprint: str
    gpus: tuple[GpuView, ...]
    units: tuple[Unit, ...]
    options: tuple[tuple[Option, ...], ...]
    no_option_reasons: tuple[str | None, ...]
    headroom_pct: float
    links: Mapping[tuple[int, int], str]
    power_ok: tuple[bool, ...]  # indexed by used-GPU mask
    pin_masks: tuple[int | None, ...] = ()  # per unit; None: not pinned
    psus: tuple[Psu, ...] = ()
    #: What ``rigforge links`` measured between GPU positions (a saved ``links.yaml``); a GPU
    #: set whose every pair is in it is predicted over the measured link, not the nominal one.
    measured: Mapping[tuple[int, int], Link] = field(default_factory=dict)
    circuits: tuple[Circuit, ...] = ()

    @property
    def n(self) -> int:
        return len(self.gpus)
