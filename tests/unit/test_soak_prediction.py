"""Thermal validation by prediction: the steady temperature fitted from a short transient
against a full 30-minute soak, on rigs that do and do not throttle (issue 12 item 5).

The reference for every comparison is a *full soak*: the same caps run the whole 30 minutes
(``--full-soak``) and the temperature the card reads at the end is its steady temperature
(every simulated cooler has τ ≤ 120 s, ``presets.yaml``: 30 min is ≥ 15 τ).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tuning.apply.actuator import Actuator
from tuning.backends import open_rig
from tuning.budget import Policy
from tuning.cli import cli
from tuning.sustained import SustainedSampler
from tuning.sweep import Sweep, SweepConfig, SweepResult
from tuning.telemetry import SoakPredictionPolicy, predict_steady
from tuning.workloads import SimWorkload

FULL_SOAK_S = 1800.0


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "state"))


def _exponential(t0_c: float, steady_c: float, tau_s: float, seconds: int) -> list[float]:
    return [steady_c - (steady_c - t0_c) * math.exp(-t / tau_s) for t in range(seconds + 1)]


def _readings(t0_c: float, steady_c: float, tau_s: float, seconds: int) -> list[float]:
    """:func:`_exponential` read as NVML reports it: whole degrees, once a second."""
    return [float(round(c)) for c in _exponential(t0_c, steady_c, tau_s, seconds)]


# -- the predictor on hand-made transients --------------------------------------------------


def test_the_docstring_example_fits_the_asymptote_and_gives_both_verdicts() -> None:
    """50 °C → 80 °C, τ = 60 s, whole degrees each second for 180 s (3 τ, 95 % of the rise:
    80 − 30·e^−3 = 78.5, read as 79 °C). Worked by hand: the asymptote is found to ≈ 0.5 °C;
    the uncertainty ≈ 0.5 (resolution) + 0.29 (RMS of whole-degree rounding, 1/√12) + the
    asymptote's last-minute drift (≤ 0.2) ≈ 0.8–1.0 °C. So a target of 83 °C passes
    (≤ 80.5 + 1.0), 78 °C throttles (≥ 79.5 − 1.0 > 78), and 79.5 °C is within the
    uncertainty: no verdict. It is also within the readings' own blur (0.5 + 0.29 ≈ 0.8 °C,
    which no longer soak narrows) of the asymptote: at target, no margin."""
    temps = _readings(50.0, 80.0, 60.0, 180)
    times = [float(t) for t in range(181)]
    cool = predict_steady(times, temps, target_c=83.0)
    hot = predict_steady(times, temps, target_c=78.0)
    close = predict_steady(times, temps, target_c=79.5)
    assert cool is not None
    assert hot is not None
    assert abs(cool.steady_c - 80.0) <= 0.5
    assert 0.75 <= cool.uncertainty_c <= 1.0
    assert cool.confident
    assert cool.verdict == "pass"
    assert hot.verdict == "throttle"
    assert close is not None
    assert close.confident
    assert close.verdict is None
    assert close.at_target
    assert not cool.at_target
    assert not hot.at_target


def test_a_card_settling_just_under_its_target_is_at_target_not_undecided() -> None:
    """50 °C → 82.7 °C, τ = 70 s, whole degrees, 300 s (4.3 τ): the asymptote ≈ 82.7 is
    0.3 °C under an 83 °C target, inside resolution + RMS (≈ 0.8 °C) however long the soak
    runs, so neither verdict can ever come; the prediction says at target instead. The same
    card heading to 80.5 °C is a plain pass (80.5 + ≈ 0.8 ≤ 83) and not at target."""
    times = [float(t) for t in range(301)]
    edge = predict_steady(times, _readings(50.0, 82.7, 70.0, 300), target_c=83.0)
    clear = predict_steady(times, _readings(50.0, 80.5, 70.0, 300), target_c=83.0)
    assert edge is not None
    assert clear is not None
    assert edge.confident
    assert edge.verdict is None
    assert edge.at_target
    assert clear.verdict == "pass"
    assert not clear.at_target


def test_a_noisy_trace_keeps_soaking() -> None:
    """The same transient with ±3 °C of noise (a fan hunting, a draughty room): the fit's
    RMS residual (≈ 3/√3 ≈ 1.7 °C for uniform noise) is over the 1 °C bound, so no verdict —
    on real NVML a noisy fit falls back to soaking longer."""
    rng = np.random.default_rng(7)
    temps = [float(round(c + rng.uniform(-3.0, 3.0))) for c in _exponential(50.0, 70.0, 60.0, 300)]
    prediction = predict_steady([float(t) for t in range(301)], temps, target_c=83.0)
    assert prediction is not None
    assert prediction.rms_c > 1.0
    assert not prediction.confident
    assert prediction.verdict is None


def test_a_slow_transient_is_not_extrapolated_from_its_first_minutes() -> None:
    """τ = 600 s observed for 180 s: 0.3 τ, only 26 % of the rise (1 − e^−0.3). The rules ask
    for 1.5 τ, so the prediction is not confident however clean the trace."""
    temps = _readings(40.0, 80.0, 600.0, 180)
    prediction = predict_steady([float(t) for t in range(181)], temps, target_c=83.0)
    assert prediction is not None
    assert not prediction.confident
    assert prediction.verdict is None


def test_a_card_already_settled_needs_no_time_constant() -> None:
    """A card that starts the soak at its steady 60 °C (a second round, warm from the
    first): the trace is flat, τ is anything, but the asymptote is the reading itself."""
    prediction = predict_steady([float(t) for t in range(131)], [60.0] * 131, target_c=83.0)
    assert prediction is not None
    assert prediction.confident
    assert prediction.verdict == "pass"
    assert abs(prediction.steady_c - 60.0) < 0.5


def test_a_known_time_constant_reads_a_late_whole_degree_step_as_the_degree_it_is() -> None:
    """A second round, the card corrected to settle just under where it was: it reads 84 °C
    for 230 s, then 85 °C, to 300 s. Worked by hand with its cooler's τ = 90 s (fitted in
    round one): the true curve crosses 84.5 °C at 230 s = 2.56 τ and started between 83.5
    and 84.5 °C, so v∞ − (v∞ − v₀)·e^−2.56 = 84.5 puts the asymptote at 84.5–84.6 °C; 300 s
    is 3.3 τ, past the 1.5 τ rule: a confident pass under an 87 °C target. A free τ reads
    the same step as the start of a slow rise (τ at the grid's end, asymptote > 87 °C) and
    would keep soaking for minutes."""
    times = [float(t) for t in range(301)]
    temps = [84.0 if t < 230 else 85.0 for t in range(301)]
    known = predict_steady(times, temps, target_c=87.0, tau_s=90.0)
    free = predict_steady(times, temps, target_c=87.0)
    assert known is not None
    assert free is not None
    assert abs(known.steady_c - 84.55) <= 0.5
    assert known.confident
    assert known.verdict == "pass"
    assert known.tau_given
    assert not free.confident
    assert free.steady_c > 87.0


def test_only_a_confident_fit_of_a_large_rise_hands_its_time_constant_on() -> None:
    """50 → 80 °C with τ = 60 s over 180 s (a first round from idle): its τ (≈ 60 s) is kept
    for the next round. A card that sat within 2 °C of its asymptote (less than the 5 °C
    rise the policy asks) and a prediction that was itself given τ hand nothing on."""
    policy = SoakPredictionPolicy()
    times = [float(t) for t in range(181)]
    first_round = _readings(50.0, 80.0, 60.0, 180)
    rise = predict_steady(times, first_round, target_c=83.0)
    small = predict_steady(times, _readings(78.0, 80.0, 60.0, 180), target_c=83.0)
    assert rise is not None
    assert small is not None
    tau = policy.reusable_tau_s(rise)
    assert tau is not None
    assert abs(tau - 60.0) <= 12.0
    assert policy.reusable_tau_s(small) is None
    again = predict_steady(times, first_round, target_c=83.0, tau_s=tau)
    assert again is not None
    assert again.confident
    assert policy.reusable_tau_s(again) is None


def test_too_short_a_trace_has_no_verdict() -> None:
    """Before ``min_s`` (120 s) of soak nothing is decided, however clean the trace."""
    temps = _readings(50.0, 80.0, 20.0, 100)
    prediction = predict_steady([float(t) for t in range(101)], temps, target_c=83.0)
    assert prediction is not None
    assert prediction.verdict is None


# -- the sweep: predicted vs full soak, rigs that do not throttle --------------------------


def _sweep(
    spec: str, workload: str, ambient_c: float | None = None, **overrides: object
) -> SweepResult:
    rig = open_rig(spec, seed=0)
    if ambient_c is not None:
        rig.ambient_c = ambient_c
    config = SweepConfig(workload=workload, seed=0, **overrides)  # type: ignore[arg-type]
    return Sweep(rig, Actuator(rig, spec, persist=False), SimWorkload(rig, workload), config).run()


@pytest.mark.parametrize(
    ("spec", "workload"),
    [("sim:reference", "decode"), ("sim:4x3090", "prefill"), ("sim:8xl40s", "decode")],
)
def test_prediction_matches_a_full_soak_where_nothing_throttles(spec: str, workload: str) -> None:
    """Open-air (reference, 4×3090) and passive (8×L40S) rigs whose tuned caps stay cool:
    the predicted round stops within minutes, chooses the caps the full soak chooses, and
    every GPU's predicted steady temperature is within 1 °C of what it reads after 30 min
    (and so is the peak temperature the profile records)."""
    predicted = _sweep(spec, workload)
    full = _sweep(spec, workload, full_soak=True)
    p, f = predicted.final_soak, full.final_soak
    assert p is not None
    assert f is not None
    assert full.soak_sim_s == pytest.approx(FULL_SOAK_S * len(full.soak_rounds))
    assert p.ended_by_prediction
    assert not f.ended_by_prediction
    assert predicted.validation_passed
    assert full.validation_passed
    assert p.caps_w == f.caps_w
    for uuid in p.caps_w:
        assert abs(p.predicted_steady_c[uuid] - f.last_temp_c[uuid]) <= 1.0, uuid
    # the profile's peak (what the placement reads) is the settled one, not a 3-minute peak
    for mine, reference in zip(predicted.gpus, full.gpus, strict=True):
        assert abs(mine.peak_temp_c - reference.peak_temp_c) <= 1.0, mine.uuid
    assert predicted.rig_seconds <= 600.0
    assert predicted.rig_seconds >= predicted.sweep_sim_s + predicted.soak_sim_s


def test_round_two_reuses_round_ones_time_constants_and_agrees_with_a_full_soak() -> None:
    """16 RTX PRO 6000 behind four switches (bench/rigs/wrx90-4switch-rtxpro6000.yaml),
    decode: round one predicts the middle cards over their 87 °C target and lowers them;
    round two starts them within a degree of where they settle. With round one's τ it stops
    at the 1.5 τ rule (≤ 3 min, not the 10 min a free τ needed to stop chasing whole-degree
    steps), the whole tune fits in the 10-minute bar, and the full soak of the same rounds
    (30 min each) chooses caps within 1 W and finds every settled card within 1 °C."""
    spec = str(Path(__file__).parents[2] / "bench" / "rigs" / "wrx90-4switch-rtxpro6000.yaml")
    predicted = _sweep(spec, "decode")
    full = _sweep(spec, "decode", full_soak=True)
    assert len(predicted.soak_rounds) == len(full.soak_rounds) == 2
    first, second = predicted.soak_rounds
    assert first.predicted_throttle
    assert set(second.caps_w) == set(first.fitted_tau_s)
    assert second.ended_by_prediction
    assert second.sim_seconds <= 180.0
    assert predicted.validation_passed
    assert full.validation_passed
    assert predicted.rig_seconds <= 600.0
    for mine, reference in zip(predicted.gpus, full.gpus, strict=True):
        assert abs(mine.cap_w - reference.cap_w) <= 1.0, mine.uuid
        assert abs(mine.peak_temp_c - reference.peak_temp_c) <= 1.0, mine.uuid


# -- rigs that throttle ---------------------------------------------------------------------


def test_prediction_and_full_soak_reject_the_same_cards_on_a_throttling_rig() -> None:
    """4×RTX 3090 open-air in a warm room (33 °C, 7 °C above the rig file's) at the
    throughput policy's caps (prefill, the hottest load): the two middle cards (slots 2 and
    3, heated from both sides) throttle in a full soak; the predicted soak, one round only,
    rejects the same two cards."""
    kwargs = {"policy": Policy.THROUGHPUT, "max_soak_rounds": 1, "ambient_c": 33.0}
    predicted = _sweep("sim:4x3090", "prefill", **kwargs)
    full = _sweep("sim:4x3090", "prefill", full_soak=True, **kwargs)
    p, f = predicted.final_soak, full.final_soak
    assert p is not None
    assert f is not None
    assert not predicted.validation_passed
    assert not full.validation_passed
    offenders_full = {e.uuid for e in f.throttle_events}
    offenders_predicted = {e.uuid for e in p.throttle_events} | set(p.predicted_throttle)
    rig = open_rig("sim:4x3090", seed=0)
    middle = {g.uuid for g in rig.gpus if g.pci_bus_id.lower().endswith(("21:00.0", "41:00.0"))}
    assert offenders_full == middle
    assert offenders_predicted == offenders_full


def test_throughput_caps_that_settle_at_the_target_are_lowered_not_soaked_30_minutes() -> None:
    """4×RTX 3090 decode at the throughput policy's caps (350 W, the maximum, on every card):
    in a full 30-minute soak the two middle cards (slots 2 and 3, heated from both sides) end
    reading 83 °C, their target (presets.yaml), and the outer two stay ≥ 4 °C under it. No
    verdict can come for the middle two (they settle within a reading's blur of the target),
    so a soak waiting for one sat out the 30 minutes (30.8 rig minutes in bench/tuner.py
    --policy throughput). The predicted soak stops within 3 minutes naming exactly those two
    as without margin, lowers their caps only, and the whole tune stays within 10 rig
    minutes with a passing final round."""
    kwargs = {"policy": Policy.THROUGHPUT}
    predicted = _sweep("sim:4x3090", "decode", **kwargs)
    full = _sweep("sim:4x3090", "decode", full_soak=True, max_soak_rounds=1, **kwargs)
    rig = open_rig("sim:4x3090", seed=0)
    middle = {g.uuid for g in rig.gpus if g.pci_bus_id.lower().endswith(("21:00.0", "41:00.0"))}
    f = full.final_soak
    assert f is not None
    assert f.caps_w == {g.uuid: 350.0 for g in rig.gpus}
    for uuid, temp_c in f.last_temp_c.items():
        assert (temp_c == 83.0) if uuid in middle else (temp_c <= 79.0), (uuid, temp_c)
    first = predicted.soak_rounds[0]
    assert first.caps_w == f.caps_w
    assert first.ended_by_prediction
    assert first.sim_seconds <= 180.0
    assert set(first.predicted_throttle) == middle
    final = predicted.final_soak
    assert final is not None
    assert predicted.validation_passed
    assert {u for u, cap_w in final.caps_w.items() if cap_w < 350.0} == middle
    assert predicted.rig_seconds <= 600.0


def test_a_throttle_is_predicted_before_it_happens() -> None:
    """8×L40S (passive, τ = 120 s, SW slowdown at its 89 °C max operating temperature) at
    full caps with a 55 °C inlet (a closed, hot case): every card heads over 89 °C. The
    prediction says "throttle" for every card before the first throttle event; the full
    30-minute soak confirms every card throttles."""
    rig = open_rig("sim:8xl40s", seed=0)
    rig.ambient_c = 55.0
    caps = {}
    for gpu in rig.gpus:
        caps[gpu.uuid] = gpu.power_constraints().max_w
        gpu.set_power_limit_w(caps[gpu.uuid])
        rig.set_workload(gpu.uuid, "prefill")
    sampler = SustainedSampler(rig.gpus, rig.clock, caps_w=caps, duration_s=1800.0, period_s=1.0)
    policy = SoakPredictionPolicy()
    verdicts: dict[str, str | None] = {}
    decided_s = first_event_s = None
    while sampler.running:
        now, _, events = sampler.step()
        elapsed = now - sampler.started_s
        if events and first_event_s is None:
            first_event_s = elapsed
        if decided_s is None and elapsed >= policy.min_s:
            for gpu in rig.gpus:
                trace = sampler.gpu[gpu.uuid].temp_trace
                prediction = predict_steady(
                    [t for t, _ in trace], [c for _, c in trace], target_c=89.0, policy=policy
                )
                verdicts[gpu.uuid] = prediction.verdict if prediction else None
            if all(verdicts.values()):
                decided_s = elapsed
    assert decided_s is not None
    assert first_event_s is not None
    assert decided_s < first_event_s
    assert set(verdicts.values()) == {"throttle"}
    assert all(sampler.gpu[g.uuid].throttle_samples > 0 for g in rig.gpus)


# -- the command line -----------------------------------------------------------------------


def test_sweep_json_reports_the_whole_tunes_rig_time_and_full_soak_sits_it_out() -> None:
    """``totals.rig_seconds`` covers probes plus validation (so ≥ their sum) and stays under
    10 minutes on sim:4x3090; ``--full-soak`` soaks the whole ``--heat-soak-s``."""
    runner = CliRunner()
    args = ["sweep", "--rig", "sim:4x3090", "--seed", "0", "--json"]
    quick = runner.invoke(cli, args)
    assert quick.exit_code == 0, quick.output
    totals = json.loads(quick.stdout)["totals"]
    assert totals["sim_seconds"] + totals["heat_soak_sim_seconds"] <= totals["rig_seconds"]
    assert totals["rig_seconds"] <= 600.0
    assert totals["soak_ended_by_prediction"] is True
    full = runner.invoke(cli, [*args, "--full-soak", "--heat-soak-s", "600"])
    assert full.exit_code == 0, full.output
    totals = json.loads(full.stdout)["totals"]
    assert totals["heat_soak_sim_seconds"] == pytest.approx(600.0)
    assert totals["soak_ended_by_prediction"] is False
