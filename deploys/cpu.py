"""The CPU's own power and latency (inventory ``cpu:``): governor, C-states, THP, sysctls.

Chosen: rigforge writes sysfs and ``/proc/sys`` itself rather than running tuned with a
profile that includes ``accelerator-performance``. tuned's ``force_latency`` holds
``/dev/cpu_dma_latency`` open from its daemon, which a fact cannot diff, a scratch tree cannot
hold and a second deploy cannot prove unchanged; per-state ``cpuidle/stateN/disable`` gives the
same exit-latency limit as files. The values follow that profile (``governor=performance``,
``force_latency=99``) and its ``throughput-performance`` base (``vm.swappiness=10``).

* Deploy (``kernel.apply_runtime``): :func:`~deploys.operations.cpu.cpu_tuned` under
  ``kernel.root``, which first records every value it manages in
  ``/var/lib/rigforge/cpu-defaults``.
* Boot (``kernel.root`` ``/`` only: a scratch tree has no boot to act on):
  ``/etc/tmpfiles.d/rigforge-cpu.conf`` (governor, idle states, THP) and
  ``/etc/sysctl.d/90-rigforge-cpu.conf`` (swappiness, NUMA balancing).
* ``enabled: false``: the boot files are removed and the recorded values written back
  (:func:`~deploys.operations.cpu.cpu_restored`); nothing recorded, nothing done.
"""

from __future__ import annotations

import posixpath

from pyinfra import host
from pyinfra.api import deploy

from deploys.facts.cpu import CpuKnobs
from deploys.operations.cpu import cpu_restored, cpu_tuned
from deploys.util import cfg, put_files, remove_files, snapshot
from tuning.render.files import (
    CPU_SYSCTL,
    CPU_TMPFILES,
    IdleStateOff,
    cpu_boot_files,
    numa_balancing_on,
)


@deploy("CPU: governor, C-states, THP, swappiness, NUMA balancing")
def cpu() -> None:
    """Apply the ``cpu:`` section at deploy and boot, or put the recorded defaults back."""
    config = cfg()
    root = config.kernel.root
    if not config.cpu.enabled:
        remove_files(
            [CPU_TMPFILES, CPU_SYSCTL], step=None, name="CPU boot settings (cpu.enabled: false)"
        )
        if config.kernel.apply_runtime:
            cpu_restored(name=f"CPU: back to the recorded defaults (under {root})", root=root)
        return
    settings = config.cpu
    if root == "/":
        state = host.get_fact(CpuKnobs, root=root)
        limit = settings.max_cstate_latency_us
        off = sorted(
            {
                posixpath.basename(posixpath.dirname(path))
                for path, value in state.values.items()
                if path.endswith("/latency")
                and limit is not None
                and value.isdigit()
                and int(value) > limit
            }
        )
        latency = {
            posixpath.basename(posixpath.dirname(p)): int(v)
            for p, v in state.values.items()
            if p.endswith("/latency") and v.isdigit()
        }
        specs = cpu_boot_files(
            config, [IdleStateOff(dir=d, name=d, latency_us=latency[d]) for d in off]
        )
        put_files(specs, snapshot(paths=[s.dest for s in specs]))
    else:
        host.noop(f"cpu: kernel.root is {root}, a scratch tree; no boot files")
    if not config.kernel.apply_runtime:
        host.noop("cpu: kernel.apply_runtime is false; running kernel left alone")
        return
    cpu_tuned(
        name=f"CPU: {settings.governor}, C-states ≤ {settings.max_cstate_latency_us} µs, "
        f"THP {settings.transparent_hugepages} (under {root})",
        governor=settings.governor,
        max_cstate_latency_us=settings.max_cstate_latency_us,
        transparent_hugepages=settings.transparent_hugepages,
        swappiness=settings.swappiness,
        numa_balancing=numa_balancing_on(config),
        root=root,
    )
