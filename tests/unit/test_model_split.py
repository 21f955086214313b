"""A split's operating point (tuning/model/split.py) and the plan that predicts with it.

Expectations: a PP=3 over an RTX 4090 and two RTX 3090s worked by hand from the presets'
datasheet bandwidths and ``serving.yaml``'s llama.cpp figures; the design's statements about
DVFS (DESIGN.md, "The hardware seam"): a cap above the workload's natural draw never binds;
under a lower cap the card runs the highest clock whose power fits, so it draws no more than
the cap and serves fewer tokens; TP members of a stage work in lock-step; a pipeline stage that
waits draws less, so the same cap costs it less; and the simulated rig, stepping its clocks one
0.1 s step at a time with noise, settles where the operating point says.
"""

from __future__ import annotations

import pytest
from test_placement_rigs import make_rig, model, models_file

from tuning.model.serving import Link, gpu_from_preset, predict
from tuning.model.split import SplitMember, SplitPoint, split_member, split_operating_point
from tuning.placement import GpuHint, ProfileHints, plan

#: An 8 B bf16 model (16 GB): memory-bound decode on one 24 GB card.
EIGHT_B = model("eight-b", max_sequences=2)

#: A 30 B dense model at 8 bits (30 GB) under llama.cpp, hidden 64 · 128 = 8192.
THIRTY_B = model(
    "thirty-b", engine="llama.cpp", params_b=30.0, quant_bits=8, layers=48, attention_heads=64
)
#: A PCIe path given by hand: 25 GB/s one way, 10 µs a hop.
LINK = Link(kind="peer", bandwidth_gbps=25.0, latency_us=10.0)


#: The pipeline's cards, stage by stage.
PP3 = ("rtx4090", "rtx3090", "rtx3090")


def _pp3(concurrency: int, caps: tuple[float | None, ...] = (None, None, None)) -> SplitPoint:
    members = [split_member(p, c) for p, c in zip(PP3, caps, strict=True)]
    return split_operating_point(
        THIRTY_B, members, tp=1, pp=3, concurrency=concurrency, context=1, link=LINK
    )


def test_pp3_over_a_4090_and_two_3090s_hand_worked() -> None:
    """Each stage holds a third of the layers: 10 GB of weights, read at llama.cpp's 0.62 of
    the datasheet bandwidth (serving.yaml): 4090 10e9 / (1008e9 · 0.62) = 16.001 ms, 3090
    10e9 / (936e9 · 0.62) = 17.232 ms; the 20 GFLOP of math at 0.044 of 165 / 71 TFLOPS (2.8 /
    6.4 ms) hides under the reads. The hand-off (llama.cpp's layer split, serving.yaml): one
    copy of the f32 residual stream (8192 · 4 B = 32 KiB, with the KQ mask and inputs 33.3 kB)
    at 1.01 µs a copy + 33.3 kB / 25 GB/s = 2.3 µs. Host: llama.cpp's CPU step (1.5 ms + 0.05 ms
    per sequence) once per micro-batch in flight, not at every stage (one graph over all GPUs
    per token).

    One sequence (one micro-batch): its 1.55 ms host step spread over three passes, passes of
    16.001 + 0.002 + 0.517 = 16.520 ms (4090) and 17.751 ms (3090); it goes round the ring
    alone: 1 / (16.520 + 2 · 17.751 ms) = 19.22 tok/s (every stage at the 3090's pace would be
    1 / 53.25 ms = 18.78 tok/s).

    Three sequences, three micro-batches of one: every pass carries a whole host step, 17.553 /
    18.784 ms; the ring's round allows 3 / 55.12 ms = 54.4 passes/s, the slowest stage
    1 / 18.784 ms = 53.24: 53.24 tok/s, 17.75 per sequence. That 3090 stage is what binds:
    its 17.232 ms kernel charged to memory and math in proportion (17.232 : 6.402,
    StepTime.breakdown) gives memory 17.232 · 0.729 / 18.784 = 66.9 % of the step.
    """
    one = _pp3(1)
    assert one.decode.stage_s == pytest.approx((0.016520, 0.017751, 0.017751), rel=1e-3)
    assert one.prediction.tokens_per_s == pytest.approx(19.22, rel=1e-3)
    assert one.prediction.tokens_per_s_per_seq == pytest.approx(19.22, rel=1e-3)
    three = _pp3(3)
    assert three.decode.stage_s == pytest.approx((0.017553, 0.018784, 0.018784), rel=1e-3)
    assert three.prediction.tokens_per_s == pytest.approx(53.24, rel=1e-3)
    assert three.prediction.tokens_per_s_per_seq == pytest.approx(17.75, rel=1e-3)
    assert three.prediction.bottleneck == "memory"
    assert three.prediction.breakdown()["memory"] == pytest.approx(0.669, abs=1e-3)
    # uncapped, every card at its max clock (presets.yaml: 3105 / 2100 / 2100 MHz)
    assert three.prediction.clock_mhz == pytest.approx((3105.0, 2100.0, 2100.0))


