"""The whole story in one run: inspect → stock → sweep → tuned → plan → serving run → rendered
deploy files.

:func:`run_loop` is what ``rigforge loop`` runs (the command adds progress bars and tables).
On a simulated rig (``sim:NAME`` or a rig YAML file; never ``nvml``):

1. **inspect**: a :class:`~tuning.core.rig.RigSnapshot` of a fresh rig;
2. **stock**: a fresh rig (same seed) at every GPU's default power limit runs the workload on
   every GPU for ``sustained_s`` (30 simulated minutes) —
   :func:`tuning.sustained.sustained_run` (what it measures is said there);
3. **sweep**: :class:`~tuning.sweep.Sweep` (adaptive search, the policy, heat-soak) inside a
   :class:`~tuning.apply.session.SafetySession`, writing ``OUT/profile.yaml``, ``OUT/curves.png``,
   ``OUT/heat_soak.png``;
4. **tuned**: the same sustained run on a fresh rig at the profile's caps;
5. **plan**: :func:`tuning.placement.plan` of the models file with the profile's hints →
   ``OUT/plan.yaml``;
6. **serving run**: every placement of the plan served at once on a fresh rig at the
   profile's caps for ``sustained_s``, tokens counted per placement, predicted vs measured
   (:func:`tuning.serving_run.serving_run`);
7. **render**: every file a deploy would write for that profile and plan, into
   ``OUT/rendered/`` mirroring the target paths (:func:`render_deploy_files`), through the
   renderer the deploys use (:mod:`tuning.render`: one environment, one unit-text writer).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuning.backends import DEFAULT_RIG, open_rig
from tuning.backends.base import Rig
from tuning.budget import Policy
from tuning.core.rig import RigSnapshot
from tuning.cpuplan.plan import CpuPlan
from tuning.errors import ConfigError
from tuning.placement import Plan, load_profile_hints, plan
from tuning.serving_run import ServingRun, serving_run
from tuning.sustained import SustainedProgress, SustainedRun, sustained_run
from tuning.sweep import Sweep, SweepConfig, SweepResult
from tuning.workloads import make_workload

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The reference three-model scenario (relative to the working directory, else the checkout).
DEFAULT_MODELS = Path("inventory/examples/models-reference.yaml")
#: Where each rendered deploy file lands relative to ``OUT`` (mirrors the target path).
RENDERED_DIR = "rendered"
#: The target paths of the profile and the plan on the host.
PROFILE_TARGET = "/etc/rigforge/profile.yaml"
PLAN_TARGET = "/etc/rigforge/plan.yaml"
#: How long stage 1 loads the GPUs before reading their PCIe links. Units: s (rig clock).
LINK_LOAD_S = 2.0


def default_models_path() -> Path:
    """``inventory/examples/models-reference.yaml`` here, else the one in this checkout."""
    return DEFAULT_MODELS if DEFAULT_MODELS.is_file() else REPO_ROOT / DEFAULT_MODELS


@dataclass(frozen=True)
class LoopConfig:
    """What one loop runs. Durations are rig-clock seconds (virtual on a simulated rig).

    ``sustained_s``: length of the stock and the tuned sustained runs; ``heat_soak_s``: the
    sweep's heat-soak; ``sample_period_s``: telemetry period of the sustained runs;
    ``plots``: write the PNG plots (matplotlib costs about a second; tests skip it).
    """

    rig_spec: str = DEFAULT_RIG
    models_path: Path | None = None
    workload: str = "decode"
    policy: Policy = Policy.EFFICIENCY
    floor: float = 0.95
    out: Path = Path("out")
    seed: int = 0
    sustained_s: float = 1800.0
    heat_soak_s: float = 1800.0
    full_soak: bool = False
    sample_period_s: float = 1.0
    plots: bool = True

    def check(self) -> None:
        """Refuse what the loop cannot do safely (:class:`ConfigError` with the way out)."""
        if self.rig_spec == "nvml":
            raise ConfigError(
                "rigforge loop runs stock and tuned sustained loads and changes power caps on "
                "fresh simulated rigs; it does not drive real GPUs. On this machine run "
                "'rigforge sweep --rig nvml --out DIR' (it journals and restores the original "
                "settings), then 'rigforge plan --rig nvml --profile DIR/profile.yaml'"
            )
        if self.sustained_s <= 0 or self.heat_soak_s <= 0 or self.sample_period_s <= 0:
            raise ConfigError("sustained_s, heat_soak_s and sample_period_s must be positive")


# --------------------------------------------------------------------------------------------
# Sustained runs
# --------------------------------------------------------------------------------------------


def stock_caps_w(rig: Rig) -> dict[str, float]:
    """Every GPU's default (stock) power limit, by UUID. Units: W."""
    return {g.uuid: g.power_constraints().default_w for g in rig.gpus}


