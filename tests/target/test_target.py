"""The target tier: the CI inventory deployed over real SSH to a throwaway Debian target.

Deploy twice (the second run changes nothing), verify with the testinfra suite, then kill a
deploy midway on a fresh target, re-run it, and check it converges and the next run is a no-op.
The first deploy must also have written the running "kernel" (the target's scratch ``sys/``
and ``proc/irq/`` under the inventory's ``kernel.root``): the ASPM policy, each GPU link's
``link/*aspm`` states, the GPU IRQs' CPUs.

Run with ``bash tests/target/run.sh`` (root; builds and stops the targets). To run this module
alone beside other targets, give it its own name and port (an inventory copy is generated)::

    RIGFORGE_CI_TARGET=d2 RIGFORGE_CI_PORT=2250 \\
        .venv/bin/pytest -m target tests/target/test_target.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.target import harness, util
from tests.target.util import DeployResult, ssh, timing, verify

REPO = harness.REPO_ROOT
INVENTORY_YAML = "inventory/examples/ci.yaml"
#: The port inventory/examples/ci.yaml names; any other port gets a generated inventory copy.
CI_PORT = 2222
NAME = os.environ.get("RIGFORGE_CI_TARGET", "ci-target")
PORT = util.env_port("RIGFORGE_CI_PORT", CI_PORT)
#: The operation during which the kill-midway test pulls the plug (apt is running then).
KILL_DURING = "NVIDIA user space"
#: The target's scratch kernel (the CI inventory's ``kernel.root``, bound by the harness).
KROOT = harness.KERNEL_ROOT
#: The fake GPU the harness puts in the target's scratch /sys, and its two MSI IRQs.
GPU_SYSFS = f"{KROOT}/sys/bus/pci/devices/0000:41:00.0"
GPU_IRQS = ("130", "131")
#: Operations the first deploy must run against the running kernel (scratch /sys). The GPU
#: IRQs are pinned by rigforge-irq-affinity.service, started (for real) before the deploy's
#: own "Pin GPU IRQs" step, which then finds nothing to do: the state is checked instead.
RUNTIME_OPS = ("Runtime ASPM policy", "ASPM off on each NVIDIA GPU link", "CPU: performance")
#: The units host_data/ci-target/plan.yaml places (one vLLM, one llama.cpp).
SERVING_UNITS = (
    "rigforge-serve-qwen2.5-7b-instruct-awq.service",
    "rigforge-serve-llama-3.1-8b-instruct-q4.service",
)


#: The units the CI inventory installs that run at every boot (serving units need their
#: engine: tests/target/test_engine.py). irqbalance only gets a drop-in: it is not installed.
BOOT_UNITS = (
    "nvidia-persistenced.service",
    "rigforge-irq-affinity.service",
    "rigforge-gpu-settings.service",
)
#: ``power_cap_w`` of the CI inventory's two GPUs (inventory/examples/ci.yaml).
CI_CAPS_W = {
    "GPU-c1000000-0000-4000-8000-000000000001": 280.0,
    "GPU-c1000000-0000-4000-8000-000000000002": 250.0,
}


def _power_limits_w(target: harness.Target) -> dict[str, float]:
    """What ``nvidia-smi`` on the target reports as each GPU's power limit now."""
    out = ssh(target, "nvidia-smi --query-gpu=uuid,power.limit --format=csv,noheader,nounits")
    return {u.strip(): float(w) for u, w in (line.split(",") for line in out.splitlines())}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``inventory/ci.py`` itself on the CI port; a generated copy on any other port."""
    if PORT == CI_PORT:
        return "inventory/ci.py"
    probe = harness.Target(NAME, PORT, harness.target_root(NAME))
    return str(util.inventory_for(probe, tmp_path_factory.mktemp("inv"), stem=f"ci-{NAME}"))


@pytest.fixture(scope="module")
def inventory_yaml(inventory: str) -> str:
    """The YAML the verify suite reads its expectations from (the one deployed)."""
    return INVENTORY_YAML if inventory == "inventory/ci.py" else inventory[: -len(".py")] + ".yaml"


def _unpin_one_irq(target: harness.Target) -> None:
    """Move one GPU IRQ off the GPU's local CPUs, as irqbalance would, so pinning has work.

    The harness's fake ``/proc/irq`` starts every IRQ on all CPUs, which on its one-node fake
    equals the GPU's ``local_cpulist``: without this the pinning would never need a write.
    """
    ssh(target, f"echo 1 > {KROOT}/proc/irq/{GPU_IRQS[1]}/smp_affinity_list")


def _runtime_state(target: harness.Target) -> dict[str, str]:
    """The target's fake kernel files the runtime operations write, by short name."""
    files = {
        "policy": f"{KROOT}/sys/module/pcie_aspm/parameters/policy",
        "l1_aspm": f"{GPU_SYSFS}/link/l1_aspm",
        "l0s_aspm": f"{GPU_SYSFS}/link/l0s_aspm",
        **{f"irq{n}": f"{KROOT}/proc/irq/{n}/smp_affinity_list" for n in GPU_IRQS},
    }
    out = ssh(target, "; ".join(f"echo {k}=$(cat {v})" for k, v in files.items()))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def target() -> Iterator[harness.Target]:
    """A fresh CI target (skips with the reason when the tier cannot run)."""
    gpus = util.standin_gpus(util.CI_YAML, "ci-target")
    with util.fresh_target(
        NAME, PORT, "start fresh target", prepare=_unpin_one_irq, gpus=gpus
    ) as tgt:
        yield tgt


