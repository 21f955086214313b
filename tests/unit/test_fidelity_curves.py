"""The published cap curves of ``bench/curves/*.yaml`` (bench/fidelity_curves.py): every file
loads, every figure carries its source and quote, and a malformed file is refused with the file,
the line, the YAML path and the fix before anything runs."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.bench import BENCH, bench_module
from tuning.errors import ConfigError

CURVES = sorted((BENCH / "curves").glob("*.yaml"))


@pytest.fixture(scope="module")
def fc() -> ModuleType:
    return bench_module("fidelity_curves")


GOOD = """\
schema_version: 1
title: a 3090 decode
source:
  url: https://example.org/sweep
  where: table 1
gpu: rtx3090
workload:
  model:
    name: m
    engine: llama.cpp
    weights: x/y
    params_b: 8
    quant_bits: 4.5
    layers: 32
    attention_heads: 32
    kv_heads: 8
    head_dim: 128
    context: 8192
  context: 2048
reference_cap_w: 350
points:
  - {cap_w: 250, tokens_per_s: 90, quote: "250 W | 90"}
  - {cap_w: 350, tokens_per_s: 100, quote: "350 W | 100"}
"""


def test_there_are_curves_for_the_gpus_people_buy_and_the_datacenter_ones() -> None:
    """The brief's list: at least the 4090, 5090 and a datacenter card besides the 3090."""
    names = " ".join(p.stem for p in CURVES)
    for gpu in ("rtx4090", "rtx5090", "rtx3090"):
        assert gpu in names, gpu
    assert any(dc in names for dc in ("a100", "h100", "h200")), names


@pytest.mark.parametrize("path", CURVES, ids=[p.stem for p in CURVES])
def test_every_curve_file_loads_and_quotes_each_figure(fc: ModuleType, path: Path) -> None:
    curve = fc.load_curve(path)
    spec = curve.spec
    assert spec.source.url.startswith("https://")
    quoted = [*spec.points, *spec.draws, *([spec.speed] if spec.speed else [])]
    assert quoted, "a curve file without a figure"
    for item in quoted:
        assert item.quote.strip()
    figs = fc.figures(curve)
    # one line per capped point (the reference point is the denominator), draw and speed
    capped = [p for p in spec.points if p.cap_w != spec.reference_cap_w]
    assert len(figs) == len(capped) + len(spec.draws) + (spec.speed is not None)
    for fig in figs:
        assert spec.source.url in fig.source
        assert fig.low <= fig.high


def test_a_published_point_is_relative_to_the_reference(fc: ModuleType, tmp_path: Path) -> None:
    """Hand-worked: 90 tok/s at 250 W over 100 tok/s at the 350 W reference is 0.90."""
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    (fig,) = fc.figures(fc.load_curve(path))
    assert fig.kind == "curve"
    assert fig.low == fig.high == pytest.approx(0.90)


def test_a_cap_above_the_natural_draw_never_binds(fc: ModuleType, tmp_path: Path) -> None:
    """DESIGN.md's DVFS rule on the simulated rig: a cap 10 W above what the workload draws at
    the 350 W reference measures the same tokens/s; one 80 W below it measures fewer."""
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    curve = fc.load_curve(path)
    ref = fc.run_cap(curve, 350.0)
    above = round(ref.draw_w) + 10.0
    assert above < 350.0, "the workload must draw under its reference cap for this check"
    assert fc.run_cap(curve, above).tokens_per_s == pytest.approx(ref.tokens_per_s, rel=1e-3)
    assert fc.run_cap(curve, ref.draw_w - 80.0).tokens_per_s < ref.tokens_per_s


def test_a_malformed_curve_names_file_line_path_and_fix(fc: ModuleType, tmp_path: Path) -> None:
    text = GOOD.replace("gpu: rtx3090", "gpu: rtx3009").replace(
        '{cap_w: 250, tokens_per_s: 90, quote: "250 W | 90"}', "{cap_w: 250, quote: '250 W'}"
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        fc.load_curve(path)
    message = str(info.value)
    assert f"{path}:22: points[0].tokens_per_s: required key missing" in message


def test_an_unknown_preset_suggests_the_near_one(fc: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("gpu: rtx3090", "gpu: rtx3009"))
    with pytest.raises(ConfigError, match=r"bad.yaml:6: gpu: no preset 'rtx3009'.*rtx3090"):
        fc.load_curve(path)


def test_a_bad_workload_names_its_line_in_the_curve_file(fc: ModuleType, tmp_path: Path) -> None:
    """The workload block is a workload file's body: its errors keep the curve file's lines."""
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("  context: 2048", "  context: 2048\n  phase: decoding"))
    with pytest.raises(ConfigError, match=r"bad.yaml:20: workload.phase: unknown phase 'decoding'"):
        fc.load_curve(path)


def test_a_curve_without_its_reference_point_is_refused(fc: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("reference_cap_w: 350", "reference_cap_w: 300"))
    with pytest.raises(ConfigError, match=r"bad.yaml:21: points: no point at reference_cap_w"):
        fc.load_curve(path)


def test_a_missing_rig_file_is_refused_before_anything_runs(fc: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("gpu: rtx3090", "rig: no-such-rig.yaml"))
    with pytest.raises(ConfigError, match=r"bad.yaml:6: rig: .*no-such-rig.yaml"):
        fc.load_curve(path)
