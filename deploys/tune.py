"""Tune a box you reach only over SSH: ``pyinfra inventory/<name>.py deploys/tune.py``.

Runs the deploy-installed ``rigforge sweep`` on each host (``<tuner.venv>/bin/rigforge``, put
there by ``deploys/workstation.py`` with ``tuner.install: true``), writes the profile to
``/etc/rigforge/profile.yaml`` on the host and fetches it back into the inventory's host data
(the host's ``power.profile`` when set, else ``<inventory dir>/host_data/NAME/profile.yaml``,
which the inventory uses by default). The next ``pyinfra … deploys/workstation.py`` applies
it. ``--limit NAME`` tunes one host; without it pyinfra tunes every host in parallel.

The sweep runs against the host's GPUs (``--rig nvml``), or — with ``tuner.sim_rig`` in the
inventory, for a host without GPUs such as the CI target — against that simulated rig YAML,
uploaded first. ``tuner.sweep_args`` are passed through (workload, policy, heat-soak length).
A sweep always counts as a change: it measures, so there is nothing to compare it with.

The sweep runs detached from the SSH session (``systemd-run --unit rigforge-tune --collect``
where systemd runs, else ``setsid nohup``), its output in ``/var/log/rigforge/tune.log``; the
deploy follows that log, printing new lines as ``[host] …`` every few seconds
(``rigforge_tune_poll_s``), and ends with the sweep's exit status. A dropped SSH session or a
killed pyinfra stops only the following: the sweep goes on (its own safety session restores
the caps when it fails), ``tail -f /var/log/rigforge/tune.log`` on the host shows it, and the
next ``deploys/tune.py`` run refuses to start a second sweep while it lives.

Real GPUs are swept inside the host's power budget: its inventory ``psus``, ``circuits`` and
``gpus[].psu`` are written to ``/etc/rigforge/budget.yaml`` on the host and passed as
``--budget`` (``rigforge apply`` at boot checks the profile's caps against the same file). A
host without ``psus`` is refused unless ``tuner.sweep_args`` holds ``--no-budget``. A
simulated rig brings its own PSUs.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Generator
from pathlib import Path

import yaml
from pyinfra import host
from pyinfra.api import Host, State, StringCommand, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import files, python

from deploys.operations import tune as tune_ops
from deploys.operations.tune import TUNE_UNIT, job_files, start_command
from deploys.util import cfg
from inventory.loader import INVENTORY_DIR_KEY
from tuning.budget import host_budget_document
from tuning.render.files import SIM_RIG_TARGET

__all__ = ["TUNE_UNIT", "follow_command", "job_files", "start_command", "sweep_command", "tune"]

DEFAULTS = {
    "rigforge_profile_path": "/etc/rigforge/profile.yaml",
    "rigforge_tune_rig_path": SIM_RIG_TARGET,
    "rigforge_tune_state_dir": "/var/lib/rigforge/state",
    "rigforge_budget_path": "/etc/rigforge/budget.yaml",
    "rigforge_tune_log_path": "/var/log/rigforge/tune.log",
    "rigforge_tune_poll_s": 5,
}


@operation()
def refuse(reason: str) -> Generator[str, None, None]:
    """Fail this host (only this one) with ``reason`` on stderr.

    + reason: the sentence a person reads, naming the fix
    """
    yield f"echo {shlex.quote(f'rigforge: {host.name}: {reason}')} >&2; exit 1"


def local_profile_path(inventory_dir: str | None, host_name: str, profile: str | None) -> Path:
    """Where the fetched profile lands on the control machine.

    The host's ``power.profile`` (absolute after loading) when the inventory names one, else
    ``<inventory dir>/host_data/<host>/profile.yaml`` (``inventory/`` when unknown).
    """
    if profile:
        return Path(profile)
    return Path(inventory_dir or "inventory") / "host_data" / host_name / "profile.yaml"


def budget_yaml(document: dict) -> str:
    """The budget file's text (:func:`tuning.budget.load_budget_file` format)."""
    return "# written by deploys/tune.py from the inventory; units W, V, A\n" + yaml.safe_dump(
        document, sort_keys=False
    )


def sweep_command(
    rigforge: str,
    rig: str,
    sweep_args: list[str],
    profile_path: str,
    state_dir: str,
    group: str,
    budget_path: str | None = None,
) -> str:
    """The shell line run on the host: sweep, then install the profile atomically (0640).

    The profile is written beside the target and moved over it only when the sweep
    succeeded, so a failed sweep leaves the applied profile as it was. ``budget_path``: the
    power budget file on the host (``--budget``). Its output (progress, the final table and
    summary) goes wherever the caller sends it: :func:`start_command` sends it to the log.
    """
    new = f"{profile_path}.new"
    args = " ".join(shlex.quote(a) for a in sweep_args)
    budget = f"--budget {shlex.quote(budget_path)} " if budget_path else ""
    return (
        f"mkdir -p {shlex.quote(state_dir)} && "
        f"RIGFORGE_STATE_DIR={shlex.quote(state_dir)} {shlex.quote(rigforge)} sweep "
        f"--rig {shlex.quote(rig)} {budget}{args} --profile-out {shlex.quote(new)} && "
        f"chown {shlex.quote(f'root:{group}')} {shlex.quote(new)} && "
        f"chmod 640 {shlex.quote(new)} && "
        f"mv -f {shlex.quote(new)} {shlex.quote(profile_path)}"
    )


