"""Defect 1: a real-GPU sweep must run inside a power budget someone described.

NVML knows nothing of PSUs or circuits; the budget comes from ``--budget FILE`` or the
inventory (``--inventory FILE --host NAME``). Without one, ``--rig nvml`` refuses to start
unless ``--no-budget`` is given. A budget given for a simulated rig replaces its own PSUs,
which is how these tests drive a sweep under a budget without hardware.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from tuning import backends
from tuning import budget as budget_module
from tuning.apply.actuator import open_tuning_rig
from tuning.apply.session import SafetySession
from tuning.backends.base import GpuSample
from tuning.backends.nvml import NvmlRig
from tuning.budget import BudgetModel, RigBudget, load_budget_file, load_inventory_budget
from tuning.commands import sweep as sweep_command
from tuning.core.power import Psu
from tuning.errors import ConfigError, SafetyAbort
from tuning.sweep import Sweep, SweepConfig
from tuning.workloads import SimWorkload

RIG_YAML = """
name: budget-test
seed: 0
circuits: [{name: c1, voltage_v: 240, breaker_a: 30}]
psus: [{name: p1, rating_w: 3000, circuit: c1, platform_w: 150}]
gpus:
  - {preset: rtx3090, slot: 1, bus_id: "00000000:01:00.0", psu: p1}
  - {preset: rtx3090, slot: 3, bus_id: "00000000:21:00.0", psu: p1}
  - {preset: rtx3090, slot: 5, bus_id: "00000000:41:00.0", psu: p1}
"""

#: 800 W DC with 150 W platform: at the 0.95 sweep limit, 610 W of caps — one 3090 probing
#: uncapped (350 W) while the other two sit at their 100 W minimum, never two uncapped at once.
TIGHT_BUDGET = """
psus:
  - {name: small, rating_w: 800, circuit: wall, efficiency: 0.9, platform_w: 150}
circuits:
  - {name: wall, voltage_v: 120, breaker_a: 15, continuous_ratio: 0.8}
gpus: {}
"""


@pytest.fixture
def rig_file(
    write_rig: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setattr(budget_module, "DEFAULT_BUDGET_PATH", tmp_path / "no-such-budget.yaml")
    return str(write_rig(RIG_YAML))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the budget file ----------------------------------------------------------------------


def test_budget_file_errors_carry_yaml_paths(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "b.yaml",
        """
psus:
  - {name: a, rating_w: -5, circuit: c1}
  - {name: b, rating_w: 800, circuit: c9}
