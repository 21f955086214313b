"""Facts about the running kernel: its command line and its NUMA nodes.

Each fact takes ``root`` (default ``/``) and reads ``{root}/proc/...``/``{root}/sys/...``.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from deploys.facts.shell import root_prefix


class KernelCmdline(FactBase):
    """``{root}/proc/cmdline`` split into parameters (a flag has value ``None``; last one wins).

    Example::

        {
            "raw": "BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=UUID=… ro quiet",
            "params": {"BOOT_IMAGE": "/vmlinuz-6.1.0-18-amd64", "root": "UUID=…",
                       "ro": None, "quiet": None},
        }
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"raw": "", "params": {}}

    def command(self, root: str = "/") -> str:
        return f"cat {root_prefix(root)}/proc/cmdline 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, Any]:
        raw = " ".join(line.strip() for line in output).strip()
        try:
            tokens = shlex.split(raw)
        except ValueError:  # an unbalanced quote: fall back to whitespace
            tokens = raw.split()
        params: dict[str, str | None] = {}
        for token in tokens:
            key, sep, value = token.partition("=")
            params[key] = value if sep else None
        return {"raw": raw, "params": params}


class NumaNodes(FactBase):
    """CPU list of each NUMA node, ``{root}/sys/devices/system/node/node*/cpulist``.

    A memory-only node has an empty list. Example::

        [{"node": 0, "cpu_list": "0-31,64-95"}, {"node": 1, "cpu_list": "32-63,96-127"}]
    """

    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []

    def command(self, root: str = "/") -> str:
        return (
            f"for f in {root_prefix(root)}/sys/devices/system/node/node*/cpulist; do "
            '[ -r "$f" ] || continue; n="${f%/cpulist}"; echo "${n##*/node} $(cat "$f")"; '
            "done; true"
        )

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        nodes = []
        for line in output:
            number, _, cpus = line.strip().partition(" ")
            if number.isdigit():
                nodes.append({"node": int(number), "cpu_list": cpus.strip()})
        return sorted(nodes, key=lambda n: n["node"])