def measure(
    rig_spec: str,
    caps_w: Mapping[str, float] | None,
    *,
    label: str,
    workload: str,
    seed: int,
    duration_s: float,
    sample_period_s: float = 1.0,
    progress: SustainedProgress | None = None,
) -> SustainedRun:
    """A sustained run on a FRESH simulated rig (``caps_w`` None: stock caps).

    A fresh rig starts cold and with the same seed every time, so stock and tuned differ
    only in their caps. Refuses ``nvml`` (see :meth:`LoopConfig.check`).
    """
    LoopConfig(rig_spec=rig_spec).check()
    rig = open_rig(rig_spec, seed=seed)
    load = make_workload(workload, rig)
    try:
        return sustained_run(
            rig,
            load,
            stock_caps_w(rig) if caps_w is None else caps_w,
            label=label,
            duration_s=duration_s,
            sample_period_s=sample_period_s,
            progress=progress,
        )
    finally:
        load.close()
        rig.close()


# --------------------------------------------------------------------------------------------
# Rendering what a deploy would write
# --------------------------------------------------------------------------------------------


def deploy_files(profile_path: Path, result_plan: Plan) -> dict[str, str]:
    """``{target path: content}`` of every file the deploys write for this profile and plan.

    The same :class:`~tuning.render.files.FileSpec` values the deploys put
    (``deploys/gpu_settings.py``, ``pcie.py``, ``affinity.py``, ``serving.py``), rendered by
    the same renderer with the inventory's defaults (tuner installed, ASPM ``performance``,
    IRQs pinned, irqbalance banned, serving on 127.0.0.1 as the ``rigforge`` user). No
    pyinfra: a core install (``pip install -e .``) renders the same files as ``[all]``.
    """
    from inventory.schema import HostConfig
    from tuning.core.cpu import format_cpu_list
    from tuning.render import files as specs
    from tuning.serving import render_serving_units

    # a host entry with every section at its default (what the deploy would do unasked)
    config = HostConfig.model_validate(
        {"ssh": {"host": "127.0.0.1"}, "power": {"profile": str(profile_path)}}
    )
    wanted = [
        specs.settings_unit(config, specs.caps_w(config), use_tuner=True),
        specs.grub_fragment(),
        *specs.irq_pinning_files(
            config,
            irq_cpus={i.gpu: format_cpu_list(i.cpus) for i in result_plan.irq_cpus},
        ),
        *specs.irqbalance_files(),
    ]
    files: dict[str, str] = {
        PROFILE_TARGET: profile_path.read_text(encoding="utf-8"),
        PLAN_TARGET: yaml.safe_dump(result_plan.to_yaml(), sort_keys=False, allow_unicode=True),
        **{spec.dest: spec.render() for spec in wanted},
    }
    # the host config says the caps exist, so serving requires the GPU-settings unit
    files.update(render_serving_units(result_plan, host_config=config))
    return files


def render_deploy_files(profile_path: Path, result_plan: Plan, root: Path) -> dict[str, Path]:
    """Write :func:`deploy_files` under ``root`` mirroring target paths; ``{target: local}``.

    ``root`` is emptied first, so it never holds a file a previous plan rendered (a serving
    unit of a model no longer placed).
    """
    if root.exists():
        shutil.rmtree(root)
    written: dict[str, Path] = {}
    for target, content in sorted(deploy_files(profile_path, result_plan).items()):
        local = root / target.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(content, encoding="utf-8")
        written[target] = local
    return written


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class LoopObserver:
    """Hooks the command line uses to show progress; every hook here does nothing."""

    def stage(self, number: int, title: str) -> None:
        """Stage ``number`` of :data:`STAGES` begins."""

    def log(self, message: str) -> None:
        """A one-line note (safety session, recovered journals)."""

    def inspected(self, snapshot: RigSnapshot) -> None:
        """The rig as stage 1 found it."""

    def sweep_begin(self, names: Mapping[str, str]) -> None:
        """The sweep starts on these GPUs (``{uuid: label}``)."""

    def sweep_event(self, uuid: str, event: str, details: Mapping[str, Any]) -> None:
        """:data:`tuning.sweep.Progress` events: probe, done, soak, soak_done."""

    def sweep_end(self) -> None:
        """The sweep finished (or failed)."""

    def sustained(self, label: str, elapsed_s: float, total_s: float) -> None:
        """A sustained run progressed (about once a simulated minute)."""


