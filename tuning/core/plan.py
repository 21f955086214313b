"""The plan file: where each model replica runs (``rigforge plan --out``), and its one loader.

The plan is what the deploy renders serving units from, what ``rigforge loop`` writes and what
the verify suite checks; every reader goes through :func:`load_plan` / :func:`parse_plan`,
which refuse any entry whose values could not go into a unit file safely
(:func:`tuning.core.checks.placement_problems`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.core.bus import normalize_bus_id
from tuning.core.checks import placement_problems
from tuning.core.limits import MAX_CPU_ID
from tuning.core.yamlsafe import YamlDocument
from tuning.errors import problems_error, read_yaml_config

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Placement:
    """One placed replica, in the shape the plan YAML and the serving templates consume."""

    model: str
    replica: int
    engine: str
    weights: str
    gpus: tuple[str, ...]  # UUIDs, PCI bus order
    gpu_indices: tuple[int, ...]
    tp: int
    pp: int
    numa_node: int | None
    cpu_list: tuple[int, ...]
    vram_mib: int  # estimate per GPU
    vram_free_mib: tuple[int, ...]  # per GPU after every placement on it
    port: int
    p2p: bool
    worst_link: str
    throughput: float
    gpu_memory_utilization: float
    context: int
    max_sequences: int
    kv_cache_bits: int
    shared: bool
    extra_args: tuple[str, ...]
    #: The engine's compute threads per process from the CPU plan (llama.cpp ``--threads``,
    #: ``OMP_NUM_THREADS`` of a vLLM/SGLang worker); ``None``: no CPU plan, engine default.
    threads: int | None = None
    # The step-time model's prediction (tuning/model/serving.py): aggregate and per-sequence
    # decode tokens/s, prefill tokens/s, time to first token (s), the step's bottleneck and
    # its shares (memory, compute, interconnect, host; summing to 1).
    tokens_per_s: float = 0.0
    tokens_per_s_per_seq: float = 0.0
    prefill_tokens_per_s: float = 0.0
    ttft_s: float = 0.0
    bottleneck: str = ""
    breakdown: Mapping[str, float] = field(default_factory=dict)
    #: The best split or GPU set this replica did not get, and why (one sentence).
    alternative: str = ""
    alternative_tokens_per_s: float | None = None
    #: Per GPU (order of ``gpus``): the power limit the prediction is under (W; the profile's
    #: cap, else the GPU's limit; ``None`` unknown) and the SM clock it runs decode at (MHz).
    caps_w: tuple[float | None, ...] = ()
    clock_mhz: tuple[float, ...] = ()

    def to_yaml(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "replica": self.replica,
            "engine": self.engine,
            "weights": self.weights,
            "gpus": list(self.gpus),
            "gpu_indices": list(self.gpu_indices),
            "tp": self.tp,
            "pp": self.pp,
            "numa_node": self.numa_node,
            "cpu_list": list(self.cpu_list),
            "vram_mib": self.vram_mib,
            "vram_free_mib": list(self.vram_free_mib),
            "port": self.port,
            "p2p": self.p2p,
            "worst_link": self.worst_link,
            "throughput_rel": round(self.throughput, 4),
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "context": self.context,
            "max_sequences": self.max_sequences,
            "kv_cache_bits": self.kv_cache_bits,
            "shared": self.shared,
            "extra_args": list(self.extra_args),
            "threads": self.threads,
            "tokens_per_s": round(self.tokens_per_s, 3),
            "tokens_per_s_per_seq": round(self.tokens_per_s_per_seq, 3),
            "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 3),
            "ttft_s": round(self.ttft_s, 4),
            "bottleneck": self.bottleneck,
            "breakdown": {k: round(v, 4) for k, v in self.breakdown.items()},
            "alternative": {
                "tokens_per_s": None
                if self.alternative_tokens_per_s is None
                else round(self.alternative_tokens_per_s, 3),
                "why": self.alternative,
            },
            "caps_w": [None if c is None else round(c, 1) for c in self.caps_w],
            "clock_mhz": [round(c) for c in self.clock_mhz],
        }

    @classmethod
    def from_yaml(cls, data: Mapping[str, Any]) -> Placement:
        """Rebuild from a plan YAML entry (what the deploy reads back).

        Raises ``ValueError`` naming the field when a value could not go into a unit file
        safely (control characters, quotes, secrets in ``extra_args``, a GPU that is not a
        UUID/bus id; see :func:`tuning.core.checks.placement_problems`).
        """
        numa_node = data.get("numa_node")
        placement = cls(
            model=str(data["model"]),
            replica=int(data.get("replica", 0)),
            engine=str(data["engine"]),
            weights=str(data.get("weights") or data["model"]),
            gpus=tuple(data["gpus"]),
            gpu_indices=tuple(int(i) for i in data.get("gpu_indices") or ()),
            tp=int(data.get("tp", 1)),
            pp=int(data.get("pp", 1)),
            numa_node=None if numa_node is None else int(numa_node),
            cpu_list=tuple(int(c) for c in data.get("cpu_list") or ()),
            vram_mib=int(data.get("vram_mib", 0)),
            vram_free_mib=tuple(int(v) for v in data.get("vram_free_mib") or ()),
            port=int(data["port"]),
            p2p=bool(data.get("p2p", True)),
            worst_link=str(data.get("worst_link", "X")),
            throughput=float(data.get("throughput_rel", 0.0)),
            gpu_memory_utilization=float(data.get("gpu_memory_utilization", 0.9)),
            context=int(data.get("context", 0)),
            max_sequences=int(data.get("max_sequences", 1)),
            kv_cache_bits=int(data.get("kv_cache_bits", 16)),
            shared=bool(data.get("shared", False)),
            extra_args=tuple(data.get("extra_args") or ()),
            threads=data.get("threads"),
            tokens_per_s=float(data.get("tokens_per_s", 0.0)),
            tokens_per_s_per_seq=float(data.get("tokens_per_s_per_seq", 0.0)),
            prefill_tokens_per_s=float(data.get("prefill_tokens_per_s", 0.0)),
            ttft_s=float(data.get("ttft_s", 0.0)),
            bottleneck=str(data.get("bottleneck", "")),
            breakdown={str(k): float(v) for k, v in (data.get("breakdown") or {}).items()},
            alternative=str((data.get("alternative") or {}).get("why", "")),
            alternative_tokens_per_s=_optional_float(
                (data.get("alternative") or {}).get("tokens_per_s")
            ),
            caps_w=tuple(_optional_float(c) for c in data.get("caps_w") or ()),
            clock_mhz=tuple(float(c) for c in data.get("clock_mhz") or ()),
        )
        problems = placement_problems(placement)
        if problems:
            raise PlacementRefused(placement.model, problems)
        return placement


class PlacementRefused(ValueError):
    """A plan entry holding what must not reach a unit; ``problems`` are ``(field, sentence)``
    (the field relative to the entry: ``port``, ``gpus[0]``)."""

    def __init__(self, model: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(
            f"placement of {model!r}: " + "; ".join(f"{where}: {why}" for where, why in problems)
        )
        self.problems = problems


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Unplaced:
    """A replica that could not be placed, and why."""

    model: str
    replica: int
    reason: str


_BUS_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]")


@dataclass(frozen=True)
class GpuIrqCpus:
    """Where one GPU's interrupts go (``/proc/irq/N/smp_affinity_list``): the GPU and the CPUs
    of its unit (the housekeeping CPUs for a GPU no unit uses), from the CPU plan. ``gpu`` is
    the id the CPU plan was given; in the plan file a PCI bus id (``dddd:bb:dd.f``), which is
    what the boot-time IRQ script finds a GPU by."""

    gpu: str
    cpus: tuple[int, ...]

    @classmethod
    def from_yaml(cls, data: Mapping[str, Any]) -> GpuIrqCpus:
        """An ``irq_cpus[]`` entry; ``ValueError`` for a bus id or CPU list that could not go
        into the IRQ-pinning script safely."""
        bus = normalize_bus_id(str(data["gpu"]))
        if not _BUS_ID.fullmatch(bus):
            raise ValueError(f"irq_cpus: {str(data['gpu'])[:40]!r} is not a PCI bus id")
        cpus = data.get("cpus")
        if (
            not isinstance(cpus, list)
            or not cpus
            or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_CPU_ID
                for c in cpus
            )
        ):
            raise ValueError(f"irq_cpus: {bus}: cpus is not a list of CPU ids")
        return cls(gpu=bus, cpus=tuple(sorted(set(cpus))))


@dataclass(frozen=True)
class Plan:
    """The solver's answer, with the evidence for it."""

    rig_name: str
    fingerprint: str
    headroom_pct: float
    placements: tuple[Placement, ...]
    unplaced: tuple[Unplaced, ...]
    score: float
    alternative_score: float | None
    alternative: str  # one sentence: what the best alternative was
    power: Mapping[str, str] = field(default_factory=dict)
    #: CPUs kept for the OS, sshd, irqbalance and non-GPU interrupts (the CPU plan); empty
    #: when no CPU plan was made.
    housekeeping_cpus: tuple[int, ...] = ()
    #: Each GPU's IRQ CPUs (the CPU plan), by PCI bus id; empty when no CPU plan was made.
    irq_cpus: tuple[GpuIrqCpus, ...] = ()

    @property
    def tokens_per_s_total(self) -> float:
        """Σ of the placements' predicted aggregate decode tokens/s (not priority-weighted:
        what the rig serves in all, the figure ``rigforge loop``'s serving run measures)."""
        return sum(p.tokens_per_s for p in self.placements)

    def to_yaml(self) -> dict[str, Any]:
        """The plan file the deploy consumes (``schema_version: 1``)."""
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "rig": {"name": self.rig_name, "fingerprint": self.fingerprint},
            "headroom_pct": self.headroom_pct,
            "placements": [p.to_yaml() for p in self.placements],
            "unplaced": [
                {"model": u.model, "replica": u.replica, "reason": u.reason} for u in self.unplaced
            ],
            "score": round(self.score, 6),
            "tokens_per_s_total": round(self.tokens_per_s_total, 3),
            "alternative_score": (
                None if self.alternative_score is None else round(self.alternative_score, 6)
            ),
            "alternative": self.alternative,
            "housekeeping_cpus": list(self.housekeeping_cpus),
            "irq_cpus": [{"gpu": i.gpu, "cpus": list(i.cpus)} for i in self.irq_cpus],
        }

    def to_json(self) -> dict[str, Any]:
        """The ``rigforge plan --json`` document."""
        doc = self.to_yaml()
        doc["placements"] = [
            {
                "model": p.model,
                "gpus": list(p.gpus),
                "tp": p.tp,
                "pp": p.pp,
                "numa_node": p.numa_node,
                "vram_mib": p.vram_mib,
                **{
                    k: v
                    for k, v in p.to_yaml().items()
                    if k not in {"model", "gpus", "tp", "pp", "numa_node", "vram_mib"}
                },
            }
            for p in self.placements
        ]
        return doc


