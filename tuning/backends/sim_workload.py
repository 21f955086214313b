"""A described workload (:class:`~tuning.workloads.spec.WorkloadSpec`) as the simulated rig
runs it: each GPU's step time from the step-time model, once per workload.

* **One replica per GPU** (``gpus`` empty): :func:`replica_step` is
  :func:`tuning.model.serving.predict` for the model on that GPU's preset alone, the step of the
  workload's phase (``mixed``: :func:`mixed_step`). The power model turns it into a table of
  power and tokens/s per clock bin, as for any step.
* **A split over named GPUs**: :func:`group_ring` is the split's own definition
  (:mod:`tuning.model.split`, the one :func:`~tuning.model.split.split_operating_point` the
  plan predicts with): every member's *stage pass* on its own preset and the pipeline's shape
  (``in_flight`` micro-batches over ``pp`` stages, ``tokens_per_pass`` each). The rig builds
  its :class:`~tuning.model.split.RingTables` and, at every step, lets each member's limiter
  choose its clock from :meth:`~tuning.model.split.RingTables.pace` (its own clock varied, the
  others where they are) — the update whose fixed point ``split_operating_point`` solves —
  with heat, throttling and noise on top (:class:`tuning.backends.sim.SimRig`).

The link of a split is the worst pair of its GPUs in the rig's topology
(:func:`tuning.model.serving.link_for_topology`, with the slower card's negotiated PCIe link);
the host is the engine's full core allotment (:class:`~tuning.model.serving.HostShare`)
with the slowest member's PCIe link, remote when the members span NUMA nodes
(:func:`host_share`: the placement's ``group_prediction`` makes the same choice, so a plan's
prediction and the simulator's measurement start from the same inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
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
from tuning.model.split import Ring, member_predictions, mixed_step, ring_of
from tuning.model.step import StepTime

if TYPE_CHECKING:  # tuning.workloads imports the simulated rig: no cycle at run time
    from tuning.workloads.spec import WorkloadSpec

#: Ranking of link kinds, best first (the worst pair of a split sets its link).
_KIND_ORDER = {"nvlink": 0, "peer": 1, "staged": 2}


def hardware_of(preset: PresetSpec) -> GpuHardware:
    """The step-time model's view of a preset: bandwidth, tensor TFLOPS and INT32 TOPS (its cited
    figures)."""
    tflops = {"fp16": preset.fp16_tensor_tflops}
    tflops.update({k: float(v) for k, v in preset.tensor_tflops.items() if v})
    return GpuHardware(
        name=preset.name,
        memory_bw_gbps=preset.memory_bw_gbps,
        tensor_tflops=tflops,
        int32_tops=preset.int32_tops,
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
        phase=spec.phase,
        link=link,
        host=host,
        prompt_tokens=spec.context,
        engine=spec.engine,
        input_per_output=spec.input_per_output,
    )


def replica_step(spec: WorkloadSpec, gpu: GpuHardware, host: HostShare) -> StepTime:
    """One replica of ``spec`` alone on ``gpu``: the step of its phase at full clock."""
    return _phase_step(spec, _predict(spec, [gpu], None, host))


def group_ring(
    spec: WorkloadSpec, gpus: Sequence[GpuHardware], link: Link, host: HostShare
) -> Ring:
    """The :class:`~tuning.model.split.Ring` of ``spec`` over ``gpus`` (stage-major, ``tp ·
    pp`` of them) in its phase: the split's own definition
    (:func:`tuning.model.split.member_predictions`, :func:`tuning.model.split.ring_of`)."""
    preds = member_predictions(
        spec.model,
        gpus,
        tp=spec.tp,
        pp=spec.pp,
        concurrency=spec.concurrency,
        context=spec.context,
        phase=spec.phase,
        link=link,
        host=host,
        prompt_tokens=spec.context,
        engine=spec.engine,
        input_per_output=spec.input_per_output,
    )
    return ring_of(preds, spec.tp, spec.pp, spec.concurrency, spec.phase)


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