STAGES = (
    "inspect",
    "stock baseline",
    "sweep",
    "tuned run",
    "plan",
    "serving run",
    "render deploy files",
    "summary",
)


@dataclass(frozen=True)
class LoopFiles:
    """Where the loop wrote its artefacts (local paths)."""

    profile: Path
    plan: Path
    curves_png: Path | None
    heat_soak_png: Path | None
    rendered_root: Path
    rendered: Mapping[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": str(self.profile),
            "plan": str(self.plan),
            "curves_png": None if self.curves_png is None else str(self.curves_png),
            "heat_soak_png": None if self.heat_soak_png is None else str(self.heat_soak_png),
            "rendered_root": str(self.rendered_root),
            "rendered": {target: str(local) for target, local in sorted(self.rendered.items())},
        }


@dataclass(frozen=True)
class LoopResult:
    """Everything one loop measured and wrote."""

    config: LoopConfig
    snapshot: RigSnapshot
    stock: SustainedRun
    sweep: SweepResult
    tuned: SustainedRun
    plan: Plan
    files: LoopFiles
    wall_s: float
    #: The CPU plan beside ``plan`` (``None`` when the rig file has no ``cpu:`` section).
    cpu_plan: CpuPlan | None = None
    #: Per placement, predicted decode tok/s with shared vs partitioned cores.
    core_shares: tuple[CoreShare, ...] = ()
    #: The plan served on a fresh rig at the tuned caps: predicted vs measured tokens/s.
    serving: ServingRun | None = None

    @property
    def tuned_ok(self) -> bool:
        """The tuned config ran without a throttle event with every circuit inside its budget
        and every PSU inside its rating."""
        return (
            self.tuned.throttle_events == 0
            and self.tuned.circuits_within_budget
            and self.tuned.psus_within_rating
        )

    @property
    def stock_problem(self) -> bool:
        """Stock showed what tuning is for: throttling, a circuit over budget or a PSU over
        its rating."""
        return (
            self.stock.throttle_events > 0
            or not self.stock.circuits_within_budget
            or not self.stock.psus_within_rating
        )

    def circuits_json(self) -> list[dict[str, Any]]:
        tuned = {c.name: c for c in self.tuned.circuits}
        return [
            {
                "name": c.name,
                "budget_w": round(c.budget_w, 1),
                "stock": c.to_json(),
                "tuned": tuned[c.name].to_json(),
            }
            for c in self.stock.circuits
        ]

    def to_json(self) -> dict[str, Any]:
        """The ``rigforge loop --json`` document."""
        return {
            "rig": {
                "name": self.snapshot.name,
                "spec": self.config.rig_spec,
                "fingerprint": self.snapshot.fingerprint(),
                "seed": self.config.seed,
            },
            "workload": self.config.workload,
            "policy": str(self.config.policy),
            "stock": self.stock.to_json(),
            "tuned": self.tuned.to_json(),
            "circuits": self.circuits_json(),
            "sweep": self.sweep.to_json(),
            "plan": self.plan.to_json(),
            "cpu_plan": None if self.cpu_plan is None else self.cpu_plan.to_json(),
            "core_shares": [c.to_json() for c in self.core_shares],
            "serving_run": None if self.serving is None else self.serving.to_json(),
            "files": self.files.to_json(),
            "verdict": {
                "tuned_ok": self.tuned_ok,
                "stock_problem": self.stock_problem,
                "serving_within_bar": None if self.serving is None else self.serving.within_bar,
            },
            "wall_s": round(self.wall_s, 2),
        }


