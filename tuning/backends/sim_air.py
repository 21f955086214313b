"""The air the simulated cards breathe: each card's inlet temperature from the others' heat.

Every arrangement here is linear in the cards' power, so the simulator keeps one matrix and
one offset: ``inlet = ambient + offset_c + M @ P`` (°C, W). Built from a rig file's ``rack``
(:class:`~tuning.backends.sim_config.RackSpec`):

* ``mixed`` airflow (open frames, towers): ``M[i, j] = coupling_c_per_w ×
  coupling_decay^(|slot_i − slot_j| − 1)`` for ``i ≠ j`` — a neighbour's exhaust mixes into
  the inlet, less with each slot of distance;
* ``front_to_back`` (a series chain): ``M[i, j] = 1.755 / chain.airflow_cfm`` when card j is
  upstream of card i (nearer the intake), else 0 — all of an upstream card's heat is in the
  air that reaches the cards behind it, none flows back;
* a closed ``case`` adds ``1.755 / case.airflow_cfm`` to every entry, the diagonal included
  (a card's own heat warms the case air it breathes), and ``offset_c = 1.755 ×
  other_heat_w / case.airflow_cfm`` for the heat that is not a GPU's.

1.755 °C per W at 1 CFM: :data:`~tuning.backends.sim_config.AIR_C_PER_W_AT_1_CFM` (the
sensible-heat equation). Worked example: a closed case moving 100 CFM with 200 W of CPU and
board heat and four 300 W cards front to back through 50 CFM: case air = ambient + 1.755 ×
(1200 + 200) / 100 = ambient + 24.6 °C; the last card's inlet adds 1.755 × 900 / 50 = 31.6 °C.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tuning.backends.sim_config import AIR_C_PER_W_AT_1_CFM, RackSpec


def air_coupling(
    rack: RackSpec, slots: Sequence[int], platform_w: float
) -> tuple[np.ndarray, float]:
    """``(M, offset_c)`` with ``inlet = ambient + offset_c + M @ P`` (module doc).

    ``slots``: each card's slot (the order along a front-to-back chain); ``platform_w``: the
    PSUs' non-GPU load, the case's other heat unless ``case.other_heat_w`` says otherwise.
    Units: °C/W, °C, W.
    """
    pos = np.asarray(slots, dtype=float)
    dist = np.abs(pos[:, None] - pos[None, :])
    if rack.airflow == "front_to_back":
        assert rack.chain is not None  # RackSpec refuses front_to_back without a chain
        upstream = pos[None, :] < pos[:, None]  # [i, j]: j nearer a low-slot intake than i
        if rack.chain.intake == "high_slot":
            upstream = pos[None, :] > pos[:, None]
        coupling = np.where(upstream, AIR_C_PER_W_AT_1_CFM / rack.chain.airflow_cfm, 0.0)
    else:
        coupling = rack.coupling_c_per_w * rack.coupling_decay ** np.maximum(dist - 1, 0)
        np.fill_diagonal(coupling, 0.0)
    offset_c = 0.0
    if rack.case is not None:
        k_case = AIR_C_PER_W_AT_1_CFM / rack.case.airflow_cfm
        coupling = coupling + k_case
        other_w = rack.case.other_heat_w if rack.case.other_heat_w is not None else platform_w
        offset_c = k_case * other_w
    return coupling, float(offset_c)
