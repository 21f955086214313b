"""Convergence after a kill between a file change and its follow-up, and after features go off.

On its own target (``converge`` on 127.0.0.1:2262 unless ``RIGFORGE_CONVERGE_TARGET`` /
``RIGFORGE_CONVERGE_PORT`` say otherwise):

1. The CI inventory is deployed once, with stand-ins for ``update-grub`` and
   ``update-initramfs`` on the target (a minbase tree has neither) that log each call.
2. A kill between a file write and its follow-up is simulated the way such a kill leaves the
   host: the files are already right and the pending markers (``/var/lib/rigforge/pending/``)
   are there. The next deploy runs both follow-ups and clears the markers; the one after that
   changes nothing.
3. Every feature is turned off (``aspm: default``, ``pin_irqs``/``irqbalance_ban`` false, no
   caps): the grub fragment goes (and ``update-grub`` runs), the IRQ-pinning and GPU-settings
   units are disabled and deleted with their scripts, the irqbalance ban files go; the next
   deploy changes nothing.

    .venv/bin/pytest -m target tests/target/test_converge.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.target import harness, util
from tests.target.util import ssh

pytestmark = pytest.mark.target

NAME = os.environ.get("RIGFORGE_CONVERGE_TARGET", "converge")
PORT = int(os.environ.get("RIGFORGE_CONVERGE_PORT", "2262"))
PENDING = "/var/lib/rigforge/pending"
LOG = "/var/log/rigforge-followups.log"
FRAGMENT = "/etc/default/grub.d/rigforge-pcie.cfg"
POLICY = f"{harness.KERNEL_ROOT}/sys/module/pcie_aspm/parameters/policy"
WANTS = "/etc/systemd/system/multi-user.target.wants"
#: What the features-off deploy must delete.
GONE = (
    FRAGMENT,
    "/etc/systemd/system/rigforge-irq-affinity.service",
    "/usr/local/libexec/rigforge-irq-affinity",
    "/etc/systemd/system/rigforge-gpu-settings.service",
    "/usr/local/libexec/rigforge-gpu-settings",
    "/usr/local/libexec/rigforge-irqbalance-policy",
    "/etc/default/irqbalance-rigforge",
    "/etc/systemd/system/irqbalance.service.d/rigforge.conf",
    f"{WANTS}/rigforge-irq-affinity.service",
    f"{WANTS}/rigforge-gpu-settings.service",
)


def _stand_in(tool: str) -> str:
    """A shell line installing a stand-in for ``tool`` that logs its name to :data:`LOG`."""
    return (
        f"printf '#!/bin/sh\\necho {tool} >> {LOG}\\n' > /usr/local/sbin/{tool} && "
        f"chmod 755 /usr/local/sbin/{tool}"
    )


def _calls(target: harness.Target) -> list[str]:
    return ssh(target, f"cat {LOG} 2>/dev/null || true").split()


def _present(target: harness.Target, paths: tuple[str, ...]) -> list[str]:
    out = ssh(target, "; ".join(f"[ -e {p} ] || [ -L {p} ] && echo {p}" for p in paths) + "; true")
    return out.split()


@pytest.fixture(scope="module")
def target() -> Iterator[harness.Target]:
    """A fresh target with logging stand-ins for update-grub and update-initramfs."""

    def stand_ins(tgt: harness.Target) -> None:
        ssh(tgt, f"{_stand_in('update-grub')} && {_stand_in('update-initramfs')}")

    gpus = util.standin_gpus(util.CI_YAML, "ci-target")
    with util.fresh_target(NAME, PORT, "converge: start fresh target", stand_ins, gpus=gpus) as tgt:
        yield tgt


@pytest.fixture(scope="module")
def inventory(target: harness.Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return util.inventory_for(target, tmp_path_factory.mktemp("inv"), stem="converge")


def test_first_deploy_runs_each_follow_up_once(target: harness.Target, inventory: Path) -> None:
    result = util.deploy(inventory, "converge: deploy #1")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    assert sorted(_calls(target)) == ["update-grub", "update-initramfs"]
    assert ssh(target, f"ls -A {PENDING}").split() == [], "a marker outlived its follow-up"


def test_killed_before_follow_up_finishes_it_next_run(
    target: harness.Target, inventory: Path
) -> None:
    # What a kill right after the file writes leaves: files right, follow-ups still owed.
    ssh(target, f"touch {PENDING}/update-grub {PENDING}/update-initramfs")
    before = len(_calls(target))
    result = util.deploy(inventory, "converge: deploy after simulated kill")
    assert result.totals["error"] == 0, result.errors
    assert sorted(_calls(target)[before:]) == ["update-grub", "update-initramfs"]
    assert any("update-grub" in n for n in result.changed), result.changed
    assert any("Rebuild the initramfs" in n for n in result.changed), result.changed
    assert ssh(target, f"ls -A {PENDING}").split() == []
    again = util.deploy(inventory, "converge: deploy after kill, again (no-op)")
    assert again.totals["success"] == 0, f"not converged; changed: {again.changed}"
    assert len(_calls(target)) == before + 2


def test_features_off_remove_their_state(
    target: harness.Target, inventory: Path, tmp_path: Path
) -> None:
    assert _present(target, GONE), "deploy #1 wrote none of the files (test proves nothing)"
    raw = yaml.safe_load(inventory.with_suffix(".yaml").read_text(encoding="utf-8"))
    (entry,) = raw["hosts"].values()
    gpus = [{k: v for k, v in g.items() if k != "power_cap_w"} for g in entry["gpus"]]
    off = util.inventory_for(
        target,
        tmp_path / "inv",
        overrides={
            "pcie": {"aspm": "default"},
            "affinity": {"pin_irqs": False, "irqbalance_ban": False},
            "gpus": gpus,
        },
        stem="converge-off",
    )
    # The fake sysfs file holds the one word deploy #1 wrote; a kernel lists every policy.
    ssh(target, f"echo 'default [performance] powersave powersupersave' > {POLICY}")
    before = len(_calls(target))
    result = util.deploy(off, "converge: deploy, features off")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    assert _present(target, GONE) == [], "features off left state behind"
    assert _calls(target)[before:] == ["update-grub"], "grub.cfg still has the old cmdline"
    assert (
        "[default]" in ssh(target, f"cat {POLICY}")
        or ssh(target, f"cat {POLICY}").strip() == "default"
    )
    state = ssh(target, "systemctl is-enabled rigforge-gpu-settings.service 2>&1; true")
    assert "enabled" not in state.split(), state
    # systemd runs: each unit the features-off deploy removed was stopped and is gone from
    # systemd itself, not only from disk (daemon-reloaded).
    for unit in ("rigforge-gpu-settings.service", "rigforge-irq-affinity.service"):
        gone = util.unit_state(target, unit)
        assert (gone["LoadState"], gone["ActiveState"]) == ("not-found", "inactive"), (unit, gone)
    again = util.deploy(off, "converge: features off, again (no-op)")
    assert again.totals["success"] == 0, f"removal not idempotent: {again.changed}"
    assert len(_calls(target)) == before + 1
