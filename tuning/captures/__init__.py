"""Parsers for real command output, and the merge behind ``rigforge inspect --from-captures``.

Every parser is a pure function ``str -> typed result`` (no I/O), so pyinfra facts can feed
them the output they gathered over SSH and get the same rig model:

* :func:`parse_query_gpu` — ``nvidia-smi --query-gpu=… --format=csv[,noheader][,nounits]``
* :func:`parse_topo` — ``nvidia-smi topo -m``
* :func:`parse_smi_q` — ``nvidia-smi -q`` and ``nvidia-smi -q -x``
* :func:`parse_lspci`, :func:`parse_lspci_tree`, :func:`parse_dmesg_pcie` — ``lspci -vv``,
  ``lspci -tv``, kernel "available PCIe bandwidth, limited by …" lines
* :func:`parse_numactl`, :func:`parse_lscpu`, :func:`host_info` — NUMA and CPU facts
* :func:`detect_kind`, :func:`merge_captures` — recognise texts by content and merge them into
  one :class:`~tuning.core.rig.RigSnapshot`; :func:`load_captures` reads a folder.
"""

from tuning.captures.errors import CaptureFormatError
from tuning.captures.folder import (
    CaptureFile,
    CaptureKind,
    CaptureSet,
    detect_kind,
    load_captures,
    merge_captures,
)
from tuning.captures.lspci import (
    LinkLimit,
    LspciDevice,
    LspciTree,
    parse_dmesg_pcie,
    parse_lspci,
    parse_lspci_tree,
)
from tuning.captures.numa import (
    CpuInfo,
    NumaNode,
    NumaTopology,
    host_info,
    parse_lscpu,
    parse_numactl,
)
from tuning.captures.query_gpu import parse_query_gpu
from tuning.captures.records import GpuRecord
from tuning.captures.smi_q import parse_smi_q
from tuning.captures.topo import NicLink, TopoGpu, TopoMatrix, parse_topo

__all__ = [
    "CaptureFile",
    "CaptureFormatError",
    "CaptureKind",
    "CaptureSet",
    "CpuInfo",
    "GpuRecord",
    "LinkLimit",
    "LspciDevice",
    "LspciTree",
    "NicLink",
    "NumaNode",
    "NumaTopology",
    "TopoGpu",
    "TopoMatrix",
    "detect_kind",
    "host_info",
    "load_captures",
    "merge_captures",
    "parse_dmesg_pcie",
    "parse_lscpu",
    "parse_lspci",
    "parse_lspci_tree",
    "parse_numactl",
    "parse_query_gpu",
    "parse_smi_q",
    "parse_topo",
]
