"""A serving placement for tests that render units from a plan (``tuning.core.plan.Placement``).

Two GPUs of a TP-2 vLLM model, as ``rigforge plan`` would place it on a two-socket box: the
values are plausible, not a solver's answer; tests override what they are about.
"""

from __future__ import annotations

from dataclasses import replace

from tuning.core.plan import Placement

GPU_A = "GPU-aaaaaaaa-0000-4000-8000-000000000001"
GPU_B = "GPU-bbbbbbbb-0000-4000-8000-000000000002"


def placement(engine: str = "vllm", **overrides: object) -> Placement:
    """``qwq-32b`` on ``GPU_A`` + ``GPU_B`` (indices 1 and 3, NUMA node 1), with ``overrides``."""
    base = Placement(
        model="qwq-32b",
        replica=0,
        engine=engine,
        weights="Qwen/QwQ-32B",
        gpus=(GPU_A, GPU_B),
        gpu_indices=(1, 3),
        tp=2,
        pp=1,
        numa_node=1,
        cpu_list=(16, 17, 18, 19, 48, 49),
        vram_mib=30000,
        vram_free_mib=(10000, 10000),
        port=8001,
        p2p=False,
        worst_link="SYS",
        throughput=1.0,
        gpu_memory_utilization=0.9,
        context=32768,
        max_sequences=4,
        kv_cache_bits=16,
        shared=False,
        extra_args=("--enable-prefix-caching",),
    )
    return replace(base, **overrides)
