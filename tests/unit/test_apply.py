"""Journal, safety session and profile application on a small simulated rig."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuning.apply import actuator as actuator_module
from tuning.apply import state as state_module
from tuning.apply.actuator import Actuator, open_tuning_rig
from tuning.apply.caps import apply_caps
from tuning.apply.journal import Journal, journal_path, recover_stale_journals, stale_journals
from tuning.apply.runlock import RigBusy
from tuning.apply.session import SafetySession
from tuning.apply.state import atomic_write_json, state_dir
from tuning.budget import BudgetModel
from tuning.core.power import Psu
from tuning.errors import NoPermission, OutOfRange, ReadBackMismatch, RigforgeError, UnknownGpu


def caps(actuator: Actuator) -> dict[str, float]:
    return {g.uuid: g.power_limit_w() for g in actuator.rig.gpus}


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "j.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["j.json"]


def test_session_restores_on_exception_and_removes_the_journal(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    before = caps(actuator)
    uuid = next(iter(before))
    journaled = []

    def probe_that_fails() -> None:
        with SafetySession(actuator, log=lambda m: None):
            journaled.append(journal_path(rig_file).is_file())
            actuator.set_cap(uuid, 150)
            raise RuntimeError("mid-probe failure")

    with pytest.raises(RuntimeError):
        probe_that_fails()
    assert journaled == [True], "journaled before the first change"
    assert caps(actuator) == before
    assert not journal_path(rig_file).exists()


def test_simulated_caps_outlive_the_process(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    uuid = actuator.rig.gpus[0].uuid
    actuator.set_cap(uuid, 180)
    _, reopened = open_tuning_rig(rig_file)
    assert reopened.rig.gpu(uuid).power_limit_w() == 180


def test_stale_journal_of_a_dead_process_is_detected_and_restored(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    before = caps(actuator)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    journal = Journal(journal_path(rig_file), rig_file, actuator.settings(), pid=int(dead.stdout))
    journal.save()
    for uuid in before:
        actuator.set_cap(uuid, 120)
    assert stale_journals() == [journal_path(rig_file)]
    recover_stale_journals()
    _, reopened = open_tuning_rig(rig_file)
    assert caps(reopened) == before
    assert not journal_path(rig_file).exists()


def test_a_live_journal_is_not_stale(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    Journal(journal_path(rig_file), rig_file, actuator.settings(), pid=os.getpid()).save()
    assert stale_journals() == []


def test_resume_hands_back_completed_probes_only_for_the_same_sweep(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    key = {"workload": "decode", "seed": 1}
    journal = Journal(journal_path(rig_file), rig_file, actuator.settings(), pid=-1, sweep_key=key)
    probe = {
        "cap_w": 300.0, "throughput_tps": 10.0, "power_w": 290.0, "temp_c": 60.0,
        "peak_temp_c": 65.0, "throttled": False, "steady": True, "duration_s": 30.0,
    }  # fmt: skip
    journal.probes = {"GPU-x": [probe]}
    journal.save()
    with SafetySession(actuator, sweep_key=key, log=lambda m: None) as session:
        assert session.resumed_probes == {"GPU-x": [probe]}
    journal.save()
    with SafetySession(actuator, sweep_key={"workload": "prefill"}, log=lambda m: None) as other:
        assert other.resumed_probes == {}


def test_apply_clamps_reads_back_and_refuses_unknown_uuids(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    gpu = actuator.rig.gpus[0]
    with pytest.raises(UnknownGpu):
        apply_caps(actuator, {gpu.uuid: 200, "GPU-not-here": 200})
    assert gpu.power_limit_w() == gpu.power_constraints().default_w, "nothing changed"
    (result,) = apply_caps(actuator, {gpu.uuid: 5000})
    assert result.target_w == gpu.power_constraints().max_w
    (dry,) = apply_caps(actuator, {gpu.uuid: 200}, dry_run=True)
    assert dry.changed
    assert gpu.power_limit_w() == gpu.power_constraints().max_w


def test_read_back_mismatch_is_an_error(rig_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, actuator = open_tuning_rig(rig_file)
    gpu = actuator.rig.gpus[0]
    monkeypatch.setattr(gpu, "set_power_limit_w", lambda w: 350.0)
    with pytest.raises(ReadBackMismatch, match="reads back"):
        actuator.set_cap(gpu.uuid, 200)


# -- defect 4: one state directory for root, however rigforge was started --------------------


def test_root_journals_in_var_lib_whatever_home_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path("/var/lib/rigforge/state") == state_module.SYSTEM_STATE_DIR
    system = tmp_path / "var-lib-rigforge-state"
    monkeypatch.setattr(state_module, "SYSTEM_STATE_DIR", system)
    monkeypatch.delenv("RIGFORGE_STATE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "root-home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(state_module.os, "geteuid", lambda: 0)
    assert state_dir() == system
    assert journal_path("nvml").parent == system
    monkeypatch.setattr(state_module.os, "geteuid", lambda: 1000)
    assert state_dir() == tmp_path / "xdg" / "rigforge"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_dir() == tmp_path / "root-home" / ".local" / "state" / "rigforge"
    monkeypatch.setenv("RIGFORGE_STATE_DIR", str(tmp_path / "override"))
    monkeypatch.setattr(state_module.os, "geteuid", lambda: 0)
    assert state_dir() == tmp_path / "override"


# -- defect 5: apply is all or nothing, lowers first, and fits the budget ---------------------


def test_apply_failing_on_a_later_gpu_rolls_the_earlier_ones_back(
    rig_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, actuator = open_tuning_rig(rig_file)
    first, second = actuator.rig.gpus
    before = caps(actuator)

    def denied(w: float) -> float:
        raise NoPermission("changing the power limit needs root")

    monkeypatch.setattr(second, "set_power_limit_w", denied)
    with pytest.raises(NoPermission):
        apply_caps(actuator, {first.uuid: 150, second.uuid: 160}, log=lambda m: None)
    assert caps(actuator) == before, "GPU 0 was put back"
    assert not journal_path(rig_file).exists()


def test_apply_lowers_before_it_raises_and_keeps_the_caps(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    raised, lowered = actuator.rig.gpus
    actuator.set_cap(raised.uuid, 150)
    order: list[str] = []
    actuator.on_change = lambda uuid, cap_w: order.append(uuid)
    apply_caps(actuator, {raised.uuid: 300, lowered.uuid: 200}, log=lambda m: None)
    assert order == [lowered.uuid, raised.uuid]
    assert caps(actuator) == {raised.uuid: 300, lowered.uuid: 200}
    assert not journal_path(rig_file).exists(), "success: kept, journal gone"


def test_apply_refuses_caps_over_the_budget_before_any_change(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    first, second = actuator.rig.gpus
    before = caps(actuator)
    budget = BudgetModel(
        psus=(Psu(name="p1", rating_w=700, circuit="c1", platform_w=150),),
        gpu_psu={first.uuid: "p1", second.uuid: "p1"},
    )
    with pytest.raises(OutOfRange, match=r"psu:p1 at 114%"):
        apply_caps(actuator, {first.uuid: 350, second.uuid: 300}, budget=budget)
    assert caps(actuator) == before
    apply_caps(actuator, {first.uuid: 250, second.uuid: 250}, budget=budget, log=lambda m: None)


def test_apply_command_checks_a_given_budget(
    rig_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from click.testing import CliRunner

    from tuning.commands import apply as apply_command

    _, actuator = open_tuning_rig(rig_file)
    before = caps(actuator)
    profile = SimpleNamespace(
        rig=SimpleNamespace(fingerprint=actuator.rig.snapshot().fingerprint()),
        caps_w=lambda: dict.fromkeys(before, 200.0),
    )
    monkeypatch.setattr(apply_command, "load_profile", lambda path: profile)
    budget = tmp_path / "budget.yaml"
    budget.write_text("psus: [{name: tiny, rating_w: 500, platform_w: 150}]\n")
    args = ["profile.yaml", "--rig", rig_file, "--budget", str(budget)]
    result = CliRunner().invoke(apply_command.command, args)
    assert isinstance(result.exception, OutOfRange), result.output
    assert "psu:tiny at 110%" in str(result.exception)
    assert caps(actuator) == before


# -- defect 6: one run per rig ----------------------------------------------------------------


def test_a_second_session_on_the_same_rig_is_refused_naming_the_holder(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    uuid = actuator.rig.gpus[0].uuid
    with SafetySession(actuator, log=lambda m: None):
        actuator.set_cap(uuid, 150)
        _, second = open_tuning_rig(rig_file)
        with pytest.raises(RigBusy, match=f"pid {os.getpid()}"):
            SafetySession(second, log=lambda m: None).__enter__()
        with pytest.raises(RigBusy):
            apply_caps(second, {uuid: 200}, log=lambda m: None)
        assert Journal.load(journal_path(rig_file)).original[uuid].power_limit_w != 150, (
            "the running session's journal still holds the true original"
        )
    with SafetySession(actuator, log=lambda m: None):
        pass  # released on exit


def test_apply_during_another_process_run_is_refused(rig_file: str) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tuning.apply.runlock import RigLock\n"
            f"with RigLock({rig_file!r}):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        _, actuator = open_tuning_rig(rig_file)
        gpu = actuator.rig.gpus[0]
        before = gpu.power_limit_w()
        with pytest.raises(RigBusy, match=f"pid {holder.pid}"):
            apply_caps(actuator, {gpu.uuid: 150}, log=lambda m: None)
        assert gpu.power_limit_w() == before
    finally:
        holder.communicate("", timeout=10)
    apply_caps(actuator, {gpu.uuid: 150}, log=lambda m: None)
    assert gpu.power_limit_w() == 150, "the lock died with its holder"


# -- issue 3: transient failures are retried, then the whole apply rolls back -----------------


def _flaky(gpu, failures: int | None, error: Exception):
    """Make ``gpu``'s set fail ``failures`` times (None: always) with ``error``, then work."""
    real = gpu.set_power_limit_w
    calls = {"n": 0}

    def set_power_limit_w(w: float) -> float:
        calls["n"] += 1
        if failures is None or calls["n"] <= failures:
            raise error
        return real(w)

    gpu.set_power_limit_w = set_power_limit_w
    return calls


