"""Facts from ``nvidia-smi``: the GPUs (``--query-gpu`` CSV) and their topology (``topo -m``).

"No nvidia-smi" and "driver installed but not loaded" are fact values (``status``), never
crashes: a first deploy reads these facts before the driver exists.
The parsing is the foundation's (:mod:`tuning.captures`); these classes only adapt it.
"""

from __future__ import annotations

from typing import Any

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

_GPU_KEYS = (
    "index",
    "uuid",
    "name",
    "pci_bus_id",
    "memory_total_mib",
    "power_limit_w",
    "power_default_w",
    "power_min_w",
    "power_max_w",
    "persistence_mode",
)


def _failure(text: str) -> dict[str, Any] | None:
    if DRIVER_NOT_LOADED in text:
        return {"status": STATUS_DRIVER_NOT_LOADED, "message": text.strip(), "gpus": []}
    if NVML_FAILED in text:
        return {"status": STATUS_NVML_ERROR, "message": text.strip(), "gpus": []}
    return None


class NvidiaGpus(FactBase):
    """The host's NVIDIA GPUs as ``nvidia-smi --query-gpu=… --format=csv,nounits`` reports them.

    Units: W, MiB. Unknown cells (``[N/A]``) are ``None``. Example::

        {
            "status": "ok",  # or no_nvidia_smi, driver_not_loaded, nvml_error, unparseable
            "message": None,           # nvidia-smi's own sentence when status is not ok
            "gpus": [
                {
                    "index": 0,
                    "uuid": "GPU-5f1c…",
                    "name": "NVIDIA GeForce RTX 3090",
                    "pci_bus_id": "00000000:01:00.0",
                    "memory_total_mib": 24576,
                    "power_limit_w": 350.0,
                    "power_default_w": 350.0,
                    "power_min_w": 100.0,
                    "power_max_w": 350.0,
                    "persistence_mode": True,
                    "pcie": {"gen_current": 1, "gen_max": 4, "width_current": 16, "width_max": 16},
                }
            ],
        }
    """

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> dict[str, Any]:
        return {
            "status": STATUS_NO_NVIDIA_SMI,
            "message": "nvidia-smi is not installed",
            "gpus": [],
        }

    def command(self) -> str:
        # `|| true`: a failing nvidia-smi (no driver loaded) is a value, not a fact error.
        return f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,nounits 2>&1 || true"

    def process(self, output: list[str]) -> dict[str, Any]:
        text = "\n".join(output)
        failed = _failure(text)
        if failed is not None:
            return failed
        if "No devices were found" in text:
            return {"status": STATUS_OK, "message": None, "gpus": []}
        try:
            records = parse_query_gpu(text)
        except CaptureFormatError as exc:
            return {"status": STATUS_UNPARSEABLE, "message": str(exc), "gpus": []}
        gpus = []
        for record in records:
            gpu = {key: getattr(record, key) for key in _GPU_KEYS}
            link = record.pcie
            gpu["pcie"] = {
                "gen_current": link.gen_current,
                "gen_max": link.gen_max,
                "width_current": link.width_current,
                "width_max": link.width_max,
            }
            gpus.append(gpu)
        return {"status": STATUS_OK, "message": None, "gpus": gpus}


def find_gpu(fact: dict[str, Any], uuid: str) -> dict[str, Any] | None:
    """The GPU with this UUID in an :class:`NvidiaGpus` value (case-insensitive), or ``None``."""
    for gpu in fact.get("gpus", []):
        if (gpu.get("uuid") or "").lower() == uuid.lower():
            return gpu
    return None


class GpuTopology(FactBase):
    """``nvidia-smi topo -m``: how each GPU pair is connected and which CPUs are local to each.

    Link names as nvidia-smi prints them (``NV4``, ``PIX``, ``PXB``, ``PHB``, ``NODE``, ``SYS``);
    each unordered pair once. Example::

        {
            "status": "ok",
            "message": None,
            "devices": ["GPU0", "GPU1", "NIC0"],
            "links": [{"a": 0, "b": 1, "link": "PHB"}],
            "gpus": [{"index": 0, "cpu_list": "0-15", "numa_node": 0}],
        }
    """

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> dict[str, Any]:
        return {
            "status": STATUS_NO_NVIDIA_SMI,
            "message": "nvidia-smi is not installed",
            "devices": [],
            "links": [],
            "gpus": [],
        }

    def command(self) -> str:
        return "nvidia-smi topo -m 2>&1 || true"

    def process(self, output: list[str]) -> dict[str, Any]:
        text = "\n".join(output)
        empty: dict[str, Any] = {"devices": [], "links": [], "gpus": []}
        failed = _failure(text)
        if failed is not None:
            return {**failed, **empty}
        try:
            matrix = parse_topo(text)
        except CaptureFormatError as exc:
            return {"status": STATUS_UNPARSEABLE, "message": str(exc), **empty}
        return {
            "status": STATUS_OK,
            "message": None,
            "devices": list(matrix.devices),
            "links": [{"a": link.a, "b": link.b, "link": link.link} for link in matrix.links],
            "gpus": [
                {
                    "index": gpu.index,
                    "cpu_list": format_cpu_list(gpu.cpu_list) if gpu.cpu_list else None,
                    "numa_node": gpu.numa_node,
                }
                for gpu in matrix.gpus
            ],
        }
