"""The simulated rig's air (issue 12 item 2): front-to-back chains and closed cases.

Expectations come from the sensible-heat equation, q[BTU/h] = 1.08 × CFM × ΔT[°F]
(ASHRAE Handbook—Fundamentals), worked by hand: ΔT[°C] = 3.412 × W / (1.08 × CFM) / 1.8
= 1.7551 × W / CFM.
"""

from __future__ import annotations

import numpy as np
import pytest

from tuning.backends import open_rig
from tuning.backends.sim_air import air_coupling
from tuning.backends.sim_config import RackSpec

C_PER_W_CFM = 3.412 / (1.08 * 1.8)  # 1.7551 °C per W at 1 CFM


def test_the_module_docstring_example() -> None:
    """Closed case, 100 CFM, 200 W of other heat; four 300 W cards front to back through
    50 CFM. Case air = ambient + 1.7551 × 1400 / 100 = +24.57 °C; card k's inlet adds
    1.7551 × 300·k / 50 = 10.53·k °C (k cards upstream): +24.57, +35.10, +45.63, +56.16."""
    rack = RackSpec(
        ambient_c=25.0,
        airflow="front_to_back",
        chain={"airflow_cfm": 50.0},
        case={"airflow_cfm": 100.0, "other_heat_w": 200.0},
    )
    matrix, offset_c = air_coupling(rack, [1, 2, 3, 4], platform_w=999.0)
    rise = offset_c + matrix @ np.full(4, 300.0)
    assert rise == pytest.approx([24.57, 35.10, 45.63, 56.16], abs=0.01)


def test_a_high_slot_intake_reverses_the_chain_and_an_open_case_adds_nothing() -> None:
    """No case; 100 W per card through 20 CFM entering at the high slot: slot 3 breathes
    room air, slot 2 +8.78 °C (1.7551 × 100 / 20), slot 1 +17.55 °C."""
    rack = RackSpec(airflow="front_to_back", chain={"airflow_cfm": 20.0, "intake": "high_slot"})
    matrix, offset_c = air_coupling(rack, [1, 2, 3], platform_w=500.0)
    assert offset_c == 0.0
    assert matrix @ np.full(3, 100.0) == pytest.approx([17.55, 8.78, 0.0], abs=0.01)


def test_a_case_without_other_heat_counts_the_platform() -> None:
    """Mixed airflow with no neighbour coupling, a case at 200 CFM, 350 W platform and one
    250 W card: case air +1.7551 × 600 / 200 = +5.27 °C."""
    rack = RackSpec(coupling_c_per_w=0.0, case={"airflow_cfm": 200.0})
    matrix, offset_c = air_coupling(rack, [1], platform_w=350.0)
    assert offset_c + float(matrix[0, 0]) * 250.0 == pytest.approx(5.27, abs=0.01)


def test_the_closed_front_to_back_rig_heats_down_the_chain() -> None:
    """sim:4xa100-closed, every card loaded at 250 W: each card's inlet is the one ahead's
    plus 1.7551 × P_ahead / 160 CFM (its chain), and the first card's inlet is the case air,
    25 °C + 1.7551 × (Σ P + 260 W other heat) / 260 CFM. Measured draws, not the model's."""
    rig = open_rig("sim:4xa100-closed", seed=0)
    for gpu in rig.gpus:
        gpu.set_power_limit_w(250.0)
        rig.set_workload(gpu.uuid, "prefill")
    rig.clock.sleep(600.0)
    inlet = rig.inlet_temps_c()
    gpus = sorted(rig.gpus, key=lambda g: g.index)
    draws = [g.power_draw_w() or 0.0 for g in gpus]  # NVML's 1 s average, ±1.5 W noise
    case_c = 25.0 + C_PER_W_CFM * (sum(draws) + 260.0) / 260.0
    assert inlet[gpus[0].uuid] == pytest.approx(case_c, abs=0.1)
    for ahead, behind, p_w in zip(gpus, gpus[1:], draws, strict=False):
        assert inlet[behind.uuid] - inlet[ahead.uuid] == pytest.approx(
            C_PER_W_CFM * p_w / 160.0, abs=0.1
        )
    temps = [g.temperature_c() for g in gpus]
    assert temps == sorted(temps), "the last card in the chain runs hottest"
