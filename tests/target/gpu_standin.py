"""The GPU boundary of a CI target: stand-ins for ``nvidia-smi`` and ``nvidia-persistenced``.

A CI target has no GPU, so the two NVIDIA programs the deploy's units and facts run would fail
there ("couldn't communicate with the NVIDIA driver"). The harness (and only the harness:
nothing here is in a production path of the repo) installs stand-ins that behave like the
real ones for what rigforge asks of them, over a small state file of GPUs:

* ``/usr/local/bin/nvidia-smi`` (``standin/nvidia-smi``; ahead of Debian's
  ``/usr/bin/nvidia-smi`` on every PATH the units and SSH sessions use): ``--query-gpu=FIELDS
  --format=csv[,noheader][,nounits]`` (optionally ``-i`` index, UUID or bus id), ``-i ID -pl
  W`` and ``-L``. Output format and exit codes follow ``nvidia-smi(1)`` (RETURN VALUE: 0
  success, 2 invalid argument, 4 no permission, 6 device not found, 9 driver not loaded) and
  the real captures in ``tests/fixtures/real/query-gpu`` (``00000000:41:00.0`` bus ids,
  ``350.00`` watts, units in the header even with ``nounits``). A limit outside
  ``[power.min_limit, power.max_limit]`` is refused with nvidia-smi's sentence and exit 2; a
  set limit is what later queries read.
* ``/usr/bin/nvidia-persistenced`` (the package's binary is moved aside with
  ``dpkg-divert --rename`` before the deploy installs it): forks a daemon, writes its pid file
  under ``/var/run/nvidia-persistenced`` like the real one, and with ``--persistence-mode``
  turns persistence on in the state file; without ``/dev/nvidiactl`` it fails as the real one.
* ``/dev/nvidiactl``: the harness binds ``/dev/null`` there (``ConditionPathExists=`` of the
  GPU-settings unit and the stand-ins' "driver loaded" check).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The stand-ins' GPU list inside the target (one ``|``-separated line per GPU).
STATE = "/var/lib/rigforge-gpu-standin/gpus"
NVIDIA_SMI = "/usr/local/bin/nvidia-smi"
PERSISTENCED = "/usr/bin/nvidia-persistenced"


@dataclass(frozen=True)
class StandinGpu:
    """One stand-in GPU: identity and power range in the inventory's terms (watts, MiB)."""

    uuid: str
    pci_bus_id: str
    name: str
    memory_total_mib: int
    min_w: float
    max_w: float
    default_w: float

    def line(self, index: int) -> str:
        """The state-file line: nvidia-smi's own field values (8-digit PCI domain).

        Idle: link at gen 1 of 4 (as the idle captures in tests/fixtures/real show), 0 %.
        """
        domain, rest = self.pci_bus_id.split(":", 1)
        bus = f"{int(domain, 16):08X}:{rest.upper()}"
        fields = [
            str(index),
            self.uuid,
            self.name,
            bus,
            str(self.memory_total_mib),
            f"{self.default_w:.2f}",
            f"{self.default_w:.2f}",
            f"{self.min_w:.2f}",
            f"{self.max_w:.2f}",
            "Disabled",
            "1",
            "4",
            "16",
            "16",
            "0",
        ]
        return "|".join(fields)


#: Columns of :data:`STATE`, with the unit nvidia-smi prints after a value and in the header.
_FIELDS = (
    ("index", ""),
    ("uuid", ""),
    ("name", ""),
    ("pci.bus_id", ""),
    ("memory.total", "MiB"),
    ("power.limit", "W"),
    ("power.default_limit", "W"),
    ("power.min_limit", "W"),
    ("power.max_limit", "W"),
    ("persistence_mode", ""),
    ("pcie.link.gen.current", ""),
    ("pcie.link.gen.max", ""),
    ("pcie.link.width.current", ""),
    ("pcie.link.width.max", ""),
    ("utilization.gpu", "%"),
)

_FIELD_TABLE = " ".join(f"{name}:{unit or '-'}" for name, unit in _FIELDS)

#: The stand-ins' sources (shell, ``@STATE@``/``@FIELDS@`` filled in by :func:`install`).
SOURCES = Path(__file__).resolve().parent / "standin"


def _script(name: str) -> str:
    text = (SOURCES / name).read_text(encoding="utf-8")
    return text.replace("@STATE@", STATE).replace("@FIELDS@", _FIELD_TABLE)


def install(root: Path, gpus: Iterable[StandinGpu]) -> None:
    """Put the stand-ins and the GPU state into the (not yet booted) tree at ``root``.

    ``dpkg-divert --rename`` (run in a chroot) makes the later ``nvidia-persistenced`` package
    install its binary as ``nvidia-persistenced.real``, leaving the stand-in in place.
    """
    state = root / STATE.lstrip("/")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("".join(g.line(i) + "\n" for i, g in enumerate(gpus)))
    for path, source in ((NVIDIA_SMI, "nvidia-smi"), (PERSISTENCED, "nvidia-persistenced")):
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path == PERSISTENCED:
            subprocess.run(
                [
                    *("chroot", str(root), "dpkg-divert", "--quiet", "--local", "--rename"),
                    *("--divert", f"{PERSISTENCED}.real", "--add", PERSISTENCED),
                ],
                check=True,
            )
        dest.write_text(_script(source))
        dest.chmod(0o755)


def power_cycle(root: Path) -> None:
    """What a reboot does to the stand-in GPUs: limits back to default, persistence off."""
    state = root / STATE.lstrip("/")
    if not state.is_file():
        return
    lines = []
    for line in state.read_text().splitlines():
        fields = line.split("|")
        fields[5], fields[9] = fields[6], "Disabled"
        lines.append("|".join(fields))
    state.write_text("".join(f"{line}\n" for line in lines))