def test_apply_retries_a_transient_failure_and_keeps_the_caps(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    first, second = actuator.rig.gpus
    calls = _flaky(second, 2, RigforgeError("NVML nvmlDeviceSetPowerManagementLimit: Unknown"))
    slept: list[float] = []
    logs: list[str] = []
    apply_caps(actuator, {first.uuid: 150, second.uuid: 160}, log=logs.append, sleep=slept.append)
    assert calls["n"] == 3
    assert slept == [0.5, 0.5]
    assert caps(actuator) == {first.uuid: 150, second.uuid: 160}
    assert sum("retrying" in line and second.uuid in line for line in logs) == 2


def test_apply_gives_up_after_the_retries_and_rolls_everything_back(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    first, second = actuator.rig.gpus
    before = caps(actuator)
    # the card ignores the new limit: every read-back disagrees
    second.set_power_limit_w = lambda w: before[second.uuid]
    slept: list[float] = []
    with pytest.raises(ReadBackMismatch, match=f"GPU {second.uuid}.* failed 4 times"):
        apply_caps(
            actuator,
            {first.uuid: 150, second.uuid: 160},
            log=lambda m: None,
            retry_delay_s=0.1,
            sleep=slept.append,
        )
    assert slept == [0.1, 0.1, 0.1]
    assert caps(actuator) == before, "GPU 0 was put back"
    assert not journal_path(rig_file).exists()


def test_apply_does_not_retry_what_a_retry_cannot_fix(rig_file: str) -> None:
    _, actuator = open_tuning_rig(rig_file)
    gpu = actuator.rig.gpus[0]
    calls = _flaky(gpu, None, NoPermission("changing the power limit needs root"))
    slept: list[float] = []
    with pytest.raises(NoPermission):
        apply_caps(actuator, {gpu.uuid: 150}, log=lambda m: None, sleep=slept.append)
    assert (calls["n"], slept) == (1, [])


def test_apply_command_fails_naming_the_gpu_after_its_retries(
    rig_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from click.testing import CliRunner

    from tuning.commands import apply as apply_command

    rig, actuator = open_tuning_rig(rig_file)
    before = caps(actuator)
    flaky_uuid = rig.gpus[1].uuid
    profile = SimpleNamespace(
        rig=SimpleNamespace(fingerprint=rig.snapshot().fingerprint()),
        caps_w=lambda: dict.fromkeys(before, 150.0),
    )
    monkeypatch.setattr(apply_command, "load_profile", lambda path: profile)
    real_open = actuator_module.open_tuning_rig

    def open_flaky(spec: str, **kwargs):
        opened, act = real_open(spec, **kwargs)
        _flaky(opened.gpu(flaky_uuid), None, RigforgeError("NVML: Timeout"))
        return opened, act

    monkeypatch.setattr(apply_command, "open_tuning_rig", open_flaky)
    args = ["profile.yaml", "--rig", rig_file, "--retries", "2", "--retry-delay-s", "0"]
    result = CliRunner().invoke(apply_command.command, args)
    assert isinstance(result.exception, RigforgeError), result.output
    assert f"GPU {flaky_uuid}: setting a 150 W limit failed 3 times" in str(result.exception)
    assert result.output.count("retrying") == 2
    assert caps(open_tuning_rig(rig_file)[1]) == before
