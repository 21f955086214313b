"""The one step-time type of the physical model: where one engine step's time goes.

An engine step is one forward pass of every sequence in flight (in decode: one token each; in
prefill: a chunk of prompt tokens). The serving model (:mod:`tuning.model`) predicts it from the
hardware (memory bandwidth, tensor throughput, links, host cores) and the model (weights, KV,
layers, hidden size); the power model and the simulator consume it, and the placement and every
explanation read its shares. This module holds the shared contract only, so the three can be
built against one definition.

Contract (units in the names; all times are seconds at the GPU's full clock):

* ``memory_s``: bytes the step reads from GPU memory (weights, KV) / effective bandwidth;
* ``compute_s``: FLOPs of the step / effective tensor throughput;
* ``interconnect_s``: tensor-parallel all-reduces and pipeline hand-offs over the fabric that the
  step cannot hide;
* ``host_s``: CPU time on the critical path (scheduler, sampling, kernel launches);
* ``tokens``: tokens the step produces (aggregate over the sequences in flight).

Memory and compute overlap on the GPU (roofline: the kernel time is the larger of the two);
interconnect and host time add to it. ``total_s`` is that sum; :meth:`StepTime.breakdown`
splits ``total_s`` into the four shares (summing to 1) and :attr:`StepTime.bottleneck` names the
largest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Resource = Literal["memory", "compute", "interconnect", "host"]

#: Order in which shares are reported (and ties broken for the bottleneck).
RESOURCES: tuple[Resource, ...] = ("memory", "compute", "interconnect", "host")


@dataclass(frozen=True)
class StepTime:
    """One engine step's time by resource (s) and the tokens it yields; see the module contract."""

    memory_s: float
    compute_s: float
    interconnect_s: float
    host_s: float
    tokens: float

    def __post_init__(self) -> None:
        for name in ("memory_s", "compute_s", "interconnect_s", "host_s", "tokens"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"StepTime.{name} must be finite and >= 0, got {value!r}")
        if self.total_s <= 0:
            raise ValueError("StepTime needs some time: every component is 0")

    @property
    def kernel_s(self) -> float:
        """GPU kernel time (s): memory and compute overlap, so the larger of the two."""
        return max(self.memory_s, self.compute_s)

    @property
    def total_s(self) -> float:
        """Wall time of the step (s): kernel time plus the interconnect and host time."""
        return self.kernel_s + self.interconnect_s + self.host_s

    @property
    def tokens_per_s(self) -> float:
        """Aggregate tokens per second while steps of this shape repeat."""
        return self.tokens / self.total_s

    def scaled(self, factor: float, tokens: float) -> StepTime:
        """Every time of this step times ``factor``, yielding ``tokens`` (a round of ``pp``
        stage steps, one stage's share of a round, a step stretched to a measured length)."""
        return StepTime(
            memory_s=self.memory_s * factor,
            compute_s=self.compute_s * factor,
            interconnect_s=self.interconnect_s * factor,
            host_s=self.host_s * factor,
            tokens=tokens,
        )

    def breakdown(self) -> dict[Resource, float]:
        """Shares of ``total_s`` per resource, summing to 1.

        The kernel time is charged to memory and compute in proportion to their own times
        (a step that needs 8 ms of reads and 2 ms of math spends its 8 ms kernel 80 % on
        memory), so a nearly balanced step shows both rather than hiding the smaller one.
        """
        total = self.total_s
        both = self.memory_s + self.compute_s
        kernel = self.kernel_s
        memory = kernel * self.memory_s / both if both > 0 else 0.0
        compute = kernel * self.compute_s / both if both > 0 else 0.0
        return {
            "memory": memory / total,
            "compute": compute / total,
            "interconnect": self.interconnect_s / total,
            "host": self.host_s / total,
        }

    @property
    def bottleneck(self) -> Resource:
        """The resource with the largest share of the step."""
        shares = self.breakdown()
        return max(RESOURCES, key=lambda r: shares[r])
