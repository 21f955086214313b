"""A described workload (:class:`~tuning.workloads.spec.WorkloadSpec`) as the simulated rig
runs it: each GPU's step time from the step-time model, once per workload.

* **One replica per GPU** (``gpus`` empty): :func:`replica_step` is
  :func:`tuning.model.serving.predict` for the model on that GPU's preset alone, the step of the
  workload's phase (``mixed``: :func:`mixed_step`). The power model turns it into a table of
  power and tokens/s per clock bin, as for any step.
* **A split over named GPUs**: :func:`group_plan` gives every member its *stage pass* — one
  micro-batch through the member's share of the layers (``predict``'s round divided by ``pp``,
  with the member's own preset, so a slower card has a longer pass) — and the pipeline's shape:
  ``in_flight`` micro-batches circulate over ``pp`` stages and each completed pass through
  the last stage yields ``tokens_per_pass`` tokens. The rig then paces the pipeline by its
  slowest stage each step (:class:`tuning.backends.sim.SimRig`).

The link of a split is the worst pair of its GPUs in the rig's topology
(:func:`tuning.model.serving.link_for_topology`, with the slower card's negotiated PCIe link);
the host is the engine's full core allotment (:class:`~tuning.model.serving.HostShare`)
with the slowest member's PCIe link, remote when the members span NUMA nodes
(:func:`host_share`: the placement's ``group_prediction`` makes the same choice, so a plan's
prediction and the simulator's measurement start from the same inputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuning.backends.sim_config import PresetSpec
from tuning.fabric.params import raw_gbps
from tuning.model.serving import (
    GpuHardware,
    HostShare,
    Link,
    Prediction,
    link_for_topology,
    predict,
)
from tuning.model.step import StepTime

if TYPE_CHECKING:  # tuning.workloads imports the simulated rig: no cycle at run time
    from tuning.workloads.spec import WorkloadSpec

#: Ranking of link kinds, best first (the worst pair of a split sets its link).
_KIND_ORDER = {"nvlink": 0, "peer": 1, "staged": 2}


def hardware_of(preset: PresetSpec) -> GpuHardware:
    """The step-time model's view of a preset: bandwidth and tensor TFLOPS (its cited figures)."""
    tflops = {"fp16": preset.fp16_tensor_tflops}
    tflops.update({k: float(v) for k, v in preset.tensor_tflops.items() if v})
    return GpuHardware(name=preset.name, memory_bw_gbps=preset.memory_bw_gbps, tensor_tflops=tflops)


def mixed_step(pred: Prediction) -> StepTime:
    """``mixed``: a chunked-prefill step that carries the decode tokens of every sequence and
    one prefill chunk (vLLM's and SGLang's mixed batches). The weights are read once for both
    (memory: the larger read), the math of both adds, and so does the time on links; the host
    schedules one step. Tokens counted: the decode (output) tokens only."""
    d, p = pred.decode_step, pred.prefill_step
    return StepTime(
        memory_s=max(d.memory_s, p.memory_s),
        compute_s=d.compute_s + p.compute_s,
        interconnect_s=d.interconnect_s + p.interconnect_s,
        host_s=max(d.host_s, p.host_s),
        tokens=d.tokens,
    )


def _phase_step(spec: WorkloadSpec, pred: Prediction) -> StepTime:
    if spec.phase == "mixed":
        return mixed_step(pred)
    return pred.prefill_step if spec.phase == "prefill" else pred.decode_step


def host_share(pcie: Sequence[tuple[int, int]], numa_nodes: Sequence[int | None]) -> HostShare:
    """The host side of one replica or split: the slowest member's negotiated PCIe link
    (``(gen, width)`` per member) and whether its members sit on more than one NUMA node."""
    gen = min(g for g, _ in pcie)
    width = min(w for _, w in pcie)
    nodes = {n for n in numa_nodes if n is not None}
    return HostShare(pcie_gbps=raw_gbps(gen, width), remote_numa=len(nodes) > 1)


