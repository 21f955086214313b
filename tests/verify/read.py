"""Reading a host over testinfra, the way a person would: files, ``systemctl``, sysfs, ``dpkg``.

The suite reads sysfs and ``/proc`` with its own plain shell rather than the deploy's facts, so a
parser bug shared by the deploy and its check cannot hide a wrong host. Each helper sets
``__tracebackhide__`` so a failure points at the check, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from inventory.schema import HostConfig

#: PCI vendor id of NVIDIA; class 0x03xxxx is a display/3D controller (the GPU, not its audio).
NVIDIA_VENDOR = "0x10de"


def runtime_root_or_skip(config: HostConfig) -> str:
    """The root the deploy manages the running kernel under (``kernel.root``); skips when the
    inventory leaves the running kernel alone (``kernel.apply_runtime: false``)."""
    __tracebackhide__ = True
    if not config.kernel.apply_runtime:
        pytest.skip("kernel.apply_runtime is false: the running kernel is not managed")
    return config.kernel.root


def config_lines(host, path: str) -> list[str]:
    """The non-comment, non-blank lines of a file on the host (fails when it is missing)."""
    __tracebackhide__ = True
    f = host.file(path)
    assert f.exists, f"{path} is missing"
    return [ln for ln in f.content_string.splitlines() if ln.strip() and not ln.startswith("#")]


def unit_enabled(host, unit: str) -> bool:
    """Whether ``systemctl is-enabled`` says enabled or static (works without a running systemd).

    rc 0: enabled/static; 1: disabled or missing.
    """
    __tracebackhide__ = True
    return host.run(f"systemctl is-enabled {unit}").stdout.strip() in ("enabled", "static")


def unit_active(host, unit: str) -> bool:
    """Whether systemd runs ``unit`` now (``False`` where systemd itself is not running).

    rc 0: active; 3: inactive/failed; 1 or 4 (with "System has not been booted with systemd"
    on stderr): no systemd to ask — the CI target.
    """
    __tracebackhide__ = True
    return host.run(f"systemctl is-active {unit}").stdout.strip() == "active"


def environment(lines: list[str], name: str) -> str | None:
    """The value a unit's ``Environment="NAME=value"`` line gives ``name``, else ``None``."""
    for line in lines:
        match = re.fullmatch(rf'Environment="?{re.escape(name)}=([^"]*)"?', line)
        if match:
            return match.group(1)
    return None


def exec_start(text: str) -> str:
    """A unit's ``ExecStart=`` command with its ``\\``-continued lines joined."""
    __tracebackhide__ = True
    match = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", text, re.M)
    assert match, "the unit has no ExecStart="
    return re.sub(r"\s*\\\n\s*", " ", match.group(1))


def installed_packages(host) -> list[str]:
    """Every installed package name."""
    __tracebackhide__ = True
    out = host.run("dpkg-query -W -f='${Status}|${Package}\\n'")
    return [
        name
        for status, _, name in (ln.partition("|") for ln in out.stdout.splitlines())
        if status.endswith(" installed")
    ]


def aspm_policy(host, root: str) -> str | None:
    """The kernel's active ASPM policy (``{root}/sys/module/pcie_aspm/parameters/policy``).

    The kernel lists every policy with the active one in brackets
    (``default [performance] powersave powersupersave``); a scratch tree (the CI target's
    tmpfs ``/sys``) holds the one word last written. ``None``: no such file (a kernel without
    ``CONFIG_PCIEASPM``).
    """
    __tracebackhide__ = True
    path = f"{root.rstrip('/')}/sys/module/pcie_aspm/parameters/policy"
    f = host.file(path)
    if not f.exists:
        return None
    words = f.content_string.split()
    active = [w.strip("[]") for w in words if w.startswith("[")]
    return active[0] if active else (words[0] if len(words) == 1 else None)


@dataclass(frozen=True)
class GpuDevice:
    """One NVIDIA GPU in sysfs: its local CPUs, its ``link/*aspm`` switches, its IRQs' CPUs.

    ``aspm``: file name → 1 (that ASPM state on) or 0; empty on kernels < 5.5.
    ``irq_cpus``: IRQ number → its ``/proc/irq/N/smp_affinity_list`` (``""``: unreadable).
    """

    bus_id: str
    local_cpulist: str
    aspm: dict[str, int] = field(default_factory=dict)
    irq_cpus: dict[int, str] = field(default_factory=dict)


def gpu_devices(host, root: str) -> list[GpuDevice]:
    """The NVIDIA GPUs under ``{root}/sys/bus/pci/devices`` (vendor 0x10de, class 0x03xxxx)."""
    __tracebackhide__ = True
    r = root.rstrip("/")
    script = (
        f"for d in {r}/sys/bus/pci/devices/*; do "
        f'[ "$(cat "$d/vendor" 2>/dev/null)" = {NVIDIA_VENDOR} ] || continue; '
        'case "$(cat "$d/class" 2>/dev/null)" in 0x03*) ;; *) continue ;; esac; '
        'echo "dev ${d##*/} $(cat "$d/local_cpulist" 2>/dev/null)"; '
        'for f in "$d"/link/*aspm; do [ -r "$f" ] && echo "aspm ${f##*/} $(cat "$f")"; done; '
        'irqs=$(ls "$d/msi_irqs" 2>/dev/null); [ -n "$irqs" ] || irqs=$(cat "$d/irq" 2>/dev/null); '
        f'for i in $irqs; do echo "irq $i $(cat {r}/proc/irq/$i/smp_affinity_list 2>/dev/null)"; '
        "done; done; true"
    )
    out = host.run(script)
    assert out.rc == 0, f"reading {r}/sys/bus/pci/devices: rc {out.rc}: {out.stderr}"
    found: list[GpuDevice] = []
    for line in out.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        key, _, value = rest.partition(" ")
        if kind == "dev":
            found.append(GpuDevice(bus_id=key, local_cpulist=value.strip()))
        elif found and kind == "aspm" and value.strip().isdigit():
            found[-1].aspm[key] = int(value)
        elif found and kind == "irq" and key.isdigit():
            found[-1].irq_cpus[int(key)] = value.strip()
    return found


def smi(host, query: str) -> list[list[str]]:
    """``nvidia-smi --query-gpu=uuid,QUERY`` rows; skips where no GPU answers."""
    __tracebackhide__ = True
    out = host.run(f"nvidia-smi --query-gpu=uuid,{query} --format=csv,noheader,nounits")
    if out.rc != 0:
        pytest.skip(f"nvidia-smi cannot reach a GPU on this host (rc {out.rc})")
    return [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines()]