@pytest.mark.target
def test_first_deploy_converges(target: harness.Target, inventory: str) -> None:
    before = _runtime_state(target)
    assert before["l1_aspm"] == "1", before
    assert before[f"irq{GPU_IRQS[1]}"] == "1", before
    result = util.deploy(inventory, "deploy #1 (fresh target)")
    assert result.rc == 0, result.stderr_tail
    assert result.failed_hosts == []
    assert result.totals["error"] == 0, result.errors
    assert result.totals["success"] > 0, "a fresh target must need changes"
    for fragment in RUNTIME_OPS + SERVING_UNITS:
        assert any(fragment in name for name in result.changed), (fragment, result.changed)


@pytest.mark.target
def test_first_deploy_wrote_the_running_kernel(target: harness.Target) -> None:
    state = _runtime_state(target)
    assert "performance" in state["policy"].split() or "[performance]" in state["policy"], state
    assert state["l1_aspm"] == "0", state
    assert state["l0s_aspm"] == "0", state
    # The GPU's local_cpulist in the fake sysfs is 0-1.
    assert all(state[f"irq{n}"] == "0-1" for n in GPU_IRQS), state


@pytest.mark.target
def test_units_the_deploy_installed_really_ran(target: harness.Target) -> None:
    """Each boot unit is enabled, active and exited 0 (oneshots: ``active (exited)``)."""
    for unit in BOOT_UNITS:
        state = util.unit_state(target, unit)
        assert state["UnitFileState"] == "enabled", (unit, state)
        assert state["ActiveState"] == "active", (unit, state)
        assert state["Result"] == "success", (unit, state)
        assert state["ExecMainStatus"] == "0", (unit, state)


@pytest.mark.target
def test_gpu_settings_unit_set_the_inventory_caps(target: harness.Target) -> None:
    """The oneshot ran ``nvidia-smi -i UUID -pl W`` for real: the limits are the caps."""
    assert _power_limits_w(target) == CI_CAPS_W


@pytest.mark.target
def test_after_a_reboot_the_units_start_in_order(target: harness.Target) -> None:
    """Booted again, every boot unit comes up by itself, GPU settings after persistenced."""
    harness.stop(target.name)
    harness.start(target.name, target.port, fresh=False)
    assert util.wait_until_booted(target) in ("running", "degraded")
    state = {unit: util.unit_state(target, unit) for unit in BOOT_UNITS}
    for unit, st in state.items():
        assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == (
            "active",
            "success",
            "0",
        ), (unit, st)
    persistenced = int(state["nvidia-persistenced.service"]["ActiveEnterTimestampMonotonic"])
    settings = int(state["rigforge-gpu-settings.service"]["ExecMainStartTimestampMonotonic"])
    assert 0 < persistenced <= settings, state
    # The stand-in GPUs came back at their default limit (as after a power cycle): the unit
    # applied the caps again at boot.
    assert _power_limits_w(target) == CI_CAPS_W


@pytest.mark.target
def test_second_deploy_changes_nothing(target: harness.Target, inventory: str) -> None:
    """0 changes, and systemd neither reloaded nor restarted anything (journal, timestamps)."""
    units = (*BOOT_UNITS, "ssh.service")
    before, reloads = util.starts(target, units), util.daemon_reloads(target)
    result = util.deploy(inventory, "deploy #2 (no-op)")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    assert result.totals["success"] == 0, f"second run changed: {result.changed}"
    assert result.totals["no_change"] > 0
    assert util.starts(target, units) == before, "a unit was restarted by a no-op deploy"
    assert util.daemon_reloads(target) == reloads, "a no-op deploy ran daemon-reload"