def test_on_identical_uncapped_cards_the_split_is_the_step_time_model() -> None:
    """A round of ``pp`` equal passes is ``predict``'s round: same tokens/s, per sequence,
    prefill and TTFT (a prompt of three chunks through three stages: (3 + 3 − 1) chunk
    steps, then the first token's round)."""
    gpu = gpu_from_preset("rtx3090")
    for tp, pp, conc in ((1, 1, 1), (1, 3, 1), (1, 3, 5), (2, 1, 4), (2, 2, 3)):
        n = tp * pp
        want = predict(THIRTY_B, [gpu] * n, tp=tp, pp=pp, concurrency=conc, context=6000, link=LINK)
        got = split_operating_point(
            THIRTY_B,
            [split_member("rtx3090", None)] * n,
            tp=tp,
            pp=pp,
            concurrency=conc,
            context=6000,
            link=LINK,
        ).prediction
        assert got.tokens_per_s == pytest.approx(want.tokens_per_s, rel=1e-9)
        assert got.tokens_per_s_per_seq == pytest.approx(want.tokens_per_s_per_seq, rel=1e-9)
        assert got.prefill_tokens_per_s == pytest.approx(want.prefill_tokens_per_s, rel=1e-9)
        assert got.ttft_s == pytest.approx(want.ttft_s, rel=1e-9)
        assert got.breakdown() == pytest.approx(want.breakdown(), abs=1e-9)


def _single(cap_w: float | None) -> SplitPoint:
    return split_operating_point(
        EIGHT_B, [split_member("rtx3090", cap_w)], tp=1, pp=1, concurrency=2, context=4096
    )


def test_a_cap_above_the_natural_draw_never_binds() -> None:
    free = _single(None)
    natural_w = free.decode.members[0].power_w
    capped = _single(natural_w + 1.0)
    assert capped.prediction.tokens_per_s == pytest.approx(free.prediction.tokens_per_s)
    assert capped.prediction.clock_mhz == pytest.approx((2100.0,))


def test_under_a_lower_cap_the_card_fits_the_cap_and_serves_less() -> None:
    free = _single(None)
    cap_w = free.decode.members[0].power_w - 80.0
    capped = _single(cap_w)
    (member,) = capped.decode.members
    assert member.power_w <= cap_w
    assert member.clock_mhz < 2100.0
    assert capped.prediction.tokens_per_s < free.prediction.tokens_per_s
    assert capped.prediction.tokens_per_s_per_seq == pytest.approx(
        capped.prediction.tokens_per_s / 2
    )
    # the capped step's own rate is the capped prediction's (one description of the step)
    assert capped.prediction.decode_step.tokens_per_s == pytest.approx(
        capped.prediction.tokens_per_s
    )
    # a slower clock makes a slower prefill and a later first token
    assert capped.prediction.ttft_s > free.prediction.ttft_s


def test_tp_members_of_a_stage_work_in_lock_step() -> None:
    """TP=2: the uncapped card waits for its capped mate at every all-reduce, so the pair
    serves what two capped cards serve."""

    def tp2(caps: tuple[float | None, float | None]) -> SplitPoint:
        return split_operating_point(
            EIGHT_B,
            [split_member("rtx3090", c) for c in caps],
            tp=2,
            pp=1,
            concurrency=2,
            context=4096,
        )

    free = tp2((None, None))
    low = free.decode.members[0].power_w - 80.0
    both = tp2((low, low)).prediction.tokens_per_s
    one = tp2((None, low))
    assert one.prediction.tokens_per_s == pytest.approx(both)
    assert one.prediction.tokens_per_s < free.prediction.tokens_per_s
    # the uncapped card idles part of each step: it draws less than it would alone
    assert one.decode.members[0].busy_frac < free.decode.members[0].busy_frac


def test_a_waiting_pipeline_stage_loses_less_to_the_same_cap() -> None:
    """One sequence through two stages: each card works half the round, so it draws less
    than a card that works the whole step and a cap between the two costs it nothing."""
    one = model("one", max_sequences=1)

    def run(pp: int, cap_w: float | None) -> SplitPoint:
        return split_operating_point(
            one,
            [split_member("rtx3090", cap_w)] * pp,
            tp=1,
            pp=pp,
            concurrency=1,
            context=4096,
        )

    single, pipeline = run(1, None), run(2, None)
    single_w = single.decode.members[0].power_w
    stage_w = pipeline.decode.members[0].power_w
    assert pipeline.decode.members[0].busy_frac < 0.5
    assert stage_w < single_w
    cap = (single_w + stage_w) / 2
    assert run(2, cap).prediction.tokens_per_s == pytest.approx(pipeline.prediction.tokens_per_s)
    assert run(1, cap).prediction.tokens_per_s < single.prediction.tokens_per_s


