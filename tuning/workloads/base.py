"""The interface every workload implements: load per GPU, counted in output tokens.

A :class:`Workload` is started and stopped per GPU (by UUID) and keeps a cumulative count of
output tokens per GPU; the sweep measures throughput as Δtokens / Δt over a probe window, so
every workload — simulated, an external command, an HTTP endpoint — is measured the same way.
See :mod:`tuning.workloads` for the specs, the failure and the readiness contracts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

WORKLOAD_CLASSES = ("decode", "prefill", "batched")


class Workload(ABC):
    """Load on GPUs, counted in output tokens."""

    name: str
    #: The load runs outside the rig's model, in real seconds (a worker process, a command,
    #: an HTTP server), so the rig's clock must not run ahead of wall time while it is
    #: measured: :class:`~tuning.sweep.Sweep` calls the clock's
    #: :meth:`~tuning.backends.base.Clock.follow_wall_time` for such a load. Only the
    #: simulated rig's own workload classes live on its (virtual) clock.
    real_time: ClassVar[bool] = True

    @abstractmethod
    def start(self, uuid: str) -> None:
        """Begin loading the GPU (idempotent)."""

    @abstractmethod
    def stop(self, uuid: str) -> None:
        """Stop loading the GPU (idempotent)."""

    @abstractmethod
    def tokens_total(self, uuid: str) -> float:
        """Output tokens produced on the GPU since the workload was created.

        Raises :class:`~tuning.errors.WorkloadFailed` once the load on the GPU has failed
        (what it measured since then is void).
        """

    def ready(self, uuid: str) -> bool:
        """True when :meth:`tokens_total` grows at the rate of the GPU's current operating
        point: a probe window should not start judging before. Loads that count continuously
        are always ready; a ``cmd:`` load is ready once a run started after the last
        :meth:`start`/:meth:`settle` has completed, an ``openai:`` load once such a request
        has completed."""
        return True

    def swept_together(self) -> tuple[str, ...]:
        """UUIDs of GPUs this load runs as one split (a pipeline or tensor-parallel group):
        a sweep then searches one cap for all of them and measures the split's tokens.
        Empty (the default): every GPU is loaded and measured on its own."""
        return ()

    def settle(self, uuid: str) -> None:  # noqa: B027 - optional hook
        """The GPU's operating point (its cap) changed while loaded: :meth:`ready` turns False
        until the load has measured the new point."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything and release resources."""


def text_tail(text: str, chars: int = 300) -> str:
    """The last ``chars`` characters of ``text`` (stripped), for an error message."""
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]
