"""The target tier: the CI inventory deployed over real SSH to a throwaway Debian target.

Deploy twice (the second run changes nothing and restarts nothing), verify with the testinfra
suite, then kill a deploy midway on a fresh target, re-run it, and check it converges and the
next run is a no-op. The first deploy must also have written the running "kernel" (the
target's scratch ``sys/`` and ``proc/irq/`` under the inventory's ``kernel.root``): the ASPM
policy, each GPU link's ``link/*aspm`` states, the GPU IRQs' CPUs.

The CI inventory serves for real: its plan (``host_data/ci-target/plan.yaml``) places one
llama.cpp model on each stand-in GPU, computed on CPU; this module writes each placement's
tiny random-weight GGUF (:func:`tests.target.engine.write_tiny_gguf`, never downloaded) and
deploys ``ci.yaml`` with ``serving.llama_server`` set to the cached llama-server build, so the
deploy installs the engine and the rendered, hardened units start it. Every unit the inventory
installs (:func:`tests.verify.expect.units`) must be active or exited 0, and the testinfra run
must skip none of its serving checks.

Run with ``bash tests/target/run.sh`` (root; builds and stops the targets). To run this module
alone beside other targets, give it its own name, SSH port and serving ports (the plan's
models listen on ``RIGFORGE_CI_SERVE_PORT`` and the ports after it)::

    RIGFORGE_CI_TARGET=d2 RIGFORGE_CI_PORT=2250 RIGFORGE_CI_SERVE_PORT=18050 \\
        .venv/bin/pytest -m target tests/target/test_target.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from inventory.schema import HostConfig
from inventory.validate import load_inventory
from tests.target import harness, util
from tests.target.util import DeployResult, ssh, timing, verify
from tests.verify import expect

REPO = harness.REPO_ROOT
INVENTORY_YAML = "inventory/examples/ci.yaml"
PLAN_YAML = util.EXAMPLES / "host_data" / "ci-target" / "plan.yaml"
#: The port inventory/examples/ci.yaml names (the copy deployed here is on ``PORT``).
CI_PORT = 2222
NAME = os.environ.get("RIGFORGE_CI_TARGET", "ci-target")
PORT = util.env_port("RIGFORGE_CI_PORT", CI_PORT)
#: The first serving port; the plan's placements get it and the ports after it, in plan order.
#: The target shares this machine's network, so they must be free here: not the plan's own
#: 8000/8001 (where a workstation may well serve already), ``RIGFORGE_CI_SERVE_PORT`` moves them.
SERVE_PORT = util.env_port("RIGFORGE_CI_SERVE_PORT", 18201)
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
def llama_server() -> Path:
    return util.llama_server_or_fail()


@pytest.fixture(scope="module")
def inventory_yaml(tmp_path_factory: pytest.TempPathFactory, llama_server: Path) -> Path:
    """ci.yaml as deployed here: on ``PORT``, its plan on the serving ports, the engine built.

    The plan copy differs from the committed one in its ports only (``SERVE_PORT`` on);
    ``serving.llama_server`` is the cached build, which a
    fresh clone does not have, so ci.yaml cannot name it. The verify suite reads what it
    expects from this file.
    """
    folder = tmp_path_factory.mktemp("inv")
    plan = yaml.safe_load(PLAN_YAML.read_text(encoding="utf-8"))
    for i, placement in enumerate(plan["placements"]):
        placement["port"] = SERVE_PORT + i
    (folder / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    probe = harness.Target(NAME, PORT, harness.target_root(NAME))
    serving = {"plan": str(folder / "plan.yaml"), "llama_server": str(llama_server)}
    module = util.inventory_for(probe, folder, overrides={"serving": serving}, stem=f"ci-{NAME}")
    return module.with_suffix(".yaml")


@pytest.fixture(scope="module")
def inventory(inventory_yaml: Path) -> str:
    """The pyinfra inventory module of :func:`inventory_yaml`."""
    return str(inventory_yaml.with_suffix(".py"))


@pytest.fixture(scope="module")
def config(inventory_yaml: Path) -> HostConfig:
    """The validated host entry deployed here: what every expectation below derives from."""
    return load_inventory(inventory_yaml, check_ssh_files=False).hosts["ci-target"]


@pytest.fixture(scope="module")
def served(config: HostConfig) -> list[expect.Served]:
    """The models the deployed plan serves (two llama.cpp units)."""
    served = expect.served(config)
    assert served, "the CI inventory serves nothing"
    assert all(s.engine == "llama.cpp" for s in served), served
    return served


@pytest.fixture(scope="module")
def units(config: HostConfig) -> tuple[str, ...]:
    """Every unit the CI inventory installs, boot oneshots first (``expect.units``)."""
    return expect.units(config)


@pytest.fixture(scope="module")
def boot_units(units: tuple[str, ...], served: list[expect.Served]) -> tuple[str, ...]:
    """The units that run at every boot before any engine: persistenced and the oneshots."""
    engines = {s.unit for s in served}
    return tuple(u for u in units if u not in engines)


def _put_models(target: harness.Target, served: list[expect.Served]) -> None:
    """Each placement's tiny GGUF at its ``weights`` path, readable by the service user."""
    for s in served:
        util.put_tiny_model(target, s.weights)