def test_under_caps_the_faster_card_of_a_pipeline_keeps_its_clock_where_it_can() -> None:
    """Three sequences through the 4090 + 3090 + 3090 pipeline with the 3090s capped low: the
    3090s slow down and pace the ring; the uncapped 4090 waits more (less busy) and stays at
    its max clock, and nobody draws above its cap."""
    free = _pp3(3)
    low = free.decode.members[1].power_w - 60.0
    capped = _pp3(3, (None, low, low))
    m4090, *m3090 = capped.decode.members
    assert all(m.power_w <= low for m in m3090)
    assert all(m.clock_mhz < 2100.0 for m in m3090)
    assert m4090.clock_mhz == pytest.approx(3105.0)
    assert m4090.busy_frac < free.decode.members[0].busy_frac
    assert capped.prediction.tokens_per_s < free.prediction.tokens_per_s


def test_a_member_without_a_power_model_runs_at_full_clock() -> None:
    """A GPU whose figures are no preset's (built by hand): no power split, so no clock to
    lower and no clocks reported."""
    hw = gpu_from_preset("rtx3090")
    bare = SplitMember(hardware=hw, params=None, max_clock_mhz=0.0)
    point = split_operating_point(EIGHT_B, [bare], tp=1, pp=1, concurrency=2, context=4096)
    want = predict(EIGHT_B, [hw], concurrency=2, context=4096)
    assert point.prediction.tokens_per_s == pytest.approx(want.tokens_per_s)
    assert point.prediction.clock_mhz == ()


def test_a_mixed_split_carries_the_prompt_share_it_is_given() -> None:
    """``phase: mixed`` with ``input_per_output``: two sequences at 1.5 prompt tokens per
    output token carry ceil(3.0) = 3 prompt tokens a step beside their 2 decode tokens
    (serving.mixed_prefill_tokens), so the mixed ring of a bare card runs what ``predict``'s
    mixed step of 5 tokens says, and a whole 2048-token chunk (no ratio) runs slower."""
    hw = gpu_from_preset("rtx3090")
    bare = SplitMember(hardware=hw, params=None, max_clock_mhz=0.0)
    shared = split_operating_point(
        EIGHT_B, [bare], tp=1, pp=1, concurrency=2, context=4096, phase="mixed",
        input_per_output=1.5,
    )  # fmt: skip
    chunked = split_operating_point(
        EIGHT_B, [bare], tp=1, pp=1, concurrency=2, context=4096, phase="mixed"
    )
    want = predict(EIGHT_B, [hw], concurrency=2, context=4096, phase="mixed", input_per_output=1.5)
    assert want.mixed_step is not None
    assert shared.mixed is not None
    assert chunked.mixed is not None
    assert shared.mixed.tokens_per_s == pytest.approx(
        want.mixed_step.tokens / want.mixed_step.total_s
    )
    assert chunked.mixed.tokens_per_s < shared.mixed.tokens_per_s


def test_the_simulated_rig_settles_where_the_operating_point_says() -> None:
    """The 70 B PP=3 over sim:reference's RTX 4090 and two RTX 3090s (GPUs 2, 0, 5; the last
    on a Gen3 x8 riser), every card capped at 250 W: a cold rig stepped for 60 s (0.1 s steps,
    each member's limiter choosing its clock with the others where they are, with noise)
    serves within 1 % of the plan's prediction for that split."""
    from inventory.models import load_models
    from tuning.backends import open_rig
    from tuning.backends.sim import SimRig
    from tuning.loop import default_models_path, inspect_under_load
    from tuning.placement import build_problem
    from tuning.placement.scoring import group_prediction
    from tuning.serving_run import replica_workload

    models = load_models(default_models_path())
    spec = next(m for m in models.models if m.name == "r1-distill-llama-70b")
    snapshot = inspect_under_load("sim:reference", "decode", seed=0)
    caps = {g.uuid: 250.0 for g in snapshot.gpus}
    problem = build_problem(
        snapshot, models, ProfileHints(gpus={u: GpuHint(cap_w=c) for u, c in caps.items()})
    )
    by_index = {g.index: g for g in problem.gpus}
    mask = sum(1 << by_index[i].position for i in (0, 2, 5))
    predicted, _ = group_prediction(problem.gpus, mask, 1, 3, problem.links, spec)
    rig = open_rig("sim:reference", seed=0)
    assert isinstance(rig, SimRig)
    try:
        for gpu in rig.gpus:
            gpu.set_power_limit_w(caps[gpu.uuid])
        uuids = [by_index[i].uuid for i in (0, 2, 5)]
        handle = rig.run_workload(replica_workload(spec, uuids, 1, 3))
        rig.clock.sleep(60.0)
        measured = rig.workload_tokens_total(handle) / 60.0
    finally:
        rig.close()
    assert measured == pytest.approx(predicted.tokens_per_s, rel=0.01)


def test_the_plan_predicts_at_the_profiles_caps() -> None:
    """``make_rig``'s GPUs have no preset name, so they stand in as RTX 3090s (the plan's
    nominal preset); a profile cap below the decode's natural draw lowers the plan's
    tokens/s, one above it changes nothing."""
    natural_w = _single(None).decode.members[0].power_w
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
