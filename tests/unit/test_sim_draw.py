"""A real load measured against a simulated rig makes the simulated card draw.

Expectation from the rig file, not the code: sim:4x3090's RTX 3090 idles at 30 W (its
preset's idle_w, from the nvidia-smi -q capture) and its minimum cap is 100 W; a card serving
an engine draws well above that minimum, so caps between 100 and 350 W have something to act on.
"""

from __future__ import annotations

from tuning.backends import open_rig
from tuning.workloads.base import Workload
from tuning.workloads.factory import make_workload
from tuning.workloads.sim_draw import SimDrawMirror


class _Counting(Workload):
    name = "outside"

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, uuid: str) -> None:
        self.started.append(uuid)

    def stop(self, uuid: str) -> None:
        self.started.remove(uuid)

    def tokens_total(self, uuid: str) -> float:
        return 42.0


def test_the_card_draws_while_the_real_load_runs_and_idles_after() -> None:
    rig = open_rig("sim:4x3090", seed=0)
    gpu = rig.gpus[0]
    inner = _Counting()
    load = SimDrawMirror(inner, rig)
    rig.clock.sleep(5.0)
    idle_w = gpu.power_draw_w()
    assert idle_w is not None
    assert idle_w < gpu.power_constraints().min_w
    load.start(gpu.uuid)
    rig.clock.sleep(5.0)
    loaded_w = gpu.power_draw_w()
    assert loaded_w is not None
    assert loaded_w > 2 * gpu.power_constraints().min_w
    assert load.tokens_total(gpu.uuid) == 42.0  # the tokens are the real load's
    load.stop(gpu.uuid)
    rig.clock.sleep(5.0)
    after_w = gpu.power_draw_w()
    assert after_w is not None
    assert after_w < gpu.power_constraints().min_w
    assert inner.started == []


def test_openai_on_a_sim_rig_is_mirrored() -> None:
    rig = open_rig("sim:4x3090", seed=0)
    spec = "openai:" + ",".join(f"{i}=http://127.0.0.1:{18900 + i}" for i in range(4))
    assert isinstance(make_workload(spec, rig), SimDrawMirror)
