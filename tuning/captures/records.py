"""The per-GPU record that every ``nvidia-smi`` parser returns, and its bridge to ``GpuInfo``.

``--query-gpu`` CSV, ``-q`` text and ``-q -x`` XML all describe the same things in different
spellings; they all land in :class:`GpuRecord`, so merging and the rig model see one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuning.backends.base import ClockEventReason
from tuning.captures.values import infer_under_load
from tuning.core.bus import normalize_bus_id
from tuning.core.pcie import PcieLink
from tuning.core.rig import GpuInfo, Thresholds


@dataclass(frozen=True)
class GpuRecord:
    """One GPU as one ``nvidia-smi`` capture describes it; ``None`` = not in the capture.

    ``index`` is the nvidia-smi index when the capture printed one (or the GPU's position in
    a ``-q`` log, which nvidia-smi prints in the same PCI bus order), else ``None``.
    ``position`` is always the row / block order in the capture (0-based).
    Units: W, °C, MHz, MiB, %. ``pcie_gen_max`` is nvidia-smi's "max" (the lower of what the
    GPU and the host support); ``pcie_gen_device_max``/``pcie_gen_host_max`` are the halves.
    ``clock_event_reasons`` is ``None`` when the capture did not say, empty when none active.
    """

    position: int
    index: int | None = None
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    driver_version: str | None = None
    memory_total_mib: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    power_enforced_limit_w: float | None = None
    power_default_w: float | None = None
    power_min_w: float | None = None
    power_max_w: float | None = None
    temp_c: float | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    sm_clock_mhz: float | None = None
    max_sm_clock_mhz: float | None = None
    clock_event_reasons: frozenset[ClockEventReason] | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_gen_device_max: int | None = None
    pcie_gen_host_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    utilization_pct: float | None = None
    pstate: str | None = None
    persistence_mode: bool | None = None
    fan_pct: float | None = None

    @property
    def bus_key(self) -> str | None:
        """The bus id normalised for joining (``dddd:bb:dd.f``), ``None`` when absent."""
        return normalize_bus_id(self.pci_bus_id) if self.pci_bus_id else None

    @property
    def under_load(self) -> bool | None:
        """Whether this reading was taken with the GPU busy (see ``infer_under_load``)."""
        idle = (
            None
            if self.clock_event_reasons is None
            else ClockEventReason.GPU_IDLE in self.clock_event_reasons
        )
        return infer_under_load(self.utilization_pct, self.pstate, idle)

    @property
    def pcie(self) -> PcieLink:
        """The link as nvidia-smi reported it, with the load it was read under."""
        gen_max = self.pcie_gen_max
        if gen_max is None and self.pcie_gen_device_max is not None:
            # Only the device half is known; the host may cap it lower, so this is an upper
            # bound — still the right reference for "is the link below what it could be".
            gen_max = (
                min(self.pcie_gen_device_max, self.pcie_gen_host_max)
                if self.pcie_gen_host_max is not None
                else self.pcie_gen_device_max
            )
        return PcieLink(
            gen_current=self.pcie_gen_current,
            gen_max=gen_max,
            width_current=self.pcie_width_current,
            width_max=self.pcie_width_max,
            under_load=self.under_load,
        )

    def to_gpu_info(self, index: int | None = None) -> GpuInfo:
        """The rig-model view; ``index`` overrides the record's own (default: index, position)."""
        if index is None:
            index = self.index if self.index is not None else self.position
        return GpuInfo(
            index=index,
            uuid=self.uuid,
            name=self.name,
            pci_bus_id=self.pci_bus_id,
            memory_total_mib=self.memory_total_mib,
            power_min_w=self.power_min_w,
            power_max_w=self.power_max_w,
            power_default_w=self.power_default_w,
            power_limit_w=self.power_limit_w,
            power_draw_w=self.power_draw_w,
            temp_c=self.temp_c,
            thresholds=self.thresholds,
            pcie=self.pcie,
            persistence_mode=self.persistence_mode,
            utilization_pct=self.utilization_pct,
            pstate=self.pstate,
        )