def follow_command(log_path: str, poll_s: float) -> str:
    """The shell line that follows the detached sweep until it ends; exits with its status.

    Every ``poll_s`` seconds it prints the log's new complete lines to stdout (the rest as
    soon as the sweep has ended, within half a second). Exits 1 when the sweep's process is
    gone without an exit status (killed, OOM, host rebooted).
    """
    pid, rc = (shlex.quote(p) for p in job_files(log_path))
    log = shlex.quote(log_path)
    return (
        "n=0; "
        "while :; do "
        # The status first, then the log: every line written before the status gets printed.
        f"ended=; [ -e {rc} ] && ended=1; "
        f'lost=; [ -z "$ended" ] && ! kill -0 "$(cat {pid} 2>/dev/null)" 2>/dev/null && '
        f"{{ [ -e {rc} ] && ended=1 || lost=1; }}; "
        f'if [ -n "$ended" ]; then tail -n "+$((n + 1))" {log}; exit "$(cat {rc})"; fi; '
        f"total=$(wc -l < {log}); "
        'if [ "$total" -gt "$n" ]; then '
        f'tail -n "+$((n + 1))" {log} | head -n "$((total - n))"; n=$total; fi; '
        'if [ -n "$lost" ]; then '
        f'echo "rigforge: the sweep ended without an exit status (killed?); see {log}" >&2; '
        "exit 1; fi; "
        # Wait out the interval in half seconds, so the end is seen at once.
        f"i=0; while [ $i -lt {max(1, round(float(poll_s) * 2))} ] && [ ! -e {rc} ]; do "
        "sleep 0.5; i=$((i + 1)); done; "
        "done"
    )


#: How the host is reached as root (``ssh.sudo`` in the inventory sets ``_sudo``); a Python
#: callback gets none of its operation's arguments, so these are read from the host data.
_AUTH_ARGUMENTS = ("_sudo", "_sudo_user", "_use_sudo_login", "_sudo_password", "_su_user")


def _follow(state: State, host: Host, command: str) -> bool:
    """Run ``command`` with its output printed line by line as it arrives (any ``-v``).

    pyinfra prints a shell operation's output only at ``-vvv``; a 30-minute heat-soak must
    show its progress at any verbosity, hence a callback with ``print_output``.
    """
    auth = {k: host.data.get(k) for k in _AUTH_ARGUMENTS if host.data.get(k) is not None}
    status, _ = host.run_shell_command(StringCommand(command), print_output=True, **auth)
    return bool(status)


@deploy("rigforge sweep on the host; profile fetched back", data_defaults=DEFAULTS)
def tune() -> None:
    """Sweep on the host and fetch the profile into the inventory's host data."""
    config = cfg()
    rigforge = f"{config.tuner.venv}/bin/rigforge"
    if not config.tuner.install or not host.get_fact(File, path=rigforge):
        refuse(
            name="rigforge is installed on the host",
            reason=f"rigforge is not installed at {rigforge}; set tuner.install: true and run "
            "pyinfra ... deploys/workstation.py first",
        )
        return
    rig = "nvml"
    budget_path = None
    if not config.tuner.sim_rig:
        document = host_budget_document(config)
        if document is None and "--no-budget" not in config.tuner.sweep_args:
            refuse(
                name="the host's power budget is described",
                reason="the inventory lists no psus for this host, so a sweep of its GPUs "
                "would run outside any PSU/circuit budget; add psus, circuits and gpus[].psu "
                "(or tuner.sweep_args: ['--no-budget'] to sweep without one)",
            )
            return
        if document is not None:
            budget_path = host.data.rigforge_budget_path
            files.put(
                name=f"Power budget for the sweep ({budget_path})",
                src=io.StringIO(budget_yaml(document)),
                dest=budget_path,
                mode="644",
                create_remote_dir=True,
            )
    else:
        rig = host.data.rigforge_tune_rig_path
        files.put(
            name=f"Simulated rig for the sweep ({Path(config.tuner.sim_rig).name})",
            src=config.tuner.sim_rig,
            dest=rig,
            create_remote_dir=True,
        )
    profile = host.data.rigforge_profile_path
    log = host.data.rigforge_tune_log_path
    sweep = sweep_command(
        rigforge,
        rig,
        list(config.tuner.sweep_args),
        profile,
        host.data.rigforge_tune_state_dir,
        config.base.service_user,
        budget_path,
    )
    tune_ops.sweep_started(
        name=f"Start rigforge sweep --rig {rig} on the host, detached (log {log})",
        sweep=sweep,
        log_path=log,
    )
    python.call(
        name=f"Follow the sweep until it ends (profile to {profile})",
        function=_follow,
        command=follow_command(log, float(host.data.rigforge_tune_poll_s)),
    )
    local = local_profile_path(host.data.get(INVENTORY_DIR_KEY), host.name, config.power.profile)
    files.get(
        name=f"Fetch the profile into {local}",
        src=profile,
        dest=str(local),
        add_deploy_dir=False,
        create_local_dir=True,
    )


# pyinfra execs this file without a ``__name__`` of its own; an import (the unit tests of the
# shell lines above) must not start a deploy.
if __name__ != "deploys.tune":
    tune()
