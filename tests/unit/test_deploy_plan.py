"""What a deploy body adds at plan time, given the host snapshot (``deploys/util.py``).

The operations themselves are tested by their JSON cases; these tests pin the plan-time skip:
an operation is left out only when the snapshot proves it has nothing to do. The SHA-1 of
the one-byte file ``x`` is ``11f6ad8ec52a2984abaafd7c3b516503785c2072`` (``printf x |
sha1sum``); the operations the helpers would add are recorded instead of planned.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyinfra.context import ctx_host

from deploys import util
from deploys.facts.host import RemoteFile, Snapshot, UnitState

X_SHA1 = "11f6ad8ec52a2984abaafd7c3b516503785c2072"
GRUB = "/etc/default/grub.d/rigforge-pcie.cfg"
UNIT = "rigforge-gpu-settings.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"


class FakeHost:
    """Records ``noop`` lines; answers ``get_fact`` with the snapshot it was given."""

    name = "ws1"

    def __init__(self, snap: Snapshot | None = None) -> None:
        self.snap = snap or Snapshot()
        self.noops: list[str] = []

    def get_fact(self, cls: type, *args: Any, **kwargs: Any) -> Any:
        return self.snap

    def noop(self, description: str) -> None:
        self.noops.append(description)


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """The operations the helpers add, as ``(what, keyword arguments)``."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(what: str) -> Any:
        return lambda *args, **kwargs: calls.append((what, kwargs))

    monkeypatch.setattr(util, "put_text", lambda dest, content, **kw: calls.append(("put", kw)))
    monkeypatch.setattr(util.pending, "marked", record("marked"))
    monkeypatch.setattr(util.pending, "followed_up", record("followed_up"))
    monkeypatch.setattr(util.pending, "files_removed", record("files_removed"))
    monkeypatch.setattr(util.systemd, "service_after_change", record("service_after_change"))
    monkeypatch.setattr(util.systemd, "unit_removed", record("unit_removed"))
    return calls


def _file(sha1: str = X_SHA1, mode: str = "644", user: str = "root") -> RemoteFile:
    return RemoteFile(mode=mode, user=user, group=user, sha1=sha1)


def _x(dest: str, mode: str = "644") -> util.TextFile:
    return util.TextFile(dest=dest, text="x", name=dest, mode=mode)


def test_a_file_already_right_is_not_put_and_owes_nothing(planned: list) -> None:
    snap = Snapshot(files={GRUB: _file()})
    fake = FakeHost(snap)
    with ctx_host.use(fake):
        wanted = util.put_files([_x(GRUB)], snap, "update-grub")
    assert wanted == {GRUB: X_SHA1}
    assert planned == []
    assert any("unchanged" in line for line in fake.noops)


@pytest.mark.parametrize("remote", [None, _file(sha1="0" * 40)], ids=["missing", "other-content"])
def test_new_content_is_put_after_its_step_is_marked(
    planned: list, remote: RemoteFile | None
) -> None:
    snap = Snapshot(files={GRUB: remote})
    with ctx_host.use(FakeHost(snap)):
        util.put_files([_x(GRUB)], snap, "update-grub")
    assert [what for what, _ in planned] == ["marked", "put"]
    assert planned[0][1]["files"] == {GRUB: X_SHA1}


@pytest.mark.parametrize(
    "remote", [_file(mode="600"), _file(user="rigforge")], ids=["other-mode", "other-owner"]
)
def test_mode_or_owner_alone_is_put_but_owes_no_follow_up(
    planned: list, remote: RemoteFile
) -> None:
    """``update-grub`` or a restart reads the content; a chmod/chown does not need one."""
    snap = Snapshot(files={GRUB: remote})
    with ctx_host.use(FakeHost(snap)):
        util.put_files([_x(GRUB)], snap, "update-grub")
    assert [what for what, _ in planned] == ["put"]


def test_an_owed_step_is_not_marked_again(planned: list) -> None:
    snap = Snapshot(files={GRUB: None}, pending=("update-grub",))
    with ctx_host.use(FakeHost(snap)):
        util.put_files([_x(GRUB)], snap, "update-grub")
    assert [what for what, _ in planned] == ["put"]


@pytest.mark.parametrize(
    ("snap", "added"),
    [
        # No systemd running: an enabled unit needs nothing, a disabled one an enable.
        (Snapshot(units={UNIT: UnitState("enabled", "unknown")}), False),
        (Snapshot(units={UNIT: UnitState("disabled", "unknown")}), True),
        # Booted: enabled, active and unchanged needs nothing; a changed file, a pending
        # restart or a stopped unit does.
        (Snapshot(systemd_booted=True, units={UNIT: UnitState("enabled", "active")}), False),
        (
            Snapshot(
                systemd_booted=True,
                files={UNIT_FILE: _file(sha1="0" * 40)},
                units={UNIT: UnitState("enabled", "active")},
            ),
            True,
        ),
        (
            Snapshot(
                systemd_booted=True,
                units={UNIT: UnitState("enabled", "active")},
                pending=(f"restart-{UNIT}",),
            ),
            True,
        ),
        (Snapshot(systemd_booted=True, units={UNIT: UnitState("enabled", "failed")}), True),
    ],
    ids=[
        "chroot-enabled",
        "chroot-disabled",
        "booted-ok",
        "booted-changed",
        "booted-owed",
        "booted-failed",
    ],
)
def test_service_operation_only_when_the_snapshot_leaves_work(
    planned: list, snap: Snapshot, added: bool
) -> None:
    files = {UNIT_FILE: _file()} | dict(snap.files)
    snap = Snapshot(snap.systemd_booted, False, files, snap.units, snap.pending)
    with ctx_host.use(FakeHost(snap)):
        util.service_after_change(UNIT, snap=snap, wanted={UNIT_FILE: X_SHA1}, name="GPU settings")
    assert [what for what, _ in planned] == (["service_after_change"] if added else [])


def test_removal_only_when_something_is_left(planned: list) -> None:
    with ctx_host.use(FakeHost(Snapshot(files={UNIT_FILE: None}))):
        util.unit_removed(UNIT, name="GPU settings unit")
    assert planned == []
    with ctx_host.use(FakeHost(Snapshot(files={UNIT_FILE: _file()}))):
        util.unit_removed(UNIT, name="GPU settings unit")
    assert [what for what, _ in planned] == ["unit_removed"]


def test_follow_up_only_when_owed(planned: list) -> None:
    right = Snapshot(files={GRUB: _file()})
    with ctx_host.use(FakeHost(right)):
        util.follow_up("update-grub", ["update-grub"], name="g", snap=right, wanted={GRUB: X_SHA1})
    assert planned == []
    owed = Snapshot(files={GRUB: _file()}, pending=("update-grub",))
    with ctx_host.use(FakeHost(owed)):
        util.follow_up("update-grub", ["update-grub"], name="g", snap=owed, wanted={GRUB: X_SHA1})
    assert [what for what, _ in planned] == ["followed_up"]