def _predict(
    spec: WorkloadSpec, gpus: Sequence[GpuHardware], link: Link | None, host: HostShare
) -> Prediction:
    return predict(
        spec.model,
        gpus,
        tp=spec.tp,
        pp=spec.pp,
        concurrency=spec.concurrency,
        context=spec.context,
        phase="decode" if spec.phase == "mixed" else spec.phase,
        link=link,
        host=host,
        prompt_tokens=spec.context if spec.phase == "prefill" else None,
        engine=spec.engine,
    )


def replica_step(spec: WorkloadSpec, gpu: GpuHardware, host: HostShare) -> StepTime:
    """One replica of ``spec`` alone on ``gpu``: the step of its phase at full clock."""
    return _phase_step(spec, _predict(spec, [gpu], None, host))


@dataclass(frozen=True)
class GroupPlan:
    """A split's members as the rig paces them. Units: s, tokens.

    ``passes[i]``: member ``i``'s stage pass at full clock (its kernel, link and host time for
    one micro-batch); ``stage[i]``: its pipeline stage (members are stage-major, ``tp`` per
    stage); ``in_flight``: micro-batches circulating (``min(concurrency, pp)`` in decode, ``pp``
    in prefill: prompts keep the pipeline full); ``tokens_per_pass``: tokens one micro-batch
    yields per trip through the pipeline (``concurrency / in_flight`` in decode, the chunk in
    prefill). The pipeline completes ``min(in_flight / Σ stage times, 1 / max stage time)``
    passes per second (a closed ring of ``in_flight`` micro-batches over ``pp`` stages).
    """

    passes: tuple[StepTime, ...]
    stage: tuple[int, ...]
    pp: int
    in_flight: int
    tokens_per_pass: float
    link: Link


def group_plan(
    spec: WorkloadSpec, gpus: Sequence[GpuHardware], link: Link, host: HostShare
) -> GroupPlan:
    """The :class:`GroupPlan` of ``spec`` over ``gpus`` (stage-major, ``tp · pp`` of them)."""
    passes = []
    for hw in gpus:
        own = _phase_step(spec, _predict(spec, [hw] * len(gpus), link, host))
        passes.append(
            StepTime(
                memory_s=own.memory_s / spec.pp,
                compute_s=own.compute_s / spec.pp,
                interconnect_s=own.interconnect_s / spec.pp,
                host_s=own.host_s / spec.pp,
                tokens=own.tokens,
            )
        )
    if spec.phase == "prefill":
        in_flight = spec.pp
        per_pass = passes[0].tokens
    else:
        in_flight = min(spec.concurrency, spec.pp)
        per_pass = spec.concurrency / in_flight
    return GroupPlan(
        passes=tuple(passes),
        stage=tuple(i // spec.tp for i in range(len(gpus))),
        pp=spec.pp,
        in_flight=in_flight,
        tokens_per_pass=per_pass,
        link=link,
    )


def pipeline_passes_per_s(stage_s: Sequence[float], in_flight: int) -> float:
    """Passes per second of ``in_flight`` micro-batches circulating over stages taking
    ``stage_s`` each: ``min(in_flight / Σ t, 1 / max t)``. Hand-worked: six stages of 2 ms with
    one micro-batch: 1 / 12 ms = 83.3 passes/s; with six: 1 / 2 ms = 500."""
    total = math.fsum(stage_s)
    return min(in_flight / total, 1.0 / max(stage_s))


def worst_link(
    pairs: Sequence[tuple[str, tuple[int, int]]],
) -> Link | None:
    """The worst :class:`Link` among ``(nvidia-smi topo class, (gen, width))`` pairs (the
    slower card's negotiated link); ``None`` for no pairs (a single GPU)."""
    worst: Link | None = None
    for topo, (gen, width) in pairs:
        link = link_for_topology(topo, gen, width)
        if worst is None or (_KIND_ORDER[link.kind], -link.bandwidth_gbps) > (
            _KIND_ORDER[worst.kind],
            -worst.bandwidth_gbps,
        ):
            worst = link
    return worst
