"""Facts about the running kernel: its command line and its NUMA nodes.

Each fact takes ``root`` (default ``/``) and reads ``{root}/proc/...``/``{root}/sys/...``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from pyinfra.api import FactBase

from deploys.facts.shell import root_prefix


@dataclass(frozen=True)
class Cmdline:
    """The kernel command line: as read, and split (a flag maps to ``None``; last one wins)."""

    raw: str = ""
    params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node and its CPUs as a kernel CPU list (``"0-31,64-95"``; empty: memory only)."""

    node: int
    cpu_list: str


class KernelCmdline(FactBase[Cmdline]):
    """``{root}/proc/cmdline`` split into parameters (a flag has value ``None``; last one wins).

    Example::

        Cmdline(raw="BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=UUID=… ro quiet",
                params={"BOOT_IMAGE": "/vmlinuz-6.1.0-18-amd64", "root": "UUID=…",
                        "ro": None, "quiet": None})
    """

    @staticmethod
    def default() -> Cmdline:
        return Cmdline()

    def command(self, root: str = "/") -> str:
        return f"cat {root_prefix(root)}/proc/cmdline 2>/dev/null || true"

    def process(self, output: list[str]) -> Cmdline:
        raw = " ".join(line.strip() for line in output).strip()
        try:
            tokens = shlex.split(raw)
        except ValueError:  # an unbalanced quote: fall back to whitespace
            tokens = raw.split()
        params: dict[str, str | None] = {}
        for token in tokens:
            key, sep, value = token.partition("=")
            params[key] = value if sep else None
        return Cmdline(raw=raw, params=params)


class NumaNodes(FactBase[tuple[NumaNode, ...]]):
    """CPU list of each NUMA node, ``{root}/sys/devices/system/node/node*/cpulist``.

    A memory-only node has an empty list; nodes in order. Example::

        (NumaNode(node=0, cpu_list="0-31,64-95"), NumaNode(node=1, cpu_list="32-63,96-127"))
    """

    @staticmethod
    def default() -> tuple[NumaNode, ...]:
        return ()

    def command(self, root: str = "/") -> str:
        return (
            f"for f in {root_prefix(root)}/sys/devices/system/node/node*/cpulist; do "
            '[ -r "$f" ] || continue; n="${f%/cpulist}"; echo "${n##*/node} $(cat "$f")"; '
            "done; true"
        )

    def process(self, output: list[str]) -> tuple[NumaNode, ...]:
        nodes = []
        for line in output:
            number, _, cpus = line.strip().partition(" ")
            if number.isdigit():
                nodes.append(NumaNode(node=int(number), cpu_list=cpus.strip()))
        return tuple(sorted(nodes, key=lambda n: n.node))
