"""Hand-built rigs and models for the placement tests (no simulator needed)."""

from __future__ import annotations

from collections.abc import Sequence

from inventory.models import ModelsFile, ModelSpec
from tuning.core.pcie import PcieLink, TopologyLink
from tuning.core.power import Circuit, Psu
from tuning.core.rig import GpuInfo, RigSnapshot

GIB = 1024


def make_rig(
    mems_mib: Sequence[int],
    links: Sequence[Sequence[str]] | None = None,
    *,
    numa: Sequence[int | None] | None = None,
    degraded: Sequence[int] = (),
    power_w: float = 300.0,
    psus: Sequence[Psu] = (),
    circuits: Sequence[Circuit] = (),
    psu_of: Sequence[str | None] | None = None,
    name: str = "test-rig",
) -> RigSnapshot:
    """A rig of GPUs ``GPU-0…`` with the given VRAM, link matrix and NUMA nodes."""
    n = len(mems_mib)
    gpus = []
    for i, mem in enumerate(mems_mib):
        node = numa[i] if numa is not None else 0
        pcie = (
            PcieLink(gen_current=4, gen_max=4, width_current=4, width_max=16, under_load=True)
            if i in degraded
            else PcieLink(gen_current=4, gen_max=4, width_current=16, width_max=16)
        )
        gpus.append(
            GpuInfo(
                index=i,
                uuid=f"GPU-{i}",
                pci_bus_id=f"0000:{i + 1:02x}:00.0",
                memory_total_mib=mem,
                numa_node=node,
                cpu_list=tuple(range(8 * (node or 0), 8 * (node or 0) + 8)),
                power_limit_w=power_w,
                pcie=pcie,
                psu=psu_of[i] if psu_of is not None else None,
            )
        )
    if links is None:
        links = [["X" if a == b else "PHB" for b in range(n)] for a in range(n)]
    topology = tuple(TopologyLink(a, b, links[a][b]) for a in range(n) for b in range(a + 1, n))
    return RigSnapshot(
        name=name, gpus=tuple(gpus), topology=topology, psus=tuple(psus), circuits=tuple(circuits)
    )


def model(name: str, **overrides: object) -> ModelSpec:
    """A Llama-3-8B-shaped model (32 layers, 32 heads, 8 KV heads) unless overridden."""
    fields: dict[str, object] = {
        "name": name,
        "engine": "vllm",
        "weights": f"org/{name}",
        "params_b": 8.0,
        "quant_bits": 16,
        "layers": 32,
        "attention_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "context": 8192,
        "max_sequences": 1,
    }
    fields.update(overrides)
    return ModelSpec.model_validate(fields)


def models_file(*specs: ModelSpec, headroom_pct: float = 10.0) -> ModelsFile:
    return ModelsFile(models=tuple(specs), headroom_pct=headroom_pct)
