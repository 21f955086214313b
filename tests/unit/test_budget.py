"""Budget model and allocation: never over budget, optimal against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuning.budget import (
    BudgetModel,
    CapOption,
    InfeasibleBudget,
    Policy,
    allocate,
    objective_value,
)
from tuning.core.power import Circuit, Overload, Psu

TWO_PSUS = BudgetModel(
    psus=(
        Psu(name="psu-a", rating_w=1000, circuit="c1", efficiency=0.9, platform_w=200),
        Psu(name="psu-b", rating_w=800, circuit="c1", efficiency=0.8, platform_w=50),
    ),
    circuits=(Circuit(name="c1", voltage_v=120, breaker_a=15),),
    gpu_psu={"g1": "psu-a", "g2": "psu-a", "g3": "psu-b"},
)


def test_load_ratios_follow_the_documented_formula() -> None:
    ratios = TWO_PSUS.load_ratios({"g1": 300, "g2": 200, "g3": 350})
    assert ratios["psu:psu-a"] == pytest.approx((200 + 300 + 200) / 1000)
    assert ratios["psu:psu-b"] == pytest.approx((50 + 350) / 800)
    wall = (200 + 500) / 0.9 + (50 + 350) / 0.8
    assert ratios["circuit:c1"] == pytest.approx(wall / (120 * 15 * 0.8))


def options_strategy():
    point = st.tuples(st.integers(100, 400), st.floats(1, 100), st.floats(50, 400))
    return st.lists(point, min_size=1, max_size=4).map(
        lambda pts: [CapOption(c, t, p) for c, t, p in pts]
    )


def brute_force(options, budget, policy, limit, floors=None):
    best, best_value = None, float("-inf")
    uuids = sorted(options)
    for combo in itertools.product(*(options[u] for u in uuids)):
        caps = {u: o.cap_w for u, o in zip(uuids, combo, strict=True)}
        if not budget.fits(caps, limit):
            continue
        if floors and any(o.throughput_tps < floors[u] for u, o in zip(uuids, combo, strict=True)):
            continue
        value = objective_value(
            policy, sum(o.throughput_tps for o in combo), sum(o.power_w for o in combo)
        )
        if value > best_value + 1e-9:
            best, best_value = caps, value
    return best, best_value


@settings(max_examples=30, deadline=None)
@given(
    opts=st.fixed_dictionaries(
        {"g1": options_strategy(), "g2": options_strategy(), "g3": options_strategy()}
    ),
    policy=st.sampled_from(list(Policy)),
)
def test_allocation_is_optimal_and_never_over_budget(opts, policy) -> None:
    expected, expected_value = brute_force(opts, TWO_PSUS, policy, 0.9)
    if expected is None:
        with pytest.raises(InfeasibleBudget):
            allocate(opts, TWO_PSUS, policy, headroom=0.1)
        return
    got = allocate(opts, TWO_PSUS, policy, headroom=0.1)
    assert TWO_PSUS.max_ratio(got.caps_w) <= 0.9 + 1e-9
    assert got.objective == pytest.approx(expected_value, rel=1e-6, abs=1e-6)


def test_floor_is_kept_when_it_fits_and_relaxed_to_max_throughput_when_not() -> None:
    opts = {
        "g1": [CapOption(150, 80, 150), CapOption(300, 100, 290)],
        "g2": [CapOption(150, 80, 150), CapOption(300, 100, 290)],
        "g3": [CapOption(150, 80, 150), CapOption(300, 100, 290)],
    }
    roomy = BudgetModel(
        psus=(Psu(name="p", rating_w=2000, circuit="c", platform_w=100),),
        gpu_psu=dict.fromkeys(opts, "p"),
    )
    loose = allocate(
        opts, roomy, Policy.EFFICIENCY, headroom=0.1, floors_tps=dict.fromkeys(opts, 85)
    )
    assert not loose.floor_relaxed
    assert loose.caps_w == dict.fromkeys(opts, 300)
    tight_budget = BudgetModel(
        psus=(Psu(name="p", rating_w=900, circuit="c", platform_w=100),),
        circuits=(),
        gpu_psu=dict.fromkeys(opts, "p"),
    )
    tight = allocate(
        opts, tight_budget, Policy.EFFICIENCY, headroom=0.1, floors_tps=dict.fromkeys(opts, 85)
    )
    assert tight.floor_relaxed
    assert sorted(tight.caps_w.values()) == [150, 150, 300]


def test_gpus_on_no_described_psu_take_their_own_best() -> None:
    got = allocate(
        {"x": [CapOption(100, 10, 100), CapOption(200, 30, 200)]}, BudgetModel(), Policy.THROUGHPUT
    )
    assert got.caps_w == {"x": 200}


def test_overloads_name_each_psu_and_circuit_over_its_limit() -> None:
    """Worked by hand (TWO_PSUS: a 1000 W DC, platform 200, 90 %; b 800 W, platform 50, 80 %;
    circuit c1 = 120 V × 15 A × 0.8 = 1440 W at the wall):

    * g1 700 W on a, g2 600 W on b: a 900 W ≤ 1000, b 650 W ≤ 800; the wall sees
      900 / 0.9 + 650 / 0.8 = 1000 + 812.5 = 1812.5 W > 1440 W — only the circuit;
    * g1 850 W: a carries 1050 W > 1000 W as well.
    """
    budget = BudgetModel(
        psus=TWO_PSUS.psus, circuits=TWO_PSUS.circuits, gpu_psu={"g1": "psu-a", "g2": "psu-b"}
    )
    assert budget.overloads({"g1": 700, "g2": 600}) == [
        Overload("circuit", "c1", pytest.approx(1812.5), pytest.approx(1440.0))
    ]
    assert [(o.kind, o.name) for o in budget.overloads({"g1": 850, "g2": 600})] == [
        ("psu", "psu-a"),
        ("circuit", "c1"),
    ]


def test_a_gpu_without_a_psu_counts_against_the_only_one() -> None:
    """One PSU: an unmapped GPU's 300 W lands on it (100 W platform + 300 W); with two PSUs it
    would count against neither, so the validator and rig files require the mapping."""
    one = BudgetModel(psus=(Psu(name="only", rating_w=1000, platform_w=100),))
    assert one.psu_dc_w({"gpu": 300.0}) == {"only": 400.0}
    assert TWO_PSUS.psu_dc_w({"unmapped": 300.0}) == {"psu-a": 200.0, "psu-b": 50.0}
