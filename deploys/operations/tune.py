"""The remote sweep's start, as an operation: detached from SSH, refused while one runs.

A sweep measures, so it has no "already done" state to diff: starting it is always a change.
What the operation decides from :class:`HostSnapshot` is how to detach it (a transient unit
where systemd runs, ``setsid nohup`` elsewhere); the start line itself refuses while an
earlier sweep still runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from deploys.facts.host import HostSnapshot

#: The transient unit the sweep runs in where systemd runs (``systemctl status rigforge-tune``).
TUNE_UNIT = "rigforge-tune"


def job_files(log_path: str) -> tuple[str, str]:
    """``(pid file, exit-status file)`` of the detached sweep, beside its log."""
    stem = str(Path(log_path).with_suffix(""))
    return f"{stem}.pid", f"{stem}.rc"


def systemd_escape(command: str) -> str:
    """``command`` with ``$`` and ``%`` doubled, as systemd reads them literally in ExecStart."""
    return command.replace("%", "%%").replace("$", "$$")


def start_command(sweep: str, log_path: str, *, systemd: bool) -> str:
    """The shell line that starts ``sweep`` detached from the SSH session; returns at once.

    The job writes its PID, appends its output to ``log_path`` and, when the sweep ends,
    its exit status to the ``.rc`` file (via a rename, so a reader never sees it half
    written). ``systemd``: run it as the transient unit :data:`TUNE_UNIT` (``--collect``: a
    failed one does not linger), else in a new session with ``setsid nohup``; either way a
    dropped SSH session does not reach it. Refuses (exit 1) while an earlier sweep still runs,
    and when the job has not written its PID within 10 s.
    """
    pid, rc = (shlex.quote(p) for p in job_files(log_path))
    log = shlex.quote(log_path)
    script = (
        f"echo $$ > {pid}; ( {sweep} ) >> {log} 2>&1; echo $? > {rc}.tmp && mv -f {rc}.tmp {rc}"
    )
    job = shlex.quote(script)
    if systemd:
        # systemd expands $VAR and %specifiers in a transient unit's command line (found on a
        # booted target: "echo $$" wrote "$" as the PID); doubled, they reach sh verbatim.
        unit_job = shlex.quote(systemd_escape(script))
        launch = f"systemd-run --unit {TUNE_UNIT} --collect --quiet /bin/sh -c {unit_job} &&"
    else:
        # "&" ends the command: the wait loop below runs in this shell, the job in its own.
        launch = f"setsid nohup /bin/sh -c {job} > /dev/null 2>&1 < /dev/null &"
    return (
        f'if [ ! -e {rc} ] && [ -s {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then '
        f'echo "rigforge: a sweep is still running (PID $(cat {pid})); follow it with '
        f'tail -f {log}" >&2; exit 1; fi; '
        f"mkdir -p {shlex.quote(str(Path(log_path).parent))} && rm -f {pid} {rc} && : > {log} && "
        f"{launch} "
        "i=0; "
        f"while [ ! -s {pid} ] && [ ! -e {rc} ]; do "
        "i=$((i + 1)); "
        f'if [ $i -gt 100 ]; then echo "rigforge: the sweep did not start; see {log}" >&2; '
        "exit 1; fi; "
        "sleep 0.1; done"
    )


@operation()
def sweep_started(sweep: str, log_path: str) -> Generator[str, None, None]:
    """Start ``sweep`` on the host detached from the SSH session, its output in ``log_path``.

    + sweep: the shell line that runs the sweep and installs its profile
    + log_path: where its output goes (absolute); its ``.pid``/``.rc`` files lie beside it

    Example::

        tune.sweep_started(sweep="/opt/rigforge/venv/bin/rigforge sweep …",
                           log_path="/var/log/rigforge/tune.log")
    """
    if not log_path.startswith("/"):
        raise OperationValueError(f"log path {log_path!r} must be absolute")
    booted = host.get_fact(HostSnapshot).systemd_booted
    yield start_command(sweep, log_path, systemd=booted)
