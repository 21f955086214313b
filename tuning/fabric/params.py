"""The physical figures of the fabric model, from ``pcie.yaml`` (each with its source there).

:func:`load_params` validates the file once per process; :func:`write_gbps` and
:func:`read_gbps` turn a link (generation, width) and the platform's payload sizes into what it
carries per direction. Units: GB/s (10^9 B/s), bytes, microseconds.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuning.errors import ConfigError, read_yaml_config, yaml_path

PARAMS_FILE = Path(__file__).with_name("pcie.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationSpec(_Strict):
    """One PCIe generation: transfer rate per lane (GT/s) and line-encoding efficiency."""

    gt_s: float = Field(gt=0)
    encoding: float = Field(gt=0, le=1)


class LatencySpec(_Strict):
    """Hop latencies of a peer write and the set-up of one staged copy. Units: µs."""

    gpu_peer_base_us: float = Field(ge=0)
    root_complex_hop_us: float = Field(ge=0)
    switch_hop_us: float = Field(ge=0)
    inter_socket_hop_us: float = Field(ge=0)
    nvlink_hop_us: float = Field(ge=0)
    staged_copy_setup_us: float = Field(ge=0)


class FabricParams(_Strict):
    """``pcie.yaml``."""

    generations: dict[int, GenerationSpec]
    write_tlp_overhead_b: int = Field(gt=0)
    completion_tlp_overhead_b: int = Field(gt=0)
    link_efficiency: float = Field(gt=0, le=1)
    nvlink_efficiency: float = Field(gt=0, le=1)
    latency: LatencySpec
    pcie_p2p: dict[str, bool] = Field(default_factory=dict)
    sources: dict[str, str] = Field(min_length=1)


@cache
def load_params() -> FabricParams:
    """The shipped figures, validated once (ConfigError with the YAML path when broken)."""
    try:
        return FabricParams.model_validate(read_yaml_config(PARAMS_FILE, "fabric figures").data)
    except ValidationError as exc:
        where = "; ".join(f"{yaml_path(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{PARAMS_FILE.name}: {where}") from exc


def raw_gbps(gen: int, width: int) -> float:
    """Line rate of a link per direction after encoding. Units: GB/s."""
    g = load_params().generations[gen]
    return g.gt_s * width * g.encoding / 8.0


def write_gbps(gen: int, width: int, max_payload_b: int) -> float:
    """What posted writes (D2H copies, peer writes) move per direction. Units: GB/s."""
    p = load_params()
    share = max_payload_b / (max_payload_b + p.write_tlp_overhead_b)
    return raw_gbps(gen, width) * share * p.link_efficiency


def read_gbps(gen: int, width: int, completion_b: int) -> float:
    """What DMA reads (H2D copies, peer reads) move per direction. Units: GB/s."""
    p = load_params()
    share = completion_b / (completion_b + p.completion_tlp_overhead_b)
    return raw_gbps(gen, width) * share * p.link_efficiency