@pytest.mark.target
def test_changing_one_cap_restarts_only_the_gpu_settings_unit(
    target: harness.Target, inventory: str, tmp_path: Path
) -> None:
    """A new cap for one GPU rewrites one unit: that unit alone is restarted and re-applied."""
    raw = yaml.safe_load(util.CI_YAML.read_text(encoding="utf-8"))
    gpus = raw["hosts"]["ci-target"]["gpus"]
    gpus[0]["power_cap_w"] = 270
    changed_inv = util.inventory_for(
        target, tmp_path / "inv", overrides={"gpus": gpus}, stem="one-cap"
    )
    others = tuple(u for u in BOOT_UNITS if u != "rigforge-gpu-settings.service")
    before = util.starts(target, (*BOOT_UNITS,))
    result = util.deploy(changed_inv, "deploy, one cap changed")
    assert result.totals["error"] == 0, result.errors
    after = util.starts(target, (*BOOT_UNITS,))
    assert after["rigforge-gpu-settings.service"] != before["rigforge-gpu-settings.service"]
    assert {u: after[u] for u in others} == {u: before[u] for u in others}
    assert _power_limits_w(target)["GPU-c1000000-0000-4000-8000-000000000001"] == 270.0
    state = util.unit_state(target, "rigforge-gpu-settings.service")
    assert (state["ActiveState"], state["ExecMainStatus"]) == ("active", "0"), state
    back = util.deploy(inventory, "deploy, caps back")
    assert back.totals["error"] == 0, back.errors
    assert _power_limits_w(target) == CI_CAPS_W


@pytest.mark.target
def test_verify_suite_passes(target: harness.Target, inventory: str, inventory_yaml: str) -> None:
    proc = verify("testinfra verify", target, inventory_yaml)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout
    # The serving checks must have run here, not skipped for want of a plan.
    assert "no serving in the inventory" not in proc.stdout


@pytest.mark.target
def test_model_dropped_from_the_plan_loses_its_unit(target: harness.Target, tmp_path: Path) -> None:
    plan_path = REPO / "inventory/examples/host_data/ci-target/plan.yaml"
    plan = yaml.safe_load(plan_path.read_text(encoding="utf-8"))
    plan["placements"] = plan["placements"][:1]
    smaller = tmp_path / "plan.yaml"
    smaller.write_text(yaml.safe_dump(plan))
    inventory = util.inventory_for(
        target, tmp_path / "inv", overrides={"serving": {"plan": str(smaller)}}, stem="smaller"
    )
    result = util.deploy(inventory, "deploy, one model dropped")
    assert result.totals["error"] == 0, result.errors
    dropped = SERVING_UNITS[1]
    assert any(f"Remove {dropped}" in name for name in result.changed), result.changed
    listing = ssh(target, "ls /etc/systemd/system/ /etc/systemd/system/*.wants/ 2>/dev/null")
    assert dropped not in listing, "the dropped unit (or its enablement link) is still there"
    assert SERVING_UNITS[0] in listing
    again = util.deploy(inventory, "deploy, one model dropped (no-op)")
    assert again.totals["success"] == 0, f"stale-unit removal is not idempotent: {again.changed}"


@pytest.mark.target
def test_killed_deploy_converges(
    target: harness.Target, inventory: str, inventory_yaml: str
) -> None:
    start = time.monotonic()
    fresh = harness.start(NAME, PORT, gpus=util.standin_gpus(util.CI_YAML, "ci-target"))
    timing("restart fresh target", time.monotonic() - start)

    start = time.monotonic()
    proc = subprocess.Popen(
        [util.PYINFRA, "-y", "--json", inventory, util.DEPLOY],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen_change = False
    for line in proc.stderr:
        seen_change = seen_change or "Success" in line
        if seen_change and "Starting operation" in line and KILL_DURING in line:
            time.sleep(2.0)  # apt/dpkg is now running on the target
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    timing("deploy killed midway", time.monotonic() - start)
    assert seen_change, "the deploy was killed before it changed anything"

    rerun: DeployResult = util.deploy(inventory, "deploy after kill")
    assert rerun.rc == 0, rerun.stderr_tail
    assert rerun.totals["error"] == 0, rerun.errors
    assert rerun.totals["success"] > 0, "the killed run cannot have finished everything"
    again = util.deploy(inventory, "deploy after kill, again (no-op)")
    assert again.totals["error"] == 0, again.errors
    assert again.totals["success"] == 0, f"not converged; changed: {again.changed}"
    proc_v = verify("testinfra verify after kill", fresh, inventory_yaml)
    assert proc_v.returncode == 0, proc_v.stdout[-6000:]


def test_inventory_copy_differs_only_in_port(tmp_path: Path) -> None:
    """The generated copy is the CI inventory (same host, paths resolved), port changed.

    Default tier (no target needed): a copy that drifted from ci.yaml would make the target
    tests prove something about another inventory.
    """
    from inventory.validate import load_inventory

    probe = harness.Target("copy", 2299, tmp_path)
    module = util.inventory_for(probe, tmp_path / "inv")
    # a fresh clone has no .target/ssh yet: the SSH files are the harness's to make
    copy = load_inventory(module.with_suffix(".yaml"), check_ssh_files=False).hosts["ci-target"]
    original = load_inventory(REPO / INVENTORY_YAML, check_ssh_files=False).hosts["ci-target"]
    assert copy.ssh.port == 2299
    assert copy.model_dump(exclude={"ssh"}) == original.model_dump(exclude={"ssh"})
