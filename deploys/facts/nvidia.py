"""Facts from ``nvidia-smi``: the GPUs (``--query-gpu`` CSV) and their topology (``topo -m``).

"No nvidia-smi" and "driver installed but not loaded" are fact values (``status``), never
crashes: a first deploy reads these facts before the driver exists.
The parsing is the foundation's (:mod:`tuning.captures`); these classes only adapt it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyinfra.api import FactBase

from tuning.captures import CaptureFormatError, parse_query_gpu, parse_topo
from tuning.captures.values import format_cpu_list

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
class SmiLink:
    """A GPU's PCIe link as ``nvidia-smi`` reports it (``pcie.link.gen/width.current/max``)."""

    gen_current: int | None = None
    gen_max: int | None = None
    width_current: int | None = None
    width_max: int | None = None


@dataclass(frozen=True)
class SmiGpu:
    """One GPU as :class:`NvidiaGpus` reports it: the fields a deploy decides on.

    Units: W, MiB. ``None``: nvidia-smi printed ``[N/A]`` (not supported on this card).
    """

    index: int | None = None
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    memory_total_mib: int | None = None
    power_limit_w: float | None = None
    power_default_w: float | None = None
    power_min_w: float | None = None
    power_max_w: float | None = None
    persistence_mode: bool | None = None
    pcie: SmiLink = field(default_factory=SmiLink)


@dataclass(frozen=True)
class SmiGpus:
    """What ``nvidia-smi --query-gpu`` said: a status, its own sentence when not ok, the GPUs.

    ``status``: :data:`STATUS_OK`, :data:`STATUS_NO_NVIDIA_SMI`,
    :data:`STATUS_DRIVER_NOT_LOADED`, :data:`STATUS_NVML_ERROR` or :data:`STATUS_UNPARSEABLE`.
    """

    status: str
    message: str | None = None
    gpus: tuple[SmiGpu, ...] = ()

    def find(self, uuid: str) -> SmiGpu | None:
        """The GPU with this UUID (case-insensitive), or ``None``."""
        return next((g for g in self.gpus if (g.uuid or "").lower() == uuid.lower()), None)


@dataclass(frozen=True)
class TopoLink:
    """How GPUs ``a`` and ``b`` are connected (``NV4``, ``PIX``, ``PXB``, ``PHB``, ``NODE``, …)."""

    a: int
    b: int
    link: str


@dataclass(frozen=True)
class TopoGpu:
    """A GPU's local CPUs (kernel CPU list) and NUMA node as ``nvidia-smi topo -m`` prints them."""

    index: int
    cpu_list: str | None
    numa_node: int | None


@dataclass(frozen=True)
class Topology:
    """``nvidia-smi topo -m``: the matrix's devices, each unordered GPU pair once, each GPU."""

    status: str
    message: str | None = None
    devices: tuple[str, ...] = ()
    links: tuple[TopoLink, ...] = ()
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
            SmiGpu(index=0, uuid="GPU-5f1c…", name="NVIDIA GeForce RTX 3090",
                   pci_bus_id="00000000:01:00.0", memory_total_mib=24576,
                   power_limit_w=350.0, power_default_w=350.0, power_min_w=100.0,
                   power_max_w=350.0, persistence_mode=True,
                   pcie=SmiLink(gen_current=1, gen_max=4, width_current=16, width_max=16)),
        ))
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
        return SmiGpus(
            status=STATUS_OK,
            gpus=tuple(
                SmiGpu(
                    index=r.index,
                    uuid=r.uuid,
                    name=r.name,
                    pci_bus_id=r.pci_bus_id,
                    memory_total_mib=r.memory_total_mib,
                    power_limit_w=r.power_limit_w,
                    power_default_w=r.power_default_w,
                    power_min_w=r.power_min_w,
                    power_max_w=r.power_max_w,
                    persistence_mode=r.persistence_mode,
                    pcie=SmiLink(
                        gen_current=r.pcie.gen_current,
                        gen_max=r.pcie.gen_max,
                        width_current=r.pcie.width_current,
                        width_max=r.pcie.width_max,
                    ),
                )
                for r in records
            ),
        )


class GpuTopology(FactBase[Topology]):
    """``nvidia-smi topo -m``: how each GPU pair is connected and which CPUs are local to each.

    Link names as nvidia-smi prints them (``NV4``, ``PIX``, ``PXB``, ``PHB``, ``NODE``, ``SYS``);
    each unordered pair once. Example::

        Topology(status="ok", message=None, devices=("GPU0", "GPU1", "NIC0"),
                 links=(TopoLink(a=0, b=1, link="PHB"),),
                 gpus=(TopoGpu(index=0, cpu_list="0-15", numa_node=0),))
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
            status=STATUS_OK,
            devices=tuple(matrix.devices),
            links=tuple(TopoLink(a=link.a, b=link.b, link=link.link) for link in matrix.links),
            gpus=tuple(
                TopoGpu(
                    index=gpu.index,
                    cpu_list=format_cpu_list(gpu.cpu_list) if gpu.cpu_list else None,
                    numa_node=gpu.numa_node,
                )
                for gpu in matrix.gpus
            ),
        )