circuits: [{name: c1, voltage_v: 120, breaker_a: 15}]
gpus: {GPU-1: z}
""",
    )
    with pytest.raises(ConfigError, match=r"psus\[0\]\.rating_w"):
        load_budget_file(bad)
    bad.write_text(bad.read_text().replace("rating_w: -5", "rating_w: 900"))
    with pytest.raises(ConfigError) as info:
        load_budget_file(bad)
    assert "psus[1].circuit: unknown circuit 'c9'" in str(info.value)
    assert "gpus.GPU-1: unknown PSU 'z'" in str(info.value)


def gpus(*pairs: tuple[str, str]) -> list[SimpleNamespace]:
    return [SimpleNamespace(uuid=u, pci_bus_id=b) for u, b in pairs]


def test_gpus_resolve_by_uuid_or_bus_id_and_none_is_left_off_a_psu() -> None:
    two = RigBudget(
        psus=(Psu(name="a", rating_w=1000, circuit="c"), Psu(name="b", rating_w=1000, circuit="c")),
        gpu_psu={"0000:41:00.0": "b"},
    )
    rig_gpus = gpus(("GPU-x", "00000000:41:00.0"), ("GPU-y", "00000000:42:00.0"))
    with pytest.raises(ConfigError, match="GPU-y are fed by no PSU"):
        two.psu_map(rig_gpus)  # type: ignore[arg-type]
    full = RigBudget(psus=two.psus, gpu_psu={"0000:41:00.0": "b", "GPU-y": "a"})
    assert full.psu_map(rig_gpus) == {"GPU-x": "b", "GPU-y": "a"}  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="GPU-gone"):
        RigBudget(psus=two.psus, gpu_psu={"GPU-gone": "a"}).psu_map(rig_gpus)  # type: ignore[arg-type]
    one = RigBudget(psus=(Psu(name="only", rating_w=1000, circuit="c"),))
    assert one.psu_map(rig_gpus) == {"GPU-x": "only", "GPU-y": "only"}  # type: ignore[arg-type]


def test_inventory_host_gives_the_budget() -> None:
    inventory = Path(__file__).resolve().parents[2] / "inventory" / "examples" / "ci.yaml"
    budget = load_inventory_budget(inventory, "ci-target")
    assert [p.name for p in budget.psus] == ["psu-a"]
    assert budget.circuits[0].budget_w == pytest.approx(230 * 10 * 0.8)
    assert set(budget.gpu_psu.values()) == {"psu-a"}
    with pytest.raises(ConfigError, match="no host 'nope'"):
        load_inventory_budget(inventory, "nope")


# -- real GPUs: refused without a budget, built with one ----------------------------------


def test_nvml_sweep_without_a_budget_is_refused_before_nvml_opens(
    rig_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = []
    monkeypatch.setattr(NvmlRig, "open", classmethod(lambda cls, *a, **k: opened.append(1)))
    result = CliRunner().invoke(sweep_command.command, ["--rig", "nvml"])
    assert isinstance(result.exception, ConfigError)
    assert "refusing to sweep real GPUs without a power budget" in str(result.exception)
    assert opened == []


def test_no_budget_warns_loudly(rig_file: str) -> None:
    from tuning.commands.budget_opts import resolve_budget

    logged: list[str] = []
    got = resolve_budget(
        "nvml",
        budget_path=None,
        inventory_path=None,
        host_name=None,
        no_budget=True,
        required=True,
        log=logged.append,
    )
    assert got is None
    assert "WARNING" in logged[0]
    assert "NO PSU or circuit budget" in logged[0]


def test_nvml_rig_opened_with_the_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_gpus = gpus(("GPU-a", "00000000:01:00.0"), ("GPU-b", "00000000:02:00.0"))
    monkeypatch.setattr(NvmlRig, "open", classmethod(lambda cls, *a, **k: cls(fake_gpus)))
    path = write(
        tmp_path,
        "b.yaml",
        """
