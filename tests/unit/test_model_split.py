"""A split under power caps (tuning/model/split.py) and the plan that predicts with it.

Expectations are the design's statements about DVFS (DESIGN.md, "The hardware seam"): a cap
above the workload's natural draw never binds; under a lower cap the card runs the highest
clock whose power fits, so it draws no more than the cap and serves fewer tokens; a split runs
at its slowest member; a pipeline stage that waits draws less, so the same cap costs it less.
"""

from __future__ import annotations

import pytest
from test_placement_rigs import make_rig, model, models_file

from tuning.model.power import natural_power_w
from tuning.model.serving import gpu_from_preset, predict
from tuning.model.split import member_load, member_power, under_caps
from tuning.placement import GpuHint, ProfileHints, plan

#: An 8 B bf16 model (16 GB): memory-bound decode on one 24 GB card.
EIGHT_B = model("eight-b", max_sequences=2)


def _decode_on_3090() -> tuple[object, float]:
    gpu = gpu_from_preset("rtx3090")
    prediction = predict(EIGHT_B, [gpu], concurrency=2, context=4096)
    step, busy = member_load(prediction)
    natural_w = natural_power_w(member_power("rtx3090", None).params, step, busy_scale=busy)
    return prediction, natural_w


def test_a_cap_above_the_natural_draw_never_binds() -> None:
    prediction, natural_w = _decode_on_3090()
    capped = under_caps(prediction, [member_power("rtx3090", natural_w + 1.0)])
    assert capped.prediction.tokens_per_s == pytest.approx(prediction.tokens_per_s)
    assert capped.clock_frac == 1.0


def test_under_a_lower_cap_the_card_fits_the_cap_and_serves_less() -> None:
    prediction, natural_w = _decode_on_3090()
    cap_w = natural_w - 80.0
    capped = under_caps(prediction, [member_power("rtx3090", cap_w)])
    (point,) = capped.members
    assert point.power_w <= cap_w
    assert capped.clock_frac < 1.0
    assert capped.prediction.tokens_per_s < prediction.tokens_per_s
    assert capped.prediction.tokens_per_s_per_seq == pytest.approx(
        capped.prediction.tokens_per_s / 2
    )
    # the capped step's own rate is the capped prediction's (one description of the step)
    assert capped.prediction.decode_step.tokens_per_s == pytest.approx(
        capped.prediction.tokens_per_s
    )


def test_a_split_runs_at_its_slowest_member() -> None:
    gpus = [gpu_from_preset("rtx3090")] * 2
    prediction = predict(EIGHT_B, gpus, tp=2, concurrency=2, context=4096)
    step, busy = member_load(prediction)
    natural_w = natural_power_w(member_power("rtx3090", None).params, step, busy_scale=busy)
    low = member_power("rtx3090", natural_w - 80.0)
    alone = under_caps(prediction, [low, low]).prediction.tokens_per_s
    mixed = under_caps(prediction, [member_power("rtx3090", None), low]).prediction.tokens_per_s
    assert mixed == pytest.approx(alone)
    assert mixed < prediction.tokens_per_s


def test_a_waiting_pipeline_stage_loses_less_to_the_same_cap() -> None:
    """One sequence through two stages: each card works half the round (busy 0.5), so it
    draws less than a card that works the whole step and a cap between the two costs it
    nothing."""
    gpu = gpu_from_preset("rtx3090")
    one = model("one", max_sequences=1)
    single = predict(one, [gpu], concurrency=1, context=4096)
    pipeline = predict(one, [gpu, gpu], pp=2, concurrency=1, context=4096)
    params = member_power("rtx3090", None).params
    s_step, s_busy = member_load(single)
    p_step, p_busy = member_load(pipeline)
    assert p_busy == pytest.approx(0.5)
    single_w = natural_power_w(params, s_step, busy_scale=s_busy)
    stage_w = natural_power_w(params, p_step, busy_scale=p_busy)
    assert stage_w < single_w
    cap = member_power("rtx3090", (single_w + stage_w) / 2)
    assert under_caps(pipeline, [cap, cap]).prediction.tokens_per_s == pytest.approx(
        pipeline.tokens_per_s
    )
    assert under_caps(single, [cap]).prediction.tokens_per_s < single.tokens_per_s


def test_the_plan_predicts_at_the_profiles_caps() -> None:
    """``make_rig``'s GPUs have no preset name, so they stand in as RTX 3090s (the plan's
    nominal preset); a profile cap below the decode's natural draw lowers the plan's
    tokens/s, one above it changes nothing."""
    _, natural_w = _decode_on_3090()
    rig = make_rig([24576], None, power_w=350.0)
    models = models_file(EIGHT_B)
    free = plan(rig, models).placements[0]
    high = plan(rig, models, ProfileHints(gpus={"GPU-0": GpuHint(cap_w=natural_w + 5)}))
    low = plan(rig, models, ProfileHints(gpus={"GPU-0": GpuHint(cap_w=natural_w - 80)}))
    assert high.placements[0].tokens_per_s == pytest.approx(free.tokens_per_s)
    assert low.placements[0].tokens_per_s < free.tokens_per_s
    assert low.score == pytest.approx(low.placements[0].tokens_per_s)


def test_an_idle_cards_downshifted_gen_does_not_slow_the_plan() -> None:
    """An idle GPU drops its PCIe link to gen 1 to save power (tuning/core/pcie.py: a gen below
    max says nothing unless read under load; a narrow width always does). A card on an x8
    riser read idle at gen 1 x8 is planned as the same card read loaded at gen 4 x8."""
    import dataclasses

    from tuning.core.pcie import PcieLink

    mid = model("mid", params_b=32.8, quant_bits=8, layers=64, attention_heads=40)
    base = make_rig([24576, 24576], None)

    def with_link(link: PcieLink):
        gpus = (base.gpus[0], dataclasses.replace(base.gpus[1], pcie=link))
        return dataclasses.replace(base, gpus=gpus)

    idle = with_link(PcieLink(gen_current=1, gen_max=4, width_current=8, width_max=16))
    loaded = with_link(
        PcieLink(gen_current=4, gen_max=4, width_current=8, width_max=16, under_load=True)
    )
    (a,) = plan(idle, models_file(mid)).placements
    (b,) = plan(loaded, models_file(mid)).placements
    assert a.tp * a.pp == 2
    assert a.tokens_per_s == pytest.approx(b.tokens_per_s)