def load_plan(path: str | Path) -> Plan:
    """Read a plan YAML written by ``rigforge plan --out``."""
    path = Path(path)
    doc = read_yaml_config(path, "plan")
    return parse_plan(doc.data, str(path), doc)


def parse_placements(entries: Any) -> tuple[Placement, ...]:
    """The ``placements:`` list of a plan document; ``ValueError``/``KeyError`` on a bad entry."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise TypeError(f"placements is a {type(entries).__name__}, not a list")
    return tuple(Placement.from_yaml(p) for p in entries)


def parse_plan(data: Any, source: str = "<plan>", doc: YamlDocument | None = None) -> Plan:
    """Validate a parsed plan document; :class:`ConfigError` names ``source``, the line (when
    ``doc``, the parsed file, is given), the YAML path of every bad entry and the fix."""
    rerun = "rerun 'rigforge plan'"
    if not isinstance(data, dict) or data.get("schema_version") != PLAN_SCHEMA_VERSION:
        raise problems_error(
            source, [("schema_version", f"not a rigforge plan (schema_version: 1); {rerun}")], doc
        )
    entries = data.get("placements")
    if entries is not None and not isinstance(entries, list):
        raise problems_error(
            source, [("placements", f"is a {type(entries).__name__}, not a list; {rerun}")], doc
        )
    problems: list[tuple[str, str]] = []
    placements: list[Placement] = []
    for i, entry in enumerate(entries or ()):
        where = f"placements[{i}]"
        try:
            if not isinstance(entry, Mapping):
                raise TypeError(f"is a {type(entry).__name__}, not a mapping")
            placements.append(Placement.from_yaml(entry))
        except PlacementRefused as refused:
            problems += [(f"{where}.{field}", f"{why}; {rerun}") for field, why in refused.problems]
        except KeyError as error:
            problems.append((f"{where}.{error.args[0]}", f"required key missing; {rerun}"))
        except (TypeError, ValueError) as error:
            problems.append((where, f"malformed plan entry ({error}); {rerun}"))
    if problems:
        raise problems_error(source, problems, doc)
    try:
        return Plan(
            rig_name=str((data.get("rig") or {}).get("name", "")),
            fingerprint=str((data.get("rig") or {}).get("fingerprint", "")),
            headroom_pct=float(data.get("headroom_pct", 10)),
            placements=tuple(placements),
            unplaced=tuple(
                Unplaced(str(u["model"]), int(u.get("replica", 0)), str(u["reason"]))
                for u in data.get("unplaced") or ()
            ),
            score=float(data.get("score", 0.0)),
            alternative_score=data.get("alternative_score"),
            alternative=str(data.get("alternative", "")),
            housekeeping_cpus=tuple(int(c) for c in data.get("housekeeping_cpus") or ()),
            irq_cpus=tuple(GpuIrqCpus.from_yaml(i) for i in data.get("irq_cpus") or ()),
        )
    except KeyError as error:
        raise problems_error(
            source, [("(top level)", f"an entry has no {error.args[0]!r}; {rerun}")], doc
        ) from None
    except (TypeError, ValueError, AttributeError) as error:
        raise problems_error(
            source, [("(top level)", f"malformed plan ({error}); {rerun}")], doc
        ) from None
