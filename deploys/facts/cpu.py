"""Facts about the CPU's power and latency knobs: cpufreq governors, cpuidle states,
transparent huge pages and the sysctls the ``cpu`` deploy manages, plus the defaults it
recorded before its first change.

Reads ``{root}/sys/...`` and ``{root}/proc/sys/...`` (``root`` from ``kernel.root``), so tests
and the CI target point it at a scratch tree. Plain ``sh`` on the target.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from pyinfra.api import FactBase

from deploys.facts.shell import root_prefix

#: Where the values found before the first change are kept (one ``path=value`` a line, paths
#: relative to ``kernel.root``); outside ``kernel.root``: it is the host's own state.
CPU_DEFAULTS_FILE = "/var/lib/rigforge/cpu-defaults"

GOVERNOR = "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"
IDLE_LATENCY = "sys/devices/system/cpu/cpu[0-9]*/cpuidle/state[0-9]*/latency"
IDLE_DISABLE = "sys/devices/system/cpu/cpu[0-9]*/cpuidle/state[0-9]*/disable"
THP = "sys/kernel/mm/transparent_hugepage/enabled"
SWAPPINESS = "proc/sys/vm/swappiness"
NUMA_BALANCING = "proc/sys/kernel/numa_balancing"
PATTERNS = (GOVERNOR, IDLE_LATENCY, IDLE_DISABLE, THP, SWAPPINESS, NUMA_BALANCING)

#: A path this fact reports: under one of :data:`PATTERNS`, nothing else (a recorded file
#: line naming another path is dropped, so restoring never writes elsewhere).
_PATH = re.compile(
    r"sys/devices/system/cpu/cpu\d{1,4}/(?:cpufreq/scaling_governor"
    r"|cpuidle/state\d{1,2}/(?:latency|disable))"
    r"|sys/kernel/mm/transparent_hugepage/enabled|proc/sys/vm/swappiness"
    r"|proc/sys/kernel/numa_balancing"
)
_VALUE = re.compile(r"[\w\[\] .-]{0,80}")


@dataclass(frozen=True)
class CpuKnobState:
    """Current values (path relative to the root → file content, stripped) and the recorded
    defaults (``None``: nothing recorded yet). Example::

        CpuKnobState(values={"sys/devices/system/cpu/cpu0/cpufreq/scaling_governor":
                             "schedutil", "proc/sys/vm/swappiness": "60"},
                     recorded=None)
    """

    values: dict[str, str] = field(default_factory=dict)
    recorded: dict[str, str] | None = None


class CpuKnobs(FactBase[CpuKnobState]):
    """The values under :data:`PATTERNS` and :data:`CPU_DEFAULTS_FILE`'s content."""

    @staticmethod
    def default() -> CpuKnobState:
        return CpuKnobState()

    def command(self, root: str = "/", defaults: str = CPU_DEFAULTS_FILE) -> str:
        prefix = root_prefix(root)
        defaults = shlex.quote(defaults)
        globs = " ".join(f"{prefix}/{p}" for p in PATTERNS)
        return (
            f'for f in {globs}; do [ -r "$f" ] && '
            f'printf "value %s=%s\\n" "${{f#{prefix}/}}" "$(cat "$f")"; done; '
            f"[ -r {defaults} ] && sed 's/^/recorded /' {defaults}; "
            f"[ -e {defaults} ] && echo recorded-file; true"
        )

    def process(self, output: list[str]) -> CpuKnobState:
        values: dict[str, str] = {}
        recorded: dict[str, str] = {}
        has_file = False
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "recorded-file":
                has_file = True
                continue
            path, _, value = rest.partition("=")
            path = path.lstrip("/")
            if not _PATH.fullmatch(path) or not _VALUE.fullmatch(value.strip()):
                continue
            (values if kind == "value" else recorded)[path] = value.strip()
        return CpuKnobState(values=values, recorded=recorded if has_file else None)