def _wait_serving(served: list[expect.Served]) -> None:
    """Until every engine answers ``/health`` 200 on 127.0.0.1 (each loads its model first)."""
    for s in served:
        util.wait_healthy(f"http://127.0.0.1:{s.port}")


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
def target(served: list[expect.Served]) -> Iterator[harness.Target]:
    """A fresh CI target with the plan's tiny models (skips with the reason when the tier
    cannot run)."""

    def prepare(tgt: harness.Target) -> None:
        _unpin_one_irq(tgt)
        _put_models(tgt, served)

    gpus = util.standin_gpus(util.CI_YAML, "ci-target")
    with util.fresh_target(NAME, PORT, "start fresh target", prepare=prepare, gpus=gpus) as tgt:
        yield tgt


def _assert_all_ran(target: harness.Target, units: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each unit is enabled and active: a oneshot exited 0 (``active (exited)``), a service
    runs (``active (running)``); returns their ``systemctl show``. (No ``MainPID`` check here:
    Debian's ``nvidia-persistenced.service`` is ``Type=forking`` without ``PIDFile=``, and
    systemd leaves ``MainPID=0`` when it cannot tell which forked process is the main one.)"""
    __tracebackhide__ = True
    state = {unit: util.unit_state(target, unit) for unit in units}
    for unit, st in state.items():
        assert st["LoadState"] == "loaded", (unit, st)
        assert st["UnitFileState"] == "enabled", (unit, st)
        assert st["ActiveState"] == "active", (unit, st)
        assert st["Result"] == "success", (unit, st)
        assert st["ExecMainStatus"] == "0", (unit, st)
        assert st["SubState"] in ("exited", "running"), (unit, st)
    return state


@pytest.mark.target
def test_first_deploy_converges(
    target: harness.Target, inventory: str, served: list[expect.Served]
) -> None:
    before = _runtime_state(target)
    assert before["l1_aspm"] == "1", before
    assert before[f"irq{GPU_IRQS[1]}"] == "1", before
    result = util.deploy(inventory, "deploy #1 (fresh target)")
    assert result.rc == 0, result.stderr_tail
    assert result.failed_hosts == []
    assert result.totals["error"] == 0, result.errors
    assert result.totals["success"] > 0, "a fresh target must need changes"
    for fragment in (*RUNTIME_OPS, "llama-server", *(s.unit for s in served)):
        assert any(fragment in name for name in result.changed), (fragment, result.changed)
    _wait_serving(served)


@pytest.mark.target
def test_first_deploy_wrote_the_running_kernel(target: harness.Target) -> None:
    state = _runtime_state(target)
    assert "performance" in state["policy"].split() or "[performance]" in state["policy"], state
    assert state["l1_aspm"] == "0", state
    assert state["l0s_aspm"] == "0", state
    # The GPU's local_cpulist in the fake sysfs is 0-1.
    assert all(state[f"irq{n}"] == "0-1" for n in GPU_IRQS), state


@pytest.mark.target
def test_every_unit_the_inventory_installs_is_active_or_exited_0(
    target: harness.Target, units: tuple[str, ...]
) -> None:
    """The full list derived from the inventory (``expect.units``): persistenced, the IRQ and
    GPU-settings oneshots, both engines; and no other rigforge unit is on the target."""
    _assert_all_ran(target, units)
    listed = ssh(target, "systemctl list-unit-files 'rigforge-*' --no-legend --no-pager")
    on_target = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert on_target == {u for u in units if u.startswith("rigforge-")}, listed


@pytest.mark.target
def test_engines_run_as_the_service_user_on_loopback_and_serve_tokens(
    target: harness.Target, served: list[expect.Served], config: HostConfig
) -> None:
    """Each engine's process belongs to ``base.service_user``, listens on 127.0.0.1 only, and
    answers ``/v1/completions`` with exactly the tokens asked for (``ignore_eos``: random
    weights may pick the end token early)."""
    for s in served:
        pid = util.unit_state(target, s.unit)["MainPID"]
        user = ssh(target, f"stat -c %U /proc/{pid}").strip()
        assert user == config.base.service_user, f"{s.unit} runs as {user}"
        # /proc/net/tcp spells 127.0.0.1:PORT as 0100007F:<port in hex> (little-endian).
        listening = ssh(target, "awk '$4 == \"0A\" {print $2}' /proc/net/tcp /proc/net/tcp6")
        on_port = {a.rsplit(":", 1)[0] for a in listening.split() if int(a[-4:], 16) == s.port}
        assert on_port == {"0100007F"}, (s.unit, on_port)
        body = {"model": s.model, "prompt": "a b", "max_tokens": 6, "ignore_eos": True}
        reply = httpx.post(f"http://127.0.0.1:{s.port}/v1/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 6, reply.text


@pytest.mark.target
def test_gpu_settings_unit_set_the_inventory_caps(target: harness.Target) -> None:
    """The oneshot ran ``nvidia-smi -i UUID -pl W`` for real: the limits are the caps."""
    assert _power_limits_w(target) == CI_CAPS_W


@pytest.mark.target
def test_after_a_reboot_the_units_start_in_order(
    target: harness.Target, units: tuple[str, ...], served: list[expect.Served]
) -> None:
    """Booted again, every unit comes up by itself: GPU settings after persistenced, each
    engine after GPU settings (its ``After=``/``Requires=``), serving again."""
    harness.stop(target.name)
    harness.start(target.name, target.port, fresh=False)
    assert util.wait_until_booted(target) in ("running", "degraded")
    state = _assert_all_ran(target, units)
    persistenced = int(state[expect.PERSISTENCED_UNIT]["ActiveEnterTimestampMonotonic"])
    settings = state[expect.GPU_SETTINGS_UNIT]
    assert 0 < persistenced <= int(settings["ExecMainStartTimestampMonotonic"]), state
    for s in served:
        started = int(state[s.unit]["ExecMainStartTimestampMonotonic"])
        assert int(settings["ActiveEnterTimestampMonotonic"]) <= started, (s.unit, state)
    # The stand-in GPUs came back at their default limit (as after a power cycle): the unit
    # applied the caps again at boot.
    assert _power_limits_w(target) == CI_CAPS_W
    _wait_serving(served)


@pytest.mark.target
def test_second_deploy_changes_nothing(
    target: harness.Target, inventory: str, units: tuple[str, ...]
) -> None:
    """0 changes, and systemd neither reloaded nor restarted anything — the engines included
    (journal, ``InvocationID``/``ActiveEnterTimestamp`` of every unit and of sshd)."""
    watched = (*units, "ssh.service")
    before, reloads = util.starts(target, watched), util.daemon_reloads(target)
    result = util.deploy(inventory, "deploy #2 (no-op)")
    assert result.rc == 0, result.stderr_tail
    assert result.totals["error"] == 0, result.errors
    assert result.totals["success"] == 0, f"second run changed: {result.changed}"
    assert result.totals["no_change"] > 0
    assert util.starts(target, watched) == before, "a unit was restarted by a no-op deploy"
    assert util.daemon_reloads(target) == reloads, "a no-op deploy ran daemon-reload"
    _assert_all_ran(target, units)


@pytest.mark.target
def test_changing_one_cap_restarts_only_the_gpu_settings_unit(
    target: harness.Target,
    inventory: str,
    inventory_yaml: Path,
    boot_units: tuple[str, ...],
    served: list[expect.Served],
    tmp_path: Path,
) -> None:
    """A new cap for one GPU rewrites one unit: that one alone is restarted and re-applied,
    the new cap read back. The engines, which ``Requires=`` it, keep their process
    (``InvocationID``/``ActiveEnterTimestamp`` unchanged) and serve throughout: systemd would
    propagate a plain restart to them (systemd.unit(5), ``Requires=``: "this unit will be
    stopped (or restarted) if one of the other units is explicitly stopped (or restarted)"),
    so the deploy restarts it with ``--job-mode=ignore-requirements`` (systemctl(1))."""
    raw = yaml.safe_load(inventory_yaml.read_text(encoding="utf-8"))
    gpus = raw["hosts"]["ci-target"]["gpus"]
    gpus[0]["power_cap_w"] = 270
    changed_inv = util.inventory_for(
        target, tmp_path / "inv", overrides={"gpus": gpus}, source=inventory_yaml, stem="one-cap"
    )
    others = tuple(u for u in boot_units if u != expect.GPU_SETTINGS_UNIT)
    engines = tuple(s.unit for s in served)
    before = util.starts(target, (*boot_units, *engines))
    result = util.deploy(changed_inv, "deploy, one cap changed")
    assert result.totals["error"] == 0, result.errors
    after = util.starts(target, (*boot_units, *engines))
    assert after[expect.GPU_SETTINGS_UNIT] != before[expect.GPU_SETTINGS_UNIT]
    assert {u: after[u] for u in others} == {u: before[u] for u in others}
    assert {u: after[u] for u in engines} == {u: before[u] for u in engines}, (before, after)
    assert not any("Serving unit" in name for name in result.changed), result.changed
    assert _power_limits_w(target)["GPU-c1000000-0000-4000-8000-000000000001"] == 270.0
    state = util.unit_state(target, expect.GPU_SETTINGS_UNIT)
    assert (state["ActiveState"], state["ExecMainStatus"]) == ("active", "0"), state
    back = util.deploy(inventory, "deploy, caps back")
    assert back.totals["error"] == 0, back.errors
    assert _power_limits_w(target) == CI_CAPS_W
    _wait_serving(served)


@pytest.mark.target
def test_verify_suite_passes_with_no_serving_check_skipped(
    target: harness.Target, inventory_yaml: Path, tmp_path: Path
) -> None:
    """The testinfra suite passes, and every serving check ran (JUnit XML: 0 skipped)."""
    junit = tmp_path / "verify.xml"
    proc = verify("testinfra verify", target, inventory_yaml, junit=junit)
    assert proc.returncode == 0, proc.stdout[-6000:]
    util.assert_no_serving_check_skipped(junit)


@pytest.mark.target
def test_model_dropped_from_the_plan_loses_its_unit(
    target: harness.Target,
    inventory_yaml: Path,
    served: list[expect.Served],
    tmp_path: Path,
) -> None:
    """The dropped model's engine is stopped, disabled and its unit deleted; the kept engine
    keeps running, not restarted."""
    raw = yaml.safe_load(inventory_yaml.read_text(encoding="utf-8"))
    plan = yaml.safe_load(Path(raw["hosts"]["ci-target"]["serving"]["plan"]).read_text())
    plan["placements"] = plan["placements"][:1]
    smaller = tmp_path / "plan.yaml"
    smaller.write_text(yaml.safe_dump(plan))
    inventory = util.inventory_for(
        target,
        tmp_path / "inv",
        overrides={"serving": {"plan": str(smaller)}},
        source=inventory_yaml,
        stem="smaller",
    )
    kept, dropped = served[0], served[1]
    before = util.starts(target, (kept.unit,))
    result = util.deploy(inventory, "deploy, one model dropped")
    assert result.totals["error"] == 0, result.errors
    assert any(f"Remove {dropped.unit}" in name for name in result.changed), result.changed
    listing = ssh(target, "ls /etc/systemd/system/ /etc/systemd/system/*.wants/ 2>/dev/null")
    assert dropped.unit not in listing, "the dropped unit (or its enablement link) is still there"
    assert kept.unit in listing
    gone = util.unit_state(target, dropped.unit)
    assert (gone["LoadState"], gone["ActiveState"]) == ("not-found", "inactive"), gone
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{dropped.port}/health", timeout=2)
    assert util.starts(target, (kept.unit,)) == before, "the kept engine was restarted"
    _assert_all_ran(target, (kept.unit,))
    again = util.deploy(inventory, "deploy, one model dropped (no-op)")
    assert again.totals["success"] == 0, f"stale-unit removal is not idempotent: {again.changed}"


@pytest.mark.target
def test_killed_deploy_converges(
    target: harness.Target,
    inventory: str,
    inventory_yaml: Path,
    units: tuple[str, ...],
    served: list[expect.Served],
    tmp_path: Path,
) -> None:
    start = time.monotonic()
    fresh = harness.start(NAME, PORT, gpus=util.standin_gpus(util.CI_YAML, "ci-target"))
    _put_models(fresh, served)
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
    _assert_all_ran(fresh, units)
    _wait_serving(served)
    junit = tmp_path / "verify.xml"
    proc_v = verify("testinfra verify after kill", fresh, inventory_yaml, junit=junit)
    assert proc_v.returncode == 0, proc_v.stdout[-6000:]
    util.assert_no_serving_check_skipped(junit)


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
