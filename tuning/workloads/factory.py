"""Build the workload a spec names (``rigforge sweep --workload``) for a rig."""

from __future__ import annotations

import tuning.workloads.synthetic as synthetic
from tuning.backends.base import Rig
from tuning.backends.sim import SimRig
from tuning.errors import ConfigError, problems_error, read_yaml_config
from tuning.workloads.base import WORKLOAD_CLASSES, Workload
from tuning.workloads.cmd import LLAMA_BENCH_TPS_RE, CmdWorkload
from tuning.workloads.openai import OpenAIWorkload, parse_openai_spec
from tuning.workloads.sim import SimWorkload
from tuning.workloads.sim_draw import SimDrawMirror
from tuning.workloads.spec import is_workload_file, load_workload_file


def make_workload(spec: str, rig: Rig, *, tps_regex: str | None = None) -> Workload:
    """Build the workload named by ``spec`` for ``rig`` (see the module docstring).

    ``tps_regex``: the tokens/s regex of a ``cmd:`` workload (``None``: llama-bench's).
    """
    if spec.startswith("cmd:"):
        return _on_sim(
            CmdWorkload(spec.removeprefix("cmd:"), tps_regex=tps_regex or LLAMA_BENCH_TPS_RE), rig
        )
    if spec.startswith("openai:"):
        return _on_sim(_openai_for_rig(spec.removeprefix("openai:"), rig), rig)
    if is_workload_file(spec):
        described = load_workload_file(spec)  # every problem before any cap changes
        if not isinstance(rig, SimRig):
            raise ConfigError(
                f"{spec}: a workload file describes a model for the simulated rig; on real "
                "GPUs run the engine and measure it: --workload cmd:COMMAND or openai:URL"
            )
        if described.grouped and len(described.gpus) != len(rig.gpus):
            raise problems_error(
                spec,
                [
                    (
                        "gpus",
                        f"names a split over {len(described.gpus)} of the rig's "
                        f"{len(rig.gpus)} GPUs, but a group sweep caps every GPU of the rig: "
                        "name them all, or leave gpus: (and tp/pp) out to sweep one replica "
                        "per GPU",
                    )
                ],
                read_yaml_config(spec, "workload file"),
            )
        return SimWorkload(rig, described)
    if spec in WORKLOAD_CLASSES:
        if hasattr(rig, "set_workload") and hasattr(rig, "tokens_total"):
            return SimWorkload(rig, spec)
        backend = synthetic.synthetic_backend()
        if backend is None:
            raise synthetic.no_synthetic_backend(spec)
        return synthetic.SyntheticWorkload(spec, [gpu.uuid for gpu in rig.gpus], backend=backend)
    raise ConfigError(
        f"unknown workload {spec!r}; choose decode, prefill, batched, a workload file "
        "(FILE.yaml, docs/workload.md), cmd:COMMAND or openai:URL"
    )


def _on_sim(workload: Workload, rig: Rig) -> Workload:
    """A real load on a simulated rig makes the simulated GPUs draw (:mod:`.sim_draw`)."""
    if isinstance(rig, SimRig):
        return SimDrawMirror(workload, rig)
    return workload


def _openai_for_rig(spec: str, rig: Rig) -> OpenAIWorkload:
    """An :class:`OpenAIWorkload` whose endpoints cover every GPU of ``rig`` (checked before
    any cap changes): GPU keys may be UUIDs or indices in the rig's order."""
    pairs = parse_openai_spec(spec)
    uuids = [gpu.uuid for gpu in rig.gpus]
    if None in pairs:
        if len(uuids) > 1:
            raise ConfigError(
                f"openai:{spec} is one endpoint but the rig has {len(uuids)} GPUs under test; "
                "its tokens cannot be attributed per GPU. Name each GPU's endpoint: "
                "openai:0=http://127.0.0.1:8000,1=http://127.0.0.1:8001 (index or UUID)"
            )
        return OpenAIWorkload({uuids[0]: pairs[None]} if uuids else spec)
    mapping: dict[str, str] = {}
    for key, url in pairs.items():
        uuid = (
            uuids[int(key)] if key is not None and key.isdigit() and int(key) < len(uuids) else key
        )
        if uuid not in uuids:
            raise ConfigError(f"openai: workload names GPU {key!r}, which is not on this rig")
        mapping[str(uuid)] = url
    missing = [u for u in uuids if u not in mapping]
    if missing:
        raise ConfigError(
            f"openai:{spec} gives no endpoint for GPU {', '.join(missing)}; every GPU under "
            "test needs its own (UUID=URL or INDEX=URL)"
        )
    return OpenAIWorkload(mapping)
