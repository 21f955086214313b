"""Model architectures and hardware written out for the step-time model's unit tests, so the
traffic and launch tests work their hand counts from one definition."""

from __future__ import annotations

from dataclasses import dataclass

from tuning.model.serving import GpuHardware, Link

#: A round-numbered GPU: 1000 GB/s, 100 dense FP16 tensor TFLOPS.
GPU = GpuHardware(name="round", memory_bw_gbps=1000.0, tensor_tflops={"fp16": 100.0})
#: A staged (P2P off) PCIe link: 15.2 GB/s one way, 14 us per hop.
STAGED = Link(kind="staged", bandwidth_gbps=15.2, latency_us=14.0)


@dataclass(frozen=True)
class Dense40:
    """40 layers x (2·2048² + 2·2048·1024 + 3·2048·8192) = 40 x 62 914 560 = 2.5165824 B
    parameters (h 2048 = 16 heads x 128, 8 KV heads, ffn 8192), 8-bit weights."""

    engine: str = "llama.cpp"
    params_b: float = 2.5165824
    quant_bits: float = 8
    layers: int = 40
    attention_heads: int = 16
    kv_heads: int = 8
    head_dim: int = 128
    kv_cache_bits: int = 16
    context: int = 0
    active_params_b: float | None = None
