"""The journal cannot lose the originals: each fault ends with the original caps restored, or
with the command refusing (non-zero exit, the file named, what to do) and the journal kept
byte for byte.

Set-up for every case: a sweep lowered every GPU to its minimum cap and died (``kill -9``)
leaving its journal; then the journal is damaged. "Restored" means a new process sees each
GPU at its default limit (the rig file's stock caps) and the journal is gone.

Faults: 0-byte, truncated, non-JSON, non-UTF-8, missing keys (checksum valid, so the key check
refuses, not the checksum), a journal written for another rig, a live PID of another program,
out-of-range originals; and the second copy recovering a damaged primary.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.entry_point import run_rigforge
from tests.unit.sim_caps import caps_now, stock_caps
from tuning.apply.actuator import open_tuning_rig
from tuning.apply.journal import Journal, backup_path, journal_path

COMMANDS = (["restore"], ["inspect", "--json"], ["sweep", "--heat-soak-s", "60", "--json"])


@pytest.fixture
def crashed(rig_file: str) -> str:
    """A rig left at minimum caps by a dead sweep, its journal (pid -1: writer gone) behind."""
    rig, actuator = open_tuning_rig(rig_file)
    Journal(journal_path(rig_file), rig_file, actuator.settings(), pid=-1).save()
    for gpu in rig.gpus:
        actuator.set_cap(gpu.uuid, gpu.power_constraints().min_w)
    assert caps_now(rig_file) != stock_caps(rig_file)
    return rig_file


def run(
    argv: list[str], spec: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str]:
    """``rigforge ARGV --rig SPEC`` in process, through the real entry point."""
    return run_rigforge([*argv, "--rig", spec], monkeypatch, capsys)


def _rewrite(path: Path, body_edit: Callable[[dict], None]) -> None:
    """Edit the body and write it back with a VALID checksum (so only the edit is wrong)."""
    document = json.loads(path.read_text())
    body_edit(document["body"])
    canonical = json.dumps(document["body"], sort_keys=True, separators=(",", ":"))
    document["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    path.write_text(json.dumps(document))


def _both(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        damage(path)
        damage(backup_path(path))

    return apply


UNREADABLE: dict[str, Callable[[Path], None]] = {
    "zero-bytes": _both(lambda p: p.write_bytes(b"")),
    "truncated": _both(lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
    "not-json": _both(lambda p: p.write_text("this is not a journal\n")),
    "not-utf8": _both(lambda p: p.write_bytes(b"\xff\xfe{\x00" + p.read_bytes()[4:])),
    "missing-original": _both(lambda p: _rewrite(p, lambda b: b.pop("original"))),
    "cap-not-a-number": _both(
        lambda p: _rewrite(
            p, lambda b: [s.update(power_limit_w="high") for s in b["original"].values()]
        )
    ),
    "checksum-mismatch": _both(
        lambda p: p.write_text(p.read_text().replace('"power_limit_w": ', '"power_limit_w": 1'))
    ),
}


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
@pytest.mark.parametrize("fault", list(UNREADABLE))
def test_unreadable_journal_is_kept_and_the_command_refuses(
    crashed: str,
    fault: str,
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    path = journal_path(crashed)
    UNREADABLE[fault](path)
    before = (path.read_bytes(), backup_path(path).read_bytes())
    caps_before = caps_now(crashed)
    status, output = run(command, crashed, monkeypatch, capsys)
    assert status != 0, output
    assert "Traceback" not in output
    assert str(path) in output
    assert "cannot be read" in output
    assert "nvidia-smi" in output  # what to do
    assert (path.read_bytes(), backup_path(path).read_bytes()) == before, "journal kept as is"
    assert caps_now(crashed) == caps_before, "nothing was changed on a guess"


@pytest.mark.parametrize("fault", ["zero-bytes", "truncated", "not-json", "not-utf8"])
def test_the_second_copy_restores_when_only_the_primary_is_damaged(
    crashed: str, fault: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = journal_path(crashed)
    damage = {
        "zero-bytes": lambda p: p.write_bytes(b""),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:40]),
        "not-json": lambda p: p.write_text("garbage"),
        "not-utf8": lambda p: p.write_bytes(b"\xff" * 10),
    }[fault]
    damage(path)
    status, output = run(["restore"], crashed, monkeypatch, capsys)
    assert status == 0, output
    assert caps_now(crashed) == stock_caps(crashed)
    assert not path.exists()
    assert not backup_path(path).exists()


def test_a_journal_from_another_rig_is_refused_and_kept(
    crashed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = journal_path(crashed)
    for copy in (path, backup_path(path)):
        _rewrite(copy, lambda b: b.update(rig_spec="sim:8xl40s"))
    before = path.read_bytes()
    status, output = run(["restore"], crashed, monkeypatch, capsys)
    assert status != 0, output
    assert "written for rig 'sim:8xl40s'" in output
    assert "rigforge restore --rig sim:8xl40s" in output
    assert path.read_bytes() == before


@pytest.mark.parametrize("with_start_time", [True, False], ids=["v2-start-time", "v1-no-start"])
def test_a_live_pid_of_another_program_does_not_hold_the_journal(
    crashed: str,
    with_start_time: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """PID 1 is alive and is not rigforge: a reused PID. With a start time the times differ;
    without one (a version-1 journal) the process's command line says it is not rigforge."""
    path = journal_path(crashed)
    for copy in (path, backup_path(path)):
        _rewrite(
            copy,
            lambda b: b.update(pid=1, pid_started=12345.0 if with_start_time else None),
        )
    assert os.path.exists("/proc/1")
    status, output = run(["restore"], crashed, monkeypatch, capsys)
    assert status == 0, output
    assert caps_now(crashed) == stock_caps(crashed)
    assert not path.exists()


def test_out_of_range_originals_restore_the_default_and_say_so(
    crashed: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = journal_path(crashed)
    for copy in (path, backup_path(path)):
        _rewrite(copy, lambda b: [s.update(power_limit_w=9000.0) for s in b["original"].values()])
    status, output = run(["restore"], crashed, monkeypatch, capsys)
    assert status == 0, output
    assert "was at 9000 W, outside its" in output
    assert caps_now(crashed) == stock_caps(crashed)
    assert not path.exists()


def test_bad_probe_records_are_not_resumed(
    rig_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A resumable journal whose probe records are malformed: the originals come back, the
    sweep starts from its first probe instead of trusting them."""
    from tuning.apply.session import SafetySession

    _, actuator = open_tuning_rig(rig_file)
    key = {"workload": "decode"}
    journal = Journal(journal_path(rig_file), rig_file, actuator.settings(), pid=-1, sweep_key=key)
    uuid = actuator.rig.gpus[0].uuid
    journal.probes = {uuid: [{"cap_w": "lots"}], "GPU-x": [{"cap_w": -1}]}
    journal.save()
    said: list[str] = []
    with SafetySession(actuator, sweep_key=key, log=said.append) as session:
        assert session.resumed_probes == {}
    assert any("cannot be trusted" in line for line in said), said