@dataclass(frozen=True)
class CoreShare:
    """One placement's predicted decode throughput (tokens/s, the plan's prediction:
    :func:`tuning.placement.scoring.group_prediction`, under the same caps, link and context)
    on ``shared`` cores — every unit's ``CPUAffinity=`` its whole NUMA node, as before the CPU
    plan: the node's cores, shared with the other units there — and on its ``partitioned``
    cores from the CPU plan, alone."""

    unit: str
    shared_cores: int
    shared_with: int
    partitioned_cores: int
    shared_tok_s: float
    partitioned_tok_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "shared": {
                "cores": self.shared_cores,
                "other_engines": self.shared_with,
                "decode_tok_s": round(self.shared_tok_s, 2),
            },
            "partitioned": {
                "cores": self.partitioned_cores,
                "decode_tok_s": round(self.partitioned_tok_s, 2),
            },
        }


def core_shares(
    snapshot: RigSnapshot,
    models: Any,
    hints: Any,
    placed: Plan,
    cpu_plan: CpuPlan,
    topo: Any,
) -> tuple[CoreShare, ...]:
    """:class:`CoreShare` of every placement of ``placed`` (see there); ``hints``: the
    profile's (:class:`tuning.placement.ProfileHints`) the plan was made with."""
    from tuning.placement import build_problem
    from tuning.placement.scoring import group_prediction

    problem = build_problem(snapshot, models, hints)
    position = {g.uuid: g.position for g in problem.gpus}
    spec_of = {m.name: m for m in models.models}
    node_units: dict[int | None, int] = {}
    for p in placed.placements:
        node_units[p.numa_node] = node_units.get(p.numa_node, 0) + 1
    out: list[CoreShare] = []
    for p, unit in zip(placed.placements, cpu_plan.units, strict=True):
        if p.model not in spec_of or any(g not in position for g in p.gpus):
            continue
        mask = sum(1 << position[g] for g in p.gpus)
        node = topo.node(p.numa_node if p.numa_node is not None else topo.nodes[0].node)
        node_cores = len({topo.core_of(c).key for c in node.cpus})
        others = node_units.get(p.numa_node, 1) - 1
        spec = spec_of[p.model]

        def tok_s(
            cores: int, sharing: int, spec: Any = spec, mask: int = mask, p: Any = p
        ) -> float:
            prediction, _ = group_prediction(
                problem.gpus,
                mask,
                p.tp,
                p.pp,
                problem.links,
                spec,
                problem.measured,
                cores=cores,
                other_engines=sharing,
            )
            return prediction.tokens_per_s

        out.append(
            CoreShare(
                unit=unit.name,
                shared_cores=node_cores,
                shared_with=others,
                partitioned_cores=unit.cores,
                shared_tok_s=tok_s(node_cores, others),
                partitioned_tok_s=tok_s(unit.cores, 0),
            )
        )
    return tuple(out)


def inspect_under_load(
    rig_spec: str, workload: str, *, seed: int, load_s: float = LINK_LOAD_S
) -> RigSnapshot:
    """Snapshot a fresh rig with every GPU busy for ``load_s``: an idle GPU downtrains its
    PCIe link to save power, so only a loaded link says whether a riser really holds it back.
    (The fingerprint covers identities only, so it is the idle snapshot's.)"""
    LoopConfig(rig_spec=rig_spec).check()
    rig = open_rig(rig_spec, seed=seed)
    load = make_workload(workload, rig)
    try:
        for gpu in rig.gpus:
            load.start(gpu.uuid)
        rig.clock.sleep(load_s)
        return rig.snapshot()
    finally:
        load.close()
        rig.close()


def _run_sweep(cfg: LoopConfig, observer: LoopObserver) -> SweepResult:
    """The sweep exactly as ``rigforge sweep`` runs it: journaled, restored, resumable."""
    from tuning.apply.actuator import open_tuning_rig
    from tuning.apply.journal import recover_stale_journals
    from tuning.apply.session import SafetySession

    recover_stale_journals(observer.log, keep_spec=cfg.rig_spec)
    rig, actuator = open_tuning_rig(cfg.rig_spec, seed=cfg.seed)
    config = SweepConfig(
        workload=cfg.workload,
        policy=cfg.policy,
        floor=cfg.floor,
        seed=cfg.seed,
        heat_soak_s=cfg.heat_soak_s,
        full_soak=cfg.full_soak,
    )
    load = make_workload(cfg.workload, rig)
    observer.sweep_begin({g.uuid: f"GPU {g.index} {g.name}" for g in rig.gpus})
    try:
        with SafetySession(
            actuator, sweep_key=config.resume_key(cfg.rig_spec), log=observer.log
        ) as session:
            sweep = Sweep(
                rig,
                actuator,
                load,
                config,
                session=session,
                progress=observer.sweep_event,
                rig_spec=cfg.rig_spec,
            )
            return sweep.run()
    finally:
        observer.sweep_end()
        load.close()
        rig.close()