psus: [{name: p1, rating_w: 1000, circuit: c1}, {name: p2, rating_w: 850, circuit: c1}]
circuits: [{name: c1, voltage_v: 120, breaker_a: 20}]
gpus: {GPU-a: p1, "01:00.0": p1, "0000:02:00.0": p2}
""",
    )
    rig = backends.open_rig("nvml", budget=load_budget_file(path))
    assert [p.name for p in rig.psus()] == ["p1", "p2"]
    assert [c.name for c in rig.circuits()] == ["c1"]
    assert (rig.psu_of("GPU-a"), rig.psu_of("GPU-b")) == ("p1", "p2")
    assert BudgetModel.from_rig(rig).load_ratios({"GPU-a": 500, "GPU-b": 425}) == {
        "psu:p1": 0.5,
        "psu:p2": 0.5,
        "circuit:c1": pytest.approx((500 / 0.92 + 425 / 0.92) / 1920),
    }


# -- a sweep under a given budget ----------------------------------------------------------


def run_sweep(
    rig_file: str, budget: BudgetModel | None, config: SweepConfig | None = None, **gpu_patches
) -> tuple[Sweep, int]:
    rig, actuator = open_tuning_rig(rig_file)
    for name, fake in gpu_patches.items():
        for gpu in rig.gpus:
            setattr(gpu, name, fake(gpu, getattr(gpu, name)))
    load = SimWorkload(rig, "decode")
    running: set[str] = set()
    most = [0]
    start, stop = load.start, load.stop

    def counted_start(uuid: str) -> None:
        running.add(uuid)
        most[0] = max(most[0], len(running))
        start(uuid)

    def counted_stop(uuid: str) -> None:
        running.discard(uuid)
        stop(uuid)

    load.start, load.stop = counted_start, counted_stop  # type: ignore[method-assign]
    config = config or SweepConfig(heat_soak_s=10.0, max_soak_rounds=1)
    with SafetySession(actuator, log=lambda m: None) as session:
        sweep = Sweep(rig, actuator, load, config, session=session, budget=budget)
        sweep.actuator.on_change = sweep._on_change
        for uuid in sweep.uuids:
            sweep._park(uuid)
        try:
            sweep._probe_all()
        finally:
            sweep.actuator.on_change = None  # the restore on exit is not part of the sweep
    return sweep, most[0]


def test_parallel_probes_are_limited_by_a_given_budget(rig_file: str, tmp_path: Path) -> None:
    rig, _ = open_tuning_rig(rig_file)
    tight = load_budget_file(write(tmp_path, "b.yaml", TIGHT_BUDGET)).model(rig.gpus)
    _, free_parallel = run_sweep(rig_file, None)
    sweep, tight_parallel = run_sweep(rig_file, tight)
    assert free_parallel == 3, "the rig file's own 3 kW PSU lets every GPU probe at once"
    assert tight_parallel < free_parallel
    # after the three parking events (stock caps lowered to the minimum, one by one)
    states = [caps for _, caps in sweep.trace.live_caps_at_each_event()[4:]]
    assert max(sum(cap >= 300 for cap in caps.values()) for caps in states) == 1
    assert max(sweep.budget.max_ratio(caps) for caps in states) <= 0.95 + 1e-9
    assert all(len(s.points) >= 2 for s in sweep.searches.values()), "every GPU was probed"


def test_watchdog_trips_when_draw_nears_the_given_budget(rig_file: str, tmp_path: Path) -> None:
    rig, _ = open_tuning_rig(rig_file)
    tight = load_budget_file(write(tmp_path, "b.yaml", TIGHT_BUDGET)).model(rig.gpus)

    def overdrawing(gpu, original):
        # a card whose real draw runs far over its cap (a miscalibrated shunt, a bad figure)
        def sample(now_s: float) -> GpuSample:
            real = original(now_s)
            return replace(real, power_draw_w=(real.power_draw_w or 0.0) * 2.5)

        return sample

    with pytest.raises(SafetyAbort, match="psu:small"):
        run_sweep(rig_file, tight, sample=overdrawing)


# -- defect 7: the draw watchdog sees every GPU, and a missing sensor is not 0 W ---------------


def test_draw_watchdog_counts_parked_gpus(rig_file: str, tmp_path: Path) -> None:
    rig, _ = open_tuning_rig(rig_file)
    tight = load_budget_file(write(tmp_path, "b.yaml", TIGHT_BUDGET)).model(rig.gpus)

    def busy_elsewhere(gpu, original):
        if not gpu.pci_bus_id.endswith("41:00.0"):
            return original

        def sample(now_s: float) -> GpuSample:
            # parked by the sweep, yet loaded by a process the sweep does not own
            return replace(original(now_s), power_draw_w=400.0)

        return sample

    with pytest.raises(SafetyAbort, match="psu:small"):
        run_sweep(rig_file, tight, sample=busy_elsewhere)


def test_a_gpu_without_a_power_sensor_counts_at_its_cap(rig_file: str) -> None:
    rig, _ = open_tuning_rig(rig_file)
    # 710 W DC, 150 W platform: one uncapped probe (350 W) + two parked cards (100 W each)
    # is 700 W of caps, 98.6 % — allowed with sweep_limit_ratio 1.0, over the 98 % trip if
    # the caps themselves are taken as the draw; the cards' measured draw stays well under
    budget = BudgetModel(
        psus=(Psu(name="small", rating_w=710, platform_w=150),),
        gpu_psu={gpu.uuid: "small" for gpu in rig.gpus},
    )
    config = SweepConfig(heat_soak_s=10.0, max_soak_rounds=1, sweep_limit_ratio=1.0)
    run_sweep(rig_file, budget, config)  # sensors present: measured draw never trips

    def no_sensor(gpu, original):
        return lambda now_s: replace(original(now_s), power_draw_w=None)

    with pytest.raises(SafetyAbort, match="psu:small reached 99%"):
        run_sweep(rig_file, budget, config, sample=no_sensor)
