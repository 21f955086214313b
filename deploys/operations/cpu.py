"""The CPU's power and latency knobs in the running kernel: governor, C-states, transparent
huge pages, ``vm.swappiness``, ``kernel.numa_balancing``; and putting back what was there.

Writes go to ``{root}/sys/...`` and ``{root}/proc/sys/...`` (``root`` from ``kernel.root``).
Before the first change every managed value is recorded in
:data:`~deploys.facts.cpu.CPU_DEFAULTS_FILE`; :func:`cpu_restored` writes those back.
"""

from __future__ import annotations

import posixpath
import shlex

from pyinfra import host
from pyinfra.api import operation

from deploys.facts.cpu import CPU_DEFAULTS_FILE, THP, CpuKnobs, CpuKnobState
from deploys.facts.shell import root_prefix


def _active(text: str | None) -> str | None:
    """The active word of a sysfs choice file (``always [madvise] never`` → ``madvise``); a
    plain word (what a scratch tree keeps after a write) is itself."""
    if text is None:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text.strip()


def wanted_values(
    state: CpuKnobState,
    *,
    governor: str,
    max_cstate_latency_us: int | None,
    transparent_hugepages: str,
    swappiness: int,
    numa_balancing: bool,
) -> dict[str, str]:
    """Path (relative to the root) → the value to write, for every knob the host has.

    An idle state whose ``latency`` (µs) exceeds ``max_cstate_latency_us`` gets ``disable``
    1; shallower states are left as they are (tuned's ``force_latency`` keeps them too).
    """
    wanted: dict[str, str] = {}
    for path, value in state.values.items():
        name = posixpath.basename(path)
        if name == "scaling_governor":
            wanted[path] = governor
        elif name == "latency" and max_cstate_latency_us is not None and value.isdigit():
            if int(value) > max_cstate_latency_us:
                wanted[posixpath.join(posixpath.dirname(path), "disable")] = "1"
        elif path == THP:
            wanted[path] = transparent_hugepages
        elif path == "proc/sys/vm/swappiness":
            wanted[path] = str(swappiness)
        elif path == "proc/sys/kernel/numa_balancing":
            wanted[path] = "1" if numa_balancing else "0"
    return {p: v for p, v in wanted.items() if p in state.values}


def _write(prefix: str, path: str, value: str) -> str:
    return f"echo {shlex.quote(value)} > {prefix}/{shlex.quote(path)}"


@operation()
def cpu_tuned(
    governor: str = "performance",
    max_cstate_latency_us: int | None = 99,
    transparent_hugepages: str = "madvise",
    swappiness: int = 10,
    numa_balancing: bool = False,
    root: str = "/",
    defaults: str = CPU_DEFAULTS_FILE,
):
    """
    Set the governor, idle states, THP and the two sysctls; record the old values first.

    + governor: cpufreq governor for every CPU that has cpufreq
    + max_cstate_latency_us: disable idle states with a longer exit latency; ``None``: leave
    + transparent_hugepages: ``always``, ``madvise`` or ``never``
    + swappiness: ``vm.swappiness``
    + numa_balancing: ``kernel.numa_balancing`` on or off
    + root: the tree ``/sys`` and ``/proc`` live under (``/`` on a real box)
    + defaults: the file the values before the first change are recorded in

    A knob the host lacks (no cpufreq in a VM, no cpuidle, no NUMA) is left out, not an error.

    **Example:**

    .. code:: python

        cpu.cpu_tuned(name="CPU: performance governor, C-states ≤ 99 µs, THP madvise")
    """
    state = host.get_fact(CpuKnobs, root=root, defaults=defaults)
    wanted = wanted_values(
        state,
        governor=governor,
        max_cstate_latency_us=max_cstate_latency_us,
        transparent_hugepages=transparent_hugepages,
        swappiness=swappiness,
        numa_balancing=numa_balancing,
    )
    changes = {p: v for p, v in sorted(wanted.items()) if _active(state.values[p]) != v}
    if not changes:
        host.noop(f"CPU knobs as wanted ({len(wanted)} values)")
        return
    if state.recorded is None:
        lines = [f"{p}={_active(state.values[p])}" for p in sorted(wanted)]
        folder = shlex.quote(posixpath.dirname(defaults))
        target = shlex.quote(defaults)
        yield (
            f"mkdir -p {folder} && printf '%s\\n' {' '.join(shlex.quote(x) for x in lines)} "
            f"> {target}.tmp && mv {target}.tmp {target}"
        )
    prefix = root_prefix(root)
    for path, value in changes.items():
        yield _write(prefix, path, value)


@operation()
def cpu_restored(root: str = "/", defaults: str = CPU_DEFAULTS_FILE):
    """
    Write back the values :func:`cpu_tuned` recorded, then forget them.

    + root: the tree ``/sys`` and ``/proc`` live under
    + defaults: the file the values were recorded in

    **Example:**

    .. code:: python

        cpu.cpu_restored(name="CPU: back to the recorded defaults (cpu.enabled: false)")
    """
    state = host.get_fact(CpuKnobs, root=root, defaults=defaults)
    if state.recorded is None:
        host.noop("CPU knobs: nothing recorded, nothing to restore")
        return
    prefix = root_prefix(root)
    for path, value in sorted(state.recorded.items()):
        if path in state.values and _active(state.values[path]) != value:
            yield _write(prefix, path, value)
    yield f"rm -f {shlex.quote(defaults)}"
