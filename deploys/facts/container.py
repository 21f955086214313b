"""Facts for the NVIDIA Container Toolkit: its apt key, the runtime configuration, the CDI spec.

Each reads files on the host with ``cat``/``gpg`` (no Python on the target) and parses on the
control machine, so a damaged file (an empty keyring, a ``daemon.json`` without the
``nvidia`` runtime, a CDI spec generated for another driver) is seen and repaired.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra.api import FactBase


class KeyringFingerprints(FactBase[list[str]]):
    """The fingerprints (40 hex digits, upper case) of the keys in an OpenPGP keyring file.

    ``gpg --show-keys --with-colons`` (reads the file, touches no keyring); the ``fpr`` records'
    tenth field. Empty for a missing, empty or unparseable file, or without ``gpg``. Example::

        ["C95B321B61E88C1809C4F759DDCAE044F796ECB0", "…"]
    """

    @staticmethod
    def default() -> list[str]:
        return []

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "gpg"

    def command(self, path: str) -> str:
        return f"gpg --batch --show-keys --with-colons {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        fingerprints = []
        for line in output:
            fields = line.strip().split(":")
            if fields[0] == "fpr" and len(fields) > 9 and fields[9]:
                fingerprints.append(fields[9].upper())
        return fingerprints


class NvidiaRuntimeConfigured(FactBase[bool]):
    """Whether a Docker ``daemon.json`` declares the ``nvidia`` runtime (``runtimes.nvidia``).

    ``nvidia-ctk runtime configure --runtime=docker`` adds exactly that entry. ``False`` when
    the file is missing, not JSON, or has no such runtime (another tool wrote the file).
    Example: ``True``.
    """

    @staticmethod
    def default() -> bool:
        return False

    def command(self, path: str = "/etc/docker/daemon.json") -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> bool:
        try:
            data = json.loads("\n".join(output) or "null")
        except json.JSONDecodeError:
            return False
        runtimes = data.get("runtimes") if isinstance(data, dict) else None
        return isinstance(runtimes, dict) and "nvidia" in runtimes


@dataclass(frozen=True)
class Cdi:
    """The CDI spec's state: present, the driver it was generated for, the driver loaded now."""

    spec: bool = False
    recorded: str | None = None
    driver: str | None = None


class CdiState(FactBase[Cdi]):
    """The CDI spec: whether it exists, the driver version it was generated for, the driver now.

    ``recorded``: the version the deploy wrote to ``record`` after its last ``nvidia-ctk cdi
    generate`` (``None`` when absent); ``driver``: ``nvidia-smi``'s ``driver_version``, else
    ``/sys/module/nvidia/version`` (``None`` when no driver is loaded). Example::

        Cdi(spec=True, recorded="550.127.05", driver="570.86.15")
    """

    @staticmethod
    def default() -> Cdi:
        return Cdi()

    def command(self, spec: str, record: str) -> str:
        return (
            f"[ -s {shlex.quote(spec)} ] && echo spec=1 || echo spec=0; "
            f'echo "recorded=$(cat {shlex.quote(record)} 2>/dev/null)"; '
            "d=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null "
            "| head -n1); "
            '[ -n "$d" ] || d=$(cat /sys/module/nvidia/version 2>/dev/null); '
            'echo "driver=$d"'
        )

    def process(self, output: list[str]) -> Cdi:
        values = dict(line.strip().partition("=")[::2] for line in output if "=" in line)
        driver = values.get("driver", "").strip()
        # nvidia-smi prints a sentence, not a version, when the driver is not loaded.
        if not driver or not driver[0].isdigit() or " " in driver:
            driver = ""
        return Cdi(
            spec=values.get("spec") == "1",
            recorded=values.get("recorded", "").strip() or None,
            driver=driver or None,
        )
