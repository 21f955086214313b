"""Facts from sysfs about the NVIDIA GPUs' PCIe links and the kernel's ASPM policy.

Each fact takes ``root`` (default ``/``): it reads ``{root}/sys/...``, so tests and the CI
target point it at a scratch tree. Plain ``sh`` on the target; no Python needed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyinfra.api import FactBase

from deploys.facts.shell import root_prefix
from tuning.captures.values import gts_to_gen

#: PCI vendor id of NVIDIA; class 0x03xxxx is a display controller (the GPU, not its audio).
NVIDIA_VENDOR = "0x10de"

_LINK_FILES = (
    "class",
    "current_link_speed",
    "max_link_speed",
    "current_link_width",
    "max_link_width",
    "numa_node",
    "local_cpulist",
)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _gen(speed: str | None) -> int | None:
    """``"16.0 GT/s PCIe"`` → 4; ``"Unknown"`` → ``None``."""
    if not speed:
        return None
    try:
        return gts_to_gen(float(speed.split()[0]))
    except ValueError:
        return None


@dataclass(frozen=True)
class PciLink:
    """One NVIDIA GPU's PCIe link as sysfs reports it (``None``: the kernel did not say).

    ``aspm``: each ``link/*aspm`` file (``l0s_aspm``, ``l1_aspm``, …) → 1 when that state is
    enabled. ``numa_node`` -1 means "no NUMA affinity".
    """

    gen_current: int | None = None
    gen_max: int | None = None
    width_current: int | None = None
    width_max: int | None = None
    numa_node: int | None = None
    local_cpulist: str | None = None
    aspm: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class AspmState:
    """The kernel's ASPM policy: the active one (``None``: none marked) and all it offers."""

    active: str | None
    available: tuple[str, ...]


class PciLinks(FactBase[dict[str, PciLink]]):
    """PCIe link state of every NVIDIA GPU, from ``{root}/sys/bus/pci/devices/*``.

    ``aspm``: the per-device ``link/*aspm`` files (1 = that ASPM state enabled), present on
    kernels ≥ 5.5 with ``CONFIG_PCIEASPM``; keyed by bus id. Example::

        {"0000:41:00.0": PciLink(gen_current=1, gen_max=4, width_current=16, width_max=16,
                                 numa_node=0, local_cpulist="0-15",
                                 aspm={"l0s_aspm": 0, "l1_aspm": 1})}
    """

    @staticmethod
    def default() -> dict[str, PciLink]:
        return {}

    def command(self, root: str = "/") -> str:
        files = " ".join(_LINK_FILES)
        return (
            f"for d in {root_prefix(root)}/sys/bus/pci/devices/*; do "
            f'[ "$(cat "$d/vendor" 2>/dev/null)" = {NVIDIA_VENDOR} ] || continue; '
            'case "$(cat "$d/class" 2>/dev/null)" in 0x03*) ;; *) continue ;; esac; '
            'echo "device=${d##*/}"; '
            f'for f in {files}; do [ -r "$d/$f" ] && echo "$f=$(cat "$d/$f")"; done; '
            'for f in "$d"/link/*aspm; do [ -r "$f" ] && echo "aspm.${f##*/}=$(cat "$f")"; done; '
            "done; true"
        )

    def process(self, output: list[str]) -> dict[str, PciLink]:
        raw: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in output:
            key, _, value = line.strip().partition("=")
            if key == "device":
                current = raw.setdefault(value, {})
            elif current is not None and key:
                current[key] = value.strip()
        return {
            bus_id: PciLink(
                gen_current=_gen(cells.get("current_link_speed")),
                gen_max=_gen(cells.get("max_link_speed")),
                width_current=_int(cells.get("current_link_width")),
                width_max=_int(cells.get("max_link_width")),
                numa_node=_int(cells.get("numa_node")),
                local_cpulist=cells.get("local_cpulist") or None,
                aspm={
                    key.removeprefix("aspm."): _int(value)
                    for key, value in sorted(cells.items())
                    if key.startswith("aspm.")
                },
            )
            for bus_id, cells in sorted(raw.items())
        }


class AspmPolicy(FactBase[AspmState | None]):
    """The kernel's ASPM policy, ``{root}/sys/module/pcie_aspm/parameters/policy``.

    ``None`` when the file is absent (kernel without ``CONFIG_PCIEASPM``). The kernel lists
    every policy with the active one in brackets. A file holding one bare word is read as that
    policy being active: a scratch tree (the CI target's tmpfs ``/sys``) is a plain file that
    keeps what was last written to it, so without this a second deploy would never see its own
    write and would not be a no-op. Example::

        AspmState(active="default",
                  available=("default", "performance", "powersave", "powersupersave"))
    """

    @staticmethod
    def default() -> AspmState | None:
        return None

    def command(self, root: str = "/") -> str:
        return f"cat {root_prefix(root)}/sys/module/pcie_aspm/parameters/policy 2>/dev/null || true"

    def process(self, output: list[str]) -> AspmState | None:
        words = " ".join(output).split()
        if not words:
            return None
        active = next((w.strip("[]") for w in words if w.startswith("[")), None)
        if active is None and len(words) == 1:
            active = words[0]
        return AspmState(active=active, available=tuple(w.strip("[]") for w in words))
