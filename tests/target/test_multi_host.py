"""Two workstations in one pyinfra run: ws-a (127.0.0.1:2222) and ws-b (127.0.0.1:2223) of
``inventory/examples/ci-two.yaml``, each with its own profile and plan, deployed in parallel.

ws-b's apt is broken on purpose (its sources point at a closed loopback port, so its index is
empty and the first package install fails): ws-b fails,
the run says which host failed and why, and ws-a is deployed completely — its own caps in its
GPU-settings unit, its own serving unit — with nothing of ws-b's on it.
Run with ``bash tests/target/run.sh``; ``RIGFORGE_WS_A_TARGET``/``RIGFORGE_WS_A_PORT`` and
``RIGFORGE_WS_B_TARGET``/``RIGFORGE_WS_B_PORT`` put the two targets elsewhere (see
:data:`tests.target.util.WS_TARGETS`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.target import harness, util
from tests.target.util import caps_in_unit, ssh

pytestmark = pytest.mark.target

UNIT = "/etc/systemd/system/rigforge-gpu-settings.service"
#: Port 9 (discard) on loopback: nothing listens, apt fails at once, nothing leaves the box.
BROKEN_SOURCES = (
    "Types: deb\nURIs: http://127.0.0.1:9/debian\nSuites: bookworm\nComponents: main\n"
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
)


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, harness.Target]]:
    """ws-a (reusing the loop test's tree when there is one) and a fresh ws-b with broken apt."""
    reason = harness.unavailable_reason()
    if reason:
        pytest.skip(reason)
    start = time.monotonic()
    try:
        # A deployed ws-a (from test_loop) makes this a second deploy with a new profile; a
        # missing tree is made fresh, which only costs time.
        ws_a = harness.start(
            *util.WS_TARGETS["ws-a"],
            fresh=False,
            gpus=util.standin_gpus(util.CI_TWO_YAML, "ws-a"),
        )
        ws_b = harness.start(
            *util.WS_TARGETS["ws-b"], gpus=util.standin_gpus(util.CI_TWO_YAML, "ws-b")
        )
    except harness.HarnessUnavailable as error:
        pytest.skip(str(error))
    sources = ws_b.root / "etc/apt/sources.list.d/debian.sources"
    sources.write_text(BROKEN_SOURCES)
    for lists in (ws_b.root / "var/lib/apt/lists").glob("*_Packages*"):
        lists.unlink()
    util.timing("two hosts: start ws-a + ws-b", time.monotonic() - start)
    yield {"ws-a": ws_a, "ws-b": ws_b}
    harness.stop(ws_b.name)
    harness.stop(ws_a.name)


@pytest.fixture(scope="module")
def run(targets: dict[str, harness.Target], tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """Both hosts, one pyinfra run, each with its own committed profile and plan."""
    inventory = util.inventory_for(
        targets,
        tmp_path_factory.mktemp("two"),
        source=util.CI_TWO_YAML,
        stem="ci-two",
        host_data={"ws-a": ["profile.yaml", "plan.yaml"], "ws-b": ["profile.yaml", "plan.yaml"]},
    )
    return inventory, util.deploy(inventory, "two hosts: one parallel deploy")


def _caps(inventory: Path, host: str) -> dict[str, float]:
    data = yaml.safe_load((inventory.parent / "host_data" / host / "profile.yaml").read_text())
    return {g["uuid"]: float(g["cap_w"]) for g in data["gpus"]}


def test_the_run_says_which_host_failed(run: tuple) -> None:
    _, result = run
    assert result.rc != 0, "pyinfra exits non-zero when a host failed"
    assert result.failed_hosts == ["ws-b"]


def test_only_ws_b_has_errors_and_they_say_why(run: tuple) -> None:
    _, result = run
    assert result.errors, "ws-b's failure is recorded"
    assert all(hosts == ["ws-b"] for hosts in result.errors.values()), result.errors
    # The first failed operation is where ws-b stopped; the rest never ran (also listed).
    assert "Install base packages" in next(iter(result.errors))
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    assert "[ws-b] E: Unable to locate package numactl" in lines
    assert "[ws-b] Error: executed 1 commands" in lines


def test_ws_a_was_deployed_in_the_same_run(run: tuple) -> None:
    _, result = run
    assert any("ws-a" in hosts for hosts in result.changed.values()), result.changed


def test_ws_a_got_its_own_caps(run: tuple, targets: dict[str, harness.Target]) -> None:
    inventory, _ = run
    unit = ssh(targets["ws-a"], f"cat {UNIT}")
    assert caps_in_unit(unit) == _caps(inventory, "ws-a")


def test_ws_a_got_its_own_serving_unit_and_nothing_of_ws_b(
    run: tuple, targets: dict[str, harness.Target]
) -> None:
    units = ssh(targets["ws-a"], "cat /etc/systemd/system/rigforge-serve-*.service")
    assert "GPU-c1000000-0000-4000-8000-000000000001" in units
    assert "GPU-c2000000" not in units


def test_ws_b_was_left_untouched_past_its_failure(
    run: tuple, targets: dict[str, harness.Target]
) -> None:
    root = targets["ws-b"].root
    assert not (root / "etc/rigforge/profile.yaml").exists()
    assert not (root / UNIT.lstrip("/")).exists()
