"""Workloads the tuner loads GPUs with, behind one interface.

A :class:`Workload` is started and stopped per GPU (by UUID) and keeps a cumulative count of
output tokens per GPU; the sweep measures throughput as Δtokens / Δt over a probe window, so
every workload — simulated, an external command, an HTTP endpoint — is measured the same way.

Specs (``rigforge sweep --workload``):

* ``decode`` | ``prefill`` | ``batched`` — on a simulated rig, its workload classes
  (:class:`SimWorkload`); on real GPUs a synthetic load, one worker process per GPU, that
  needs torch or cupy (:class:`SyntheticWorkload`, :mod:`tuning.synthetic`).
* ``FILE.yaml`` — a workload file (:mod:`~tuning.workloads.spec`, docs/workload.md): a model,
  engine, split, concurrency, context and phase the simulated rig runs (one replica per GPU,
  or one split over every GPU of the rig: :meth:`Workload.swept_together`).
* ``cmd:COMMAND`` — run ``COMMAND`` in a loop on each GPU (``CUDA_VISIBLE_DEVICES=<uuid>``,
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, its own process group) and parse tokens/s from each run's
  stdout with a regex whose group ``tps`` is the rate (default: llama-bench's markdown ``t/s``
  column, ``| … | tg 128 | 131.66 ± 0.23 |``; the last match of a run counts). The token
  counter grows continuously at the last completed run's rate (one run late, for at most
  twice that run's duration), so a probe window sees a rate between completions.
* ``openai:URL`` (a rig with one GPU) or ``openai:GPU=URL,GPU=URL,…`` (``GPU``: a UUID or an
  index in the rig's order; every GPU needs its own endpoint) — ``concurrency`` requests in
  flight per GPU against an OpenAI-compatible endpoint (``/v1/completions`` unless the URL
  ends in ``/chat/completions``); output tokens are ``usage.completion_tokens``, credited to
  the GPU whose endpoint answered. One endpoint serving several GPUs is refused: its tokens
  cannot be attributed to one GPU's cap.

Failure contract: :meth:`Workload.tokens_total` (and :meth:`Workload.start`) raise
:class:`~tuning.errors.WorkloadFailed` — a sentence naming the command or endpoint, its exit
status or HTTP error, and what to do — once the load on that GPU has failed, or has produced
no tokens for longer than its own timeout while started. Readiness contract:
:meth:`Workload.ready` is False after :meth:`~Workload.start`/:meth:`~Workload.settle` until
the load has measured the GPU's current operating point; a probe window should only judge
steadiness once it is True.

One backend a module: :mod:`~tuning.workloads.base` (the :class:`Workload` interface),
:mod:`~tuning.workloads.sim`, :mod:`~tuning.workloads.cmd`, :mod:`~tuning.workloads.openai`,
:mod:`~tuning.workloads.synthetic`; :mod:`~tuning.workloads.factory` builds one from a spec.
The names below are the package's public interface.
"""

from tuning.workloads.base import WORKLOAD_CLASSES, Workload
from tuning.workloads.cmd import LLAMA_BENCH_TPS_RE, CmdWorkload, parse_tps
from tuning.workloads.factory import make_workload
from tuning.workloads.openai import LoadResult, OpenAIWorkload, parse_openai_spec, run_openai_load
from tuning.workloads.sim import SimWorkload
from tuning.workloads.spec import WorkloadSpec, load_workload_file, preset_workload
from tuning.workloads.synthetic import SyntheticWorkload, synthetic_backend

__all__ = [
    "LLAMA_BENCH_TPS_RE",
    "WORKLOAD_CLASSES",
    "CmdWorkload",
    "LoadResult",
    "OpenAIWorkload",
    "SimWorkload",
    "SyntheticWorkload",
    "Workload",
    "WorkloadSpec",
    "load_workload_file",
    "make_workload",
    "parse_openai_spec",
    "parse_tps",
    "preset_workload",
    "run_openai_load",
    "synthetic_backend",
]
