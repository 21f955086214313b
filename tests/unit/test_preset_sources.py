"""Every number of the model's data files carries its source (the project's rule, issue 12).

A source is either a citation a reader can follow — a URL, a datasheet, whitepaper or spec page, a
fixture under ``tests/fixtures/real/``, a repository path or issue (``owner/repo``, ``#123``) —
or says ``estimate`` (and then how it was estimated), or ``fit`` to a cited figure.
"""

from __future__ import annotations

import re

import pytest

from tests.bench import bench_module
from tuning.backends.sim_config import load_presets
from tuning.model.power import PowerParams, ScaledPowerParams, load_power_file
from tuning.model.serving import load_serving_params

#: What makes a source text a citation or an honest estimate.
CITED = re.compile(
    r"https?://|datasheet|whitepaper|specifications|fixture|estimate|\bfit\b"
    r"|\b[\w-]+\.(?:io|ai|com|org|net|dev)\b"  # a site: jeanfbrito.github.io, docs.sglang.ai
    r"|\b[A-Za-z][\w-]{2,}/[A-Za-z][\w.-]{2,}"  # a repository or path (not "GB/s")
    r"|#\d+",
    re.I,
)

PRESETS = load_presets().presets


def _assert_cited(where: str, text: str) -> None:
    __tracebackhide__ = True
    assert text.strip(), f"{where}: empty source"
    assert CITED.search(text), f"{where}: {text!r} is neither a citation nor an estimate"


@pytest.mark.parametrize("key", sorted(PRESETS))
def test_every_field_a_preset_sets_has_a_source(key: str) -> None:
    """Each field written in a presets.yaml entry (bar its display name) has a ``source`` entry,
    including the step-time model's fields (``memory_bw_gbps``, ``fp16_tensor_tflops``,
    ``tensor_tflops``, ``sm_clock_mhz``)."""
    preset = PRESETS[key]
    written = set(preset.model_fields_set) - {"name", "source"}
    missing = sorted(written - set(preset.source))
    assert not missing, f"presets.{key}.source lacks {missing}"
    stale = sorted(set(preset.source) - written)
    assert not stale, f"presets.{key}.source cites fields the preset does not set: {stale}"
    for field, text in preset.source.items():
        _assert_cited(f"presets.{key}.source.{field}", text)


def test_the_model_fields_are_present_on_every_preset() -> None:
    """The step-time model reads bandwidth, FP16 tensor throughput, the CUDA cores' INT32 rate
    and clocks of every card."""
    for key, preset in PRESETS.items():
        for field in (
            "memory_bw_gbps",
            "fp16_tensor_tflops",
            "int32_tops",
            "sm_clock_mhz",
            "power",
        ):
            assert field in preset.model_fields_set, (key, field)


def test_every_power_split_number_is_cited_or_estimated() -> None:
    doc = load_power_file()
    own = set(PowerParams.model_fields) - {"source"}
    for key, params in doc.presets.items():
        assert key in PRESETS, f"power.yaml presets.{key}: not a presets.yaml preset"
        assert set(params.source) == own, key
        for field, text in params.source.items():
            _assert_cited(f"power.yaml presets.{key}.source.{field}", text)
    scaled = set(ScaledPowerParams.model_fields) - {"source"}
    assert set(doc.default.source) == scaled
    for field, text in doc.default.source.items():
        _assert_cited(f"power.yaml default.source.{field}", text)


def test_every_serving_number_is_cited_or_estimated() -> None:
    params = load_serving_params()
    for name, engine in params.engines.items():
        for field, text in engine.sources.items():
            _assert_cited(f"serving.yaml engines.{name}.sources.{field}", text)
    for field, text in params.collectives.sources.items():
        _assert_cited(f"serving.yaml collectives.sources.{field}", text)
    for field, text in params.host.sources.items():
        _assert_cited(f"serving.yaml host.sources.{field}", text)


def test_an_uncited_number_is_caught() -> None:
    """The check itself fails on a bare number (so it is not a test that cannot fail)."""
    with pytest.raises(AssertionError, match="neither a citation nor an estimate"):
        _assert_cited("x", "924 GB/s")


def test_every_fidelity_figure_cites_where_it_was_published() -> None:
    """bench/fidelity.py's figures: unique labels, a followable source each, a range in order."""
    figures = bench_module("fidelity").collect()
    labels = [f.label for f in figures]
    assert len(labels) == len(set(labels)), "duplicate fidelity labels"
    for fig in figures:
        _assert_cited(f"bench figure {fig.label!r}", fig.source)
        assert fig.low <= fig.high, fig.label


def test_the_scoreboard_lines_run_known_presets_on_llama_benchs_file() -> None:
    """Each llama.cpp scoreboard row names a preset of presets.yaml (a renamed preset fails
    here, not silently in the bench), and the model file weighs what llama-bench prints for
    llama-2-7b.Q4_0.gguf: 3.56 GiB over 6.74 B parameters."""
    fidelity_speed = bench_module("fidelity_speed")
    presets = load_presets().presets
    rows = fidelity_speed.SCOREBOARD_TG128
    assert {preset for preset, _, _ in rows} <= set(presets)
    arch = fidelity_speed.LLAMA2_7B_Q4_0
    assert arch.params_b * 1e9 * arch.quant_bits / 8 / 2**30 == pytest.approx(3.56, abs=0.005)
