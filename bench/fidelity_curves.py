"""Published power-cap curves (``bench/curves/*.yaml``) run through the simulator, one line each.

A curve file holds what someone measured — a GPU, a workload (model, engine, concurrency,
context, phase), the tokens/s at each power cap, and, where given, the board draw and the
absolute speed — with the source of every figure. This module runs the workload on a
simulated rig of that GPU the way ``rigforge sweep`` would (:class:`tuning.backends.sim.SimRig`:
the step-time model, the power model's DVFS under each cap, NVML's averaging), so the model's
answer comes from the same code as every simulated sweep, and turns each published figure into
a :class:`~fidelity_common.Figure`:

* each capped point: tokens/s at the cap over tokens/s at the file's ``reference_cap_w`` (the
  stock or uncapped point), a **curve** point judged within 5 pp;
* each ``draws`` entry: the board power at a cap, a **ratio** judged within 20 %;
* ``speed``: the absolute tokens/s at a cap, a **ratio** judged within 20 %.

``bench/fidelity.py`` prints these lines after the hand-made figures. To check your own curve::

    .venv/bin/python bench/fidelity_curves.py my-curve.yaml

(no argument: every file of ``bench/curves/``). The file format is in ``docs/fidelity.md``.
Every problem of a file is reported before anything runs, as ``file:line: yaml.path: what is
wrong and the fix``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fidelity_common import Figure
from pydantic import Field, ValidationError

from tuning.backends.sim import SimRig
from tuning.backends.sim_config import load_presets, load_rig_spec
from tuning.core.strict import StrictModel
from tuning.core.yamlsafe import YamlDocument
from tuning.errors import ConfigError, did_you_mean, problems_error, read_yaml_config, yaml_path
from tuning.workloads.spec import WorkloadSpec, parse_workload

CURVES_DIR = Path(__file__).resolve().parent / "curves"

#: Simulated seconds a cap settles before tokens are counted, and the counting window (the
#: published sweeps wait 5-15 s and bench 20-60 s per cap; the simulated card reaches its
#: clock within NVML's 1 s averaging, so these only need to span many steps). Units: s.
SETTLE_S = 30.0
WINDOW_S = 60.0
#: Ambient of the generated rig: a cool open bench, so the cap and not heat sets the clock
#: (every curve here is a power-cap curve; a throttling card would measure its cooler).
#: estimate.
BENCH_AMBIENT_C = 22.0


class Quoted(StrictModel):
    """What every published figure carries: the words or table row it was read from."""

    quote: str = Field(min_length=1, max_length=2000)


class CapPoint(Quoted):
    """Tokens/s measured with every card of the workload capped at ``cap_w`` (W)."""

    cap_w: float = Field(gt=0, le=2000)
    tokens_per_s: float = Field(gt=0, le=1e7)


class DrawPoint(Quoted):
    """Board draw (W, as ``nvidia-smi`` reports it) at ``cap_w``: one value or a range."""

    cap_w: float = Field(gt=0, le=2000)
    draw_low_w: float = Field(gt=0, le=2000)
    draw_high_w: float = Field(gt=0, le=2000)


class SourceSpec(StrictModel):
    """Where the curve was published: an address and where in it."""

    url: str = Field(min_length=8, max_length=500, pattern=r"^https://\S+$")
    where: str = Field(min_length=1, max_length=500)


class CurveFile(StrictModel):
    """One published curve (a ``bench/curves/*.yaml`` file). Units in the names.

    ``gpu``: a preset of ``tuning/backends/presets.yaml`` and ``gpus`` cards of it (the
    generated rig, one slot apart, no P2P); or ``rig``: a rig file (relative to the curve
    file) for a split whose topology matters. ``workload``: a workload file's body
    (``docs/workload.md``). ``estimates``: what the source does not say and the file assumes,
    one line per assumption.
    """

    schema_version: Literal[1]
    title: str = Field(min_length=1, max_length=200)
    source: SourceSpec
    gpu: str | None = None
    gpus: int = Field(default=1, ge=1, le=16)
    rig: str | None = None
    workload: dict[str, Any]
    reference_cap_w: float = Field(gt=0, le=2000)
    points: list[CapPoint] = Field(default_factory=list)
    draws: list[DrawPoint] = Field(default_factory=list)
    speed: CapPoint | None = None
    estimates: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Curve:
    """A validated curve file: its figures and the workload to run (frozen)."""

    path: Path
    name: str
    spec: CurveFile
    workload: WorkloadSpec
    rig: dict[str, Any]
    preset: str
    min_w: float
    max_w: float


def _sub_document(doc: YamlDocument, key: str) -> YamlDocument:
    """The mapping under ``key`` as its own document, keeping the lines of the outer file."""
    prefix = key + "."
    positions = {p[len(prefix) :]: v for p, v in doc.positions.items() if p.startswith(prefix)}
    for p, v in doc.positions.items():
        if p.startswith(key + "[") or p == key:
            positions.setdefault("", v)
    return YamlDocument(data=doc.data[key], source=doc.source, positions=positions)


def _describe(error: Any) -> tuple[str, str]:
    loc = tuple(error["loc"])
    where = yaml_path(loc)
    if error["type"] == "extra_forbidden":
        inner: dict[Any, type[StrictModel]] = {
            "source": SourceSpec,
            "points": CapPoint,
            "speed": CapPoint,
            "draws": DrawPoint,
        }
        known = list((inner.get(loc[0], CurveFile) if len(loc) > 1 else CurveFile).model_fields)
        hint = did_you_mean(str(loc[-1]), known)
        return where, f"unknown key{hint or '; known keys: ' + ', '.join(known)}"
    if error["type"] == "missing":
        return where, "required key missing; add it (docs/fidelity.md lists every key)"
    return (
        where,
        f"{str(error['msg']).removeprefix('Value error, ')} (got {error.get('input')!r:.60})",
    )


def _nested_problems(message: str, source: str) -> list[str]:
    """The workload block's problems (:func:`parse_workload`'s ``source:line: path: what``
    lines) with their YAML paths under ``workload.``, as lines of the curve file's error."""
    out = []
    for line in message.splitlines():
        m = re.match(rf"^\s*-\s*{re.escape(source)}(:\d+)?: (.*)$", line)
        if m is None:
            continue
        rest = m.group(2)
        rest = (
            "workload" + rest[len("(top level)") :]
            if rest.startswith("(top level)")
            else ("workload." + rest)
        )
        out.append(f"  - {source}{m.group(1) or ''}: {rest}")
    return out or [f"  - {source}: workload: {message}"]


def _generated_rig(preset: str, count: int) -> dict[str, Any]:
    """A bench rig of ``count`` cards of ``preset``: one slot apart, no neighbour heating."""
    return {
        "name": f"curve-{preset}-x{count}",
        "description": f"{count}x {preset}, generated for a published cap curve",
        "rack": {"ambient_c": BENCH_AMBIENT_C, "coupling_c_per_w": 0.0, "coupling_decay": 0.35},
        "gpus": [
            {"preset": preset, "slot": 1 + 2 * i, "bus_id": f"00000000:{16 * (i + 1):02x}:00.0"}
            for i in range(count)
        ],
    }


def load_curve(path: str | Path) -> Curve:
    """Read and validate one curve file; :class:`ConfigError` lists every problem as
    ``file:line: yaml.path: what and the fix`` before anything runs."""
    path = Path(path)
    source = str(path)
    doc = read_yaml_config(path, "curve file")
    if not isinstance(doc.data, dict):
        raise problems_error(source, [("(top level)", "expected a mapping (docs/fidelity.md)")])
    try:
        spec = CurveFile.model_validate(doc.data)
    except ValidationError as exc:
        raise problems_error(
            source,
            [_describe(e) for e in exc.errors()],
            doc,
            header=f"{source}: problem(s) in the curve file:",
            indent="  - ",
        ) from None
    problems: list[tuple[str, str]] = []
    nested: list[str] = []
    presets = load_presets().presets
    rig: dict[str, Any] | None = None
    if (spec.gpu is None) == (spec.rig is None):
        problems.append(("gpu", "name exactly one of gpu: (a preset) or rig: (a rig file)"))
    elif spec.gpu is not None:
        if spec.gpu not in presets:
            hint = did_you_mean(spec.gpu, list(presets))
            problems.append(
                (
                    "gpu",
                    f"no preset {spec.gpu!r}{hint}{' ' if hint else '; '}name one of "
                    f"tuning/backends/presets.yaml: {', '.join(sorted(presets))}",
                )
            )
        else:
            rig = _generated_rig(spec.gpu, spec.gpus)
    else:
        rig_path = path.parent / str(spec.rig)
        try:
            rig = read_yaml_config(rig_path, "rig file").data
            load_rig_spec(rig, str(rig_path))  # the rig's own errors, before anything runs
        except ConfigError as exc:
            problems.append(("rig", f"{exc}"))
            rig = None
    workload: WorkloadSpec | None = None
    if not isinstance(spec.workload, dict) or not spec.workload:
        problems.append(("workload", "expected a workload file's body (docs/workload.md)"))
    else:
        try:
            workload = parse_workload(
                _sub_document(doc, "workload"), source=source, base=path.parent
            )
        except ConfigError as exc:
            nested = _nested_problems(str(exc), source)
    preset = ""
    min_w = max_w = 0.0
    if rig is not None and isinstance(rig, dict):
        names = {str(g.get("preset")) for g in rig.get("gpus", []) if isinstance(g, dict)}
        known = [n for n in names if n in presets]
        if known:
            preset = sorted(known)[0]
            min_w = max(presets[n].power.min_w for n in known)
            max_w = min(presets[n].power.max_w for n in known)
    caps = [("reference_cap_w", spec.reference_cap_w)]
    caps += [(f"points[{i}].cap_w", p.cap_w) for i, p in enumerate(spec.points)]
    caps += [(f"draws[{i}].cap_w", d.cap_w) for i, d in enumerate(spec.draws)]
    if spec.speed is not None:
        caps.append(("speed.cap_w", spec.speed.cap_w))
    for where, cap in caps:
        if preset and cap < min_w:
            problems.append(
                (
                    where,
                    f"{cap:g} W is below the {preset} preset's minimum limit "
                    f"{min_w:g} W (nvidia-smi refuses it); drop the point",
                )
            )
    for i, d in enumerate(spec.draws):
        if d.draw_low_w > d.draw_high_w:
            problems.append((f"draws[{i}]", "draw_low_w is above draw_high_w; swap them"))
    if not spec.points and not spec.draws and spec.speed is None:
        problems.append(("points", "no figure: give points:, draws: or speed:"))
    if spec.points and all(p.cap_w != spec.reference_cap_w for p in spec.points):
        problems.append(
            (
                "points",
                f"no point at reference_cap_w {spec.reference_cap_w:g} W: "
                "the curve is relative to it; add that point",
            )
        )
    if problems or nested or workload is None or rig is None:
        err = problems_error(
            source, problems, doc, header=f"{source}: problem(s) in the curve file:", indent="  - "
        )
        raise ConfigError("\n".join([str(err), *nested]))
    return Curve(
        path=path,
        name=path.stem,
        spec=spec,
        workload=workload,
        rig=rig,
        preset=preset,
        min_w=min_w,
        max_w=max_w,
    )


def load_curves(paths: Sequence[Path] | None = None) -> list[Curve]:
    """Every curve of ``paths`` (default: ``bench/curves/*.yaml``, sorted by name)."""
    return [load_curve(p) for p in (paths or sorted(CURVES_DIR.glob("*.yaml")))]


@dataclass(frozen=True)
class Measured:
    """The simulated rig at one cap: the workload's tokens/s and the mean board draw of its
    GPUs (W, NVML's 1 s average at the end of the window)."""

    tokens_per_s: float
    draw_w: float


def run_cap(curve: Curve, cap_w: float) -> Measured:
    """The curve's workload on its rig with every card at ``cap_w`` (W; above the preset's
    max limit the card runs at its max, as ``nvidia-smi -pl`` would refuse more)."""
    return _run(curve.path, cap_w)


@cache
def _run(path: Path, cap_w: float) -> Measured:
    curve = load_curve(path)
    rig = SimRig.from_dict(curve.rig, source=str(path), seed=0)
    handle = rig.run_workload(curve.workload)
    members = [rig.gpu(u) for u in handle.uuids]
    for gpu in members:
        gpu.set_power_limit_w(min(cap_w, gpu.power_constraints().max_w))
    rig.clock.sleep(SETTLE_S)
    start = rig.workload_tokens_total(handle)
    rig.clock.sleep(WINDOW_S)
    tokens_per_s = (rig.workload_tokens_total(handle) - start) / WINDOW_S
    draws = [g.power_draw_w() or 0.0 for g in members]
    return Measured(tokens_per_s=tokens_per_s, draw_w=sum(draws) / len(draws))


def _relative(curve: Curve, cap_w: float, ref_w: float) -> float:
    """Tokens/s at ``cap_w`` over tokens/s at ``ref_w`` (both W) on the curve's rig."""
    return run_cap(curve, cap_w).tokens_per_s / run_cap(curve, ref_w).tokens_per_s


def _draw(curve: Curve, cap_w: float) -> float:
    return run_cap(curve, cap_w).draw_w


def _speed(curve: Curve, cap_w: float) -> float:
    return run_cap(curve, cap_w).tokens_per_s


def _cap_text(curve: Curve, cap_w: float) -> str:
    if curve.max_w and cap_w > curve.max_w:
        return f"{cap_w:g} W (run at the preset's max {curve.max_w:g} W)"
    return f"{cap_w:g} W"


def figures(curve: Curve) -> list[Figure]:
    """The curve's published figures as bench/fidelity.py lines (see the module docstring)."""
    spec = curve.spec
    ref = spec.reference_cap_w
    out: list[Figure] = []
    ref_tps = next((p.tokens_per_s for p in spec.points if p.cap_w == ref), None)
    for p in spec.points:
        if p.cap_w == ref or ref_tps is None:
            continue
        out.append(
            Figure(
                label=f"{curve.name}: {_cap_text(curve, p.cap_w)} / {_cap_text(curve, ref)}",
                kind="curve",
                model=partial(_relative, curve, p.cap_w, ref),
                low=p.tokens_per_s / ref_tps,
                high=p.tokens_per_s / ref_tps,
                unit="x",
                source=f"{spec.source.url} {spec.source.where}: {p.quote}",
            )
        )
    for d in spec.draws:
        out.append(
            Figure(
                label=f"{curve.name}: board draw under a {_cap_text(curve, d.cap_w)} cap",
                kind="ratio",
                model=partial(_draw, curve, d.cap_w),
                low=d.draw_low_w,
                high=d.draw_high_w,
                unit="W",
                source=f"{spec.source.url} {spec.source.where}: {d.quote}",
            )
        )
    if spec.speed is not None:
        s = spec.speed
        out.append(
            Figure(
                label=f"{curve.name}: tokens/s at {_cap_text(curve, s.cap_w)}",
                kind="ratio",
                model=partial(_speed, curve, s.cap_w),
                low=s.tokens_per_s,
                high=s.tokens_per_s,
                unit="tok/s",
                source=f"{spec.source.url} {spec.source.where}: {s.quote}",
            )
        )
    return out


def all_figures(paths: Sequence[Path] | None = None) -> list[Figure]:
    """The figures of every curve file (default: ``bench/curves/*.yaml``)."""
    return [f for c in load_curves(paths) for f in figures(c)]


def __getattr__(name: str) -> Any:
    # bench/fidelity.py reads FIGURES from each module; the curve files load on first use
    if name == "FIGURES":
        return all_figures()
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> int:
    from fidelity import report

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        figs = all_figures([Path(a) for a in args] or None)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return report(figs)


if __name__ == "__main__":
    raise SystemExit(main())
