"""The base deploy refuses a host that runs another distribution than the inventory says."""

from __future__ import annotations

from deploys.base import distro_problem


def _fact(os_id: str, codename: str) -> dict:
    # what pyinfra's LinuxDistribution fact returns for /etc/os-release
    return {
        "name": os_id.title(),
        "major": 12,
        "minor": None,
        "release_meta": {"ID": os_id, "VERSION_CODENAME": codename, "PRETTY_NAME": "…"},
    }


def test_matching_host_passes() -> None:
    assert distro_problem("debian", "bookworm", _fact("debian", "bookworm")) is None


def test_other_release_is_refused_with_both_names() -> None:
    problem = distro_problem("ubuntu", "noble", _fact("debian", "bookworm"))
    assert problem is not None
    assert "expects ubuntu noble" in problem
    assert "runs debian bookworm" in problem
    assert "distro.id" in problem


def test_unreadable_os_release_is_refused() -> None:
    problem = distro_problem("debian", "bookworm", {"release_meta": {}})
    assert problem is not None
    assert "runs unknown unknown" in problem