def run_loop(cfg: LoopConfig, observer: LoopObserver | None = None) -> LoopResult:
    """Run stages 1–7 (see the module docstring) and return what they measured and wrote."""
    from inventory.models import load_models
    from tuning.cpuplan.placements import (
        check_models_pins,
        load_cpu_topology,
        with_models_cpu_plan,
    )
    from tuning.profile import dump_profile, profile_from_result
    from tuning.report import PlotsUnavailable, plot_curves, plot_heat_soak

    cfg.check()
    obs = observer or LoopObserver()
    started = time.perf_counter()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    models_path = cfg.models_path or default_models_path()
    models = load_models(models_path)  # fail on a bad models file before 2 minutes of work
    topo = load_cpu_topology(cfg.rig_spec)
    if topo is not None:
        check_models_pins(topo, models, str(models_path))

    obs.stage(1, STAGES[0])
    snapshot = inspect_under_load(cfg.rig_spec, cfg.workload, seed=cfg.seed)
    obs.inspected(snapshot)

    def run(label: str, caps_w: Mapping[str, float] | None) -> SustainedRun:
        return measure(
            cfg.rig_spec,
            caps_w,
            label=label,
            workload=cfg.workload,
            seed=cfg.seed,
            duration_s=cfg.sustained_s,
            sample_period_s=cfg.sample_period_s,
            progress=obs.sustained,
        )

    obs.stage(2, STAGES[1])
    stock = run("stock", None)

    obs.stage(3, STAGES[2])
    result = _run_sweep(cfg, obs)
    profile_path = out / "profile.yaml"
    dump_profile(profile_from_result(result), profile_path)
    curves = soak = None
    if cfg.plots:
        try:
            curves = plot_curves(result, out / "curves.png")
            soak = plot_heat_soak(result, out / "heat_soak.png")
        except PlotsUnavailable as error:  # a core install has no matplotlib: skip, say so
            obs.log(f"no plots: {error}")

    obs.stage(4, STAGES[3])
    tuned_caps = {g.uuid: g.cap_w for g in result.gpus}
    tuned = run("tuned", tuned_caps)

    obs.stage(5, STAGES[4])
    hints = load_profile_hints(profile_path)
    placed = plan(snapshot, models, hints)
    cpu_plan = None
    if topo is not None:
        placed, cpu_plan = with_models_cpu_plan(placed, snapshot, topo, models, str(models_path))
    plan_path = out / "plan.yaml"
    plan_path.write_text(
        yaml.safe_dump(placed.to_yaml(), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )

    obs.stage(6, STAGES[5])
    served = serving_run(
        cfg.rig_spec,
        tuned_caps,
        placed,
        models,
        seed=cfg.seed,
        duration_s=cfg.sustained_s,
        sample_period_s=cfg.sample_period_s,
        progress=obs.sustained,
    )

    obs.stage(7, STAGES[6])
    rendered_root = out / RENDERED_DIR
    rendered = render_deploy_files(profile_path, placed, rendered_root)

    files = LoopFiles(
        profile=profile_path,
        plan=plan_path,
        curves_png=curves,
        heat_soak_png=soak,
        rendered_root=rendered_root,
        rendered=rendered,
    )
    return LoopResult(
        config=cfg,
        snapshot=snapshot,
        stock=stock,
        sweep=result,
        tuned=tuned,
        plan=placed,
        files=files,
        wall_s=time.perf_counter() - started,
        cpu_plan=cpu_plan,
        core_shares=core_shares(snapshot, models, hints, placed, cpu_plan, topo)
        if cpu_plan is not None and topo is not None
        else (),
        serving=served,
    )


def serving_unit_paths(files: LoopFiles) -> Sequence[Path]:
    """The rendered serving units (``rigforge-serve-*.service``), in path order."""
    return [
        local
        for target, local in sorted(files.rendered.items())
        if target.rsplit("/", 1)[-1].startswith("rigforge-serve-")
    ]
