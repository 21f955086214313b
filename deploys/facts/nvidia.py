"""Facts from ``nvidia-smi``: the GPUs (``--query-gpu`` CSV) and their topology (``topo -m``).

"No nvidia-smi" and "driver installed but not loaded" are fact values (``status``), never
crashes: a first deploy reads these facts before the driver exists.
The parsing is the foundation's (:mod:`tuning.captures`); these classes only adapt it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra.api import FactBase

from tuning.captures import CaptureFormatError, parse_query_gpu, parse_topo
from tuning.captures.topo import TopoGpu
from tuning.core.pcie import TopologyLink
from tuning.core.rig import GpuInfo

#: The ``--query-gpu`` fields :class:`NvidiaGpus` asks for (``nvidia-smi --help-query-gpu``).
QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "memory.total",
    "power.limit",
    "power.default_limit",
    "power.min_limit",
    "power.max_limit",
    "persistence_mode",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
)

#: nvidia-smi's own words for "the driver package is there but the kernel module is not".
DRIVER_NOT_LOADED = "couldn't communicate with the NVIDIA driver"
#: ... and for a user-space/kernel version mismatch or another NVML start-up failure.
NVML_FAILED = "Failed to initialize NVML"

STATUS_OK = "ok"
STATUS_NO_NVIDIA_SMI = "no_nvidia_smi"
STATUS_DRIVER_NOT_LOADED = "driver_not_loaded"
STATUS_NVML_ERROR = "nvml_error"
STATUS_UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class SmiGpus:
    """What ``nvidia-smi --query-gpu`` said: a status, its own sentence when not ok, the GPUs.

    ``status``: :data:`STATUS_OK`, :data:`STATUS_NO_NVIDIA_SMI`,
    :data:`STATUS_DRIVER_NOT_LOADED`, :data:`STATUS_NVML_ERROR` or :data:`STATUS_UNPARSEABLE`.
    """

    status: str
    message: str | None = None
    gpus: tuple[GpuInfo, ...] = ()

    def find(self, uuid: str) -> GpuInfo | None:
        """The GPU with this UUID (case-insensitive), or ``None``."""
        return next((g for g in self.gpus if (g.uuid or "").lower() == uuid.lower()), None)


@dataclass(frozen=True)
class Topology:
    """``nvidia-smi topo -m``: the matrix's devices, each unordered GPU pair once, each GPU's
    affinity cells (the parser's own types)."""

    status: str
    message: str | None = None
    devices: tuple[str, ...] = ()
    links: tuple[TopologyLink, ...] = ()
    gpus: tuple[TopoGpu, ...] = ()


def _failure(text: str) -> tuple[str, str] | None:
    if DRIVER_NOT_LOADED in text:
        return STATUS_DRIVER_NOT_LOADED, text.strip()
    if NVML_FAILED in text:
        return STATUS_NVML_ERROR, text.strip()
    return None


class NvidiaGpus(FactBase[SmiGpus]):
    """The host's NVIDIA GPUs as ``nvidia-smi --query-gpu=… --format=csv,nounits`` reports them.

    Example::

        SmiGpus(status="ok", message=None, gpus=(
            GpuInfo(index=0, uuid="GPU-5f1c…", name="NVIDIA GeForce RTX 3090",
                    pci_bus_id="00000000:01:00.0", memory_total_mib=24576,
                    power_limit_w=350.0, power_default_w=350.0, power_min_w=100.0,
                    power_max_w=350.0, persistence_mode=True,
                    pcie=PcieLink(gen_current=1, gen_max=4, width_current=16, width_max=16)),
        ))

    The GPUs are the core's :class:`~tuning.core.rig.GpuInfo` (what nvidia-smi did not report,
    or was not asked, is ``None``).
    """

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> SmiGpus:
        return SmiGpus(status=STATUS_NO_NVIDIA_SMI, message="nvidia-smi is not installed")

    def command(self) -> str:
        # `|| true`: a failing nvidia-smi (no driver loaded) is a value, not a fact error.
        return f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,nounits 2>&1 || true"

    def process(self, output: list[str]) -> SmiGpus:
        text = "\n".join(output)
        failed = _failure(text)
        if failed is not None:
            return SmiGpus(status=failed[0], message=failed[1])
        if "No devices were found" in text:
            return SmiGpus(status=STATUS_OK)
        try:
            records = parse_query_gpu(text)
        except CaptureFormatError as exc:
            return SmiGpus(status=STATUS_UNPARSEABLE, message=str(exc))
        return SmiGpus(status=STATUS_OK, gpus=tuple(r.to_gpu_info() for r in records))


class GpuTopology(FactBase[Topology]):
    """``nvidia-smi topo -m``: how each GPU pair is connected and which CPUs are local to each.

    Link names as nvidia-smi prints them (``NV4``, ``PIX``, ``PXB``, ``PHB``, ``NODE``, ``SYS``);
    each unordered pair once. Example::

        Topology(status="ok", message=None, devices=("GPU0", "GPU1", "NIC0"),
                 links=(TopologyLink(a=0, b=1, link="PHB"),),
                 gpus=(TopoGpu(index=0, cpu_list=(0, 1, …, 15), numa_affinity=(0,)),))
    """

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> Topology:
        return Topology(status=STATUS_NO_NVIDIA_SMI, message="nvidia-smi is not installed")

    def command(self) -> str:
        return "nvidia-smi topo -m 2>&1 || true"

    def process(self, output: list[str]) -> Topology:
        text = "\n".join(output)
        failed = _failure(text)
        if failed is not None:
            return Topology(status=failed[0], message=failed[1])
        try:
            matrix = parse_topo(text)
        except CaptureFormatError as exc:
            return Topology(status=STATUS_UNPARSEABLE, message=str(exc))
        return Topology(
            status=STATUS_OK, devices=matrix.devices, links=matrix.links, gpus=matrix.gpus
        )
