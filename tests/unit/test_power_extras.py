"""The one load formula's extras (issue 12 item 2): loads on a circuit that are not the box
(``reserved_w``) and redundant PSUs sharing load. Expectations are worked by hand."""

from __future__ import annotations

import pytest

from tuning.backends.sim import SimRig
from tuning.core.power import BudgetModel, Circuit, Psu


def _pair() -> BudgetModel[int]:
    """Two 1600 W PSUs in one redundant group, each on its own 120 V 15 A circuit (budget
    120 × 15 × 0.8 = 1440 W), 200 W reserved on the first; every GPU mapped to PSU a."""
    return BudgetModel(
        psus=(
            Psu(name="a", rating_w=1600, circuit="c1", platform_w=200, redundant_group="g"),
            Psu(name="b", rating_w=1600, circuit="c2", redundant_group="g"),
        ),
        circuits=(
            Circuit(name="c1", voltage_v=120, breaker_a=15, reserved_w=200),
            Circuit(name="c2", voltage_v=120, breaker_a=15),
        ),
        gpu_psu=dict.fromkeys(range(4), "a"),
    )


def test_redundant_psus_split_the_pooled_load_and_each_circuit_carries_its_share() -> None:
    """4 × 300 W + 200 W platform = 1400 W pooled → 700 W DC per PSU (0.4375 of 1600 W);
    wall per PSU 700 / 0.92 = 760.87 W; circuit 1: 200 + 760.87 = 960.87 W (0.6673 of
    1440 W), circuit 2: 760.87 W (0.5284)."""
    ratios = _pair().load_ratios(dict.fromkeys(range(4), 300.0))
    assert ratios["psu:a"] == pytest.approx(0.4375)
    assert ratios["psu:b"] == pytest.approx(0.4375)
    assert ratios["circuit:c1"] == pytest.approx(960.87 / 1440, abs=1e-4)
    assert ratios["circuit:c2"] == pytest.approx(760.87 / 1440, abs=1e-4)


def test_without_the_group_one_psu_carries_everything() -> None:
    """Same box, no redundant group: PSU a carries 1400 W (0.875), PSU b nothing; circuit 1
    200 + 1400 / 0.92 = 1721.7 W: over its 1440 W budget."""
    plain = BudgetModel(
        psus=tuple(p.model_copy(update={"redundant_group": None}) for p in _pair().psus),
        circuits=_pair().circuits,
        gpu_psu=dict.fromkeys(range(4), "a"),
    )
    watts = dict.fromkeys(range(4), 300.0)
    assert plain.psu_dc_w(watts) == pytest.approx({"a": 1400.0, "b": 0.0})
    over = plain.overloads(watts)
    assert [(o.kind, o.name) for o in over] == [("circuit", "c1")]
    assert over[0].load_w == pytest.approx(200 + 1400 / 0.92)


def test_a_reserve_is_what_tips_a_circuit_over() -> None:
    """One 1000 W PSU (92 %), 2 × 300 W + 150 W platform = 750 W DC → 815.2 W at the wall on
    a 1440 W budget: fits. An 800 W heater on the same circuit (reserved_w) makes it
    1615.2 W: over."""
    psus = (Psu(name="p", rating_w=1000, circuit="c", platform_w=150),)
    watts = {0: 300.0, 1: 300.0}
    free = BudgetModel(psus=psus, circuits=(Circuit(name="c", voltage_v=120, breaker_a=15),))
    busy = BudgetModel(
        psus=psus, circuits=(Circuit(name="c", voltage_v=120, breaker_a=15, reserved_w=800),)
    )
    assert free.fits(watts)
    assert not busy.fits(watts)
    assert busy.circuit_wall_w(busy.psu_dc_w(watts))["c"] == pytest.approx(800 + 750 / 0.92)


def test_the_simulator_reads_its_circuits_through_the_same_formula() -> None:
    """A rig file with a redundant pair on two circuits, 300 W reserved on the first. Idle,
    both RTX 3090s draw their idle power P each (whatever the preset says); the pair shares
    2P + 100 W platform, so each PSU carries P + 50 W and circuit a reads 300 W more than
    circuit b."""
    rig = SimRig.from_dict(
        {
            "name": "pair",
            "circuits": [
                {"name": "a", "voltage_v": 230, "breaker_a": 16, "reserved_w": 300},
                {"name": "b", "voltage_v": 230, "breaker_a": 16},
            ],
            "psus": [
                {
                    "name": "p1",
                    "rating_w": 2000,
                    "circuit": "a",
                    "platform_w": 100,
                    "redundant_group": "pair",
                },
                {"name": "p2", "rating_w": 2000, "circuit": "b", "redundant_group": "pair"},
            ],
            "gpus": [
                {
                    "preset": "rtx3090",
                    "slot": 1,
                    "bus_id": "00000000:01:00.0",
                    "psu": "p1",
                    "cpus": "0-3",
                },
                {
                    "preset": "rtx3090",
                    "slot": 3,
                    "bus_id": "00000000:02:00.0",
                    "psu": "p1",
                    "cpus": "4-7",
                },
            ],
        },
        seed=0,
    )
    idle_w = sum(g.power_draw_w() or 0.0 for g in rig.gpus) / 2
    assert rig.psu_draw_w("p1") == pytest.approx(idle_w + 50.0, abs=1.0)
    assert rig.psu_draw_w("p2") == pytest.approx(rig.psu_draw_w("p1"))
    assert rig.circuit_draw_w("a") - rig.circuit_draw_w("b") == pytest.approx(300.0)


def test_the_allocator_pools_a_redundant_pair_and_counts_the_reserve() -> None:
    """Four GPUs at 450 W or 300 W, all wired to PSU a of a redundant pair of 1600 W PSUs
    on one 230 V 32 A circuit (budget 230 × 32 × 0.8 = 5888 W), 10 % headroom. Alone, PSU a
    could carry 0.9 × 1600 = 1440 W: one GPU at 450 W and three at 300 W (1350 W; two at
    450 W would be 1500 W). Pooled, the pair carries
    0.9 × 3200 = 2880 W ≥ 4 × 450 = 1800 W: every GPU gets 450 W. With 4500 W of other loads
    on the circuit (reserved_w), 0.9 × 5888 − 4500 = 799 W is left at the wall: 4 × 300 W
    = 1200 W DC → 1304 W at the wall does not fit either, so no allocation exists."""
    from tuning.budget import CapOption, InfeasibleBudget, Policy, allocate

    options = {
        f"g{i}": [CapOption(300, 90.0, 300.0), CapOption(450, 100.0, 450.0)] for i in range(4)
    }

    def budget(reserved_w: float, group: str | None) -> BudgetModel[str]:
        return BudgetModel(
            psus=(
                Psu(name="a", rating_w=1600, circuit="c", redundant_group=group),
                Psu(name="b", rating_w=1600, circuit="c", redundant_group=group),
            ),
            circuits=(Circuit(name="c", voltage_v=230, breaker_a=32, reserved_w=reserved_w),),
            gpu_psu={f"g{i}": "a" for i in range(4)},
        )

    alone = allocate(options, budget(0.0, None), Policy.THROUGHPUT)
    assert sorted(alone.caps_w.values()) == [300, 300, 300, 450]
    pooled = allocate(options, budget(0.0, "pair"), Policy.THROUGHPUT)
    assert sorted(pooled.caps_w.values()) == [450, 450, 450, 450]
    with pytest.raises(InfeasibleBudget):
        allocate(options, budget(4500.0, "pair"), Policy.THROUGHPUT)
