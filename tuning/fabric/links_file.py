"""``links.yaml``: what ``rigforge links`` measured on a rig, typed, for the placement to read.

Written by ``rigforge links --out DIR`` and ``--host NAME``
(``inventory/host_data/NAME/links.yaml``). Units: GB/s (10^9 B/s) per direction, µs.
Example::

    schema_version: 1
    rig: {name: reference, fingerprint: "sha256:…"}
    size_mib: 256
    gpus:
      - {uuid: GPU-…, index: 5, pci_bus_id: "00000000:62:00.0", gen: 3, width: 8,
         max_gen: 4, max_width: 16, h2d_gbps: 6.6, d2h_gbps: 7.0, h2d_concurrent_gbps: 6.6,
         d2h_concurrent_gbps: 7.0, bidir_gbps: 13.5, expected_gbps: 6.6,
         verdicts: [downtrained]}
    p2p:
      - {src: GPU-…, dst: GPU-…, gbps: 13.2, latency_us: 14.1, mode: staged}
    lanes: {total: 128, used: 100, free: 28}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from tuning.core.strict import StrictModel
from tuning.errors import problems_error, read_yaml_config, yaml_path


class _Strict(StrictModel):
    """Unknown keys, control characters, booleans as numbers and ``.inf``/``.nan`` refused."""


class LinksRig(_Strict):
    name: str
    fingerprint: str


class GpuLinks(_Strict):
    """One GPU's host link as measured (``*_concurrent``: while every GPU copied at once)."""

    uuid: str
    index: int = Field(ge=0)
    pci_bus_id: str | None = None
    gen: int | None = Field(default=None, ge=1, le=6)
    width: int | None = Field(default=None, ge=1, le=32)
    max_gen: int | None = Field(default=None, ge=1, le=6)
    max_width: int | None = Field(default=None, ge=1, le=32)
    h2d_gbps: float = Field(ge=0)
    d2h_gbps: float = Field(ge=0)
    h2d_concurrent_gbps: float = Field(ge=0)
    d2h_concurrent_gbps: float = Field(ge=0)
    bidir_gbps: float | None = Field(default=None, ge=0)
    expected_gbps: float | None = Field(default=None, ge=0)
    verdicts: list[str] = Field(default_factory=list)


class PairLinks(_Strict):
    """GPU ``src`` to GPU ``dst``: bandwidth, latency and how it went (peer, staged, NVLink)."""

    src: str
    dst: str
    gbps: float = Field(ge=0)
    latency_us: float | None = Field(default=None, ge=0)
    mode: Literal["peer", "staged", "nvlink"]
    verdicts: list[str] = Field(default_factory=list)


class LaneCounts(_Strict):
    total: int = Field(ge=0)
    used: int = Field(ge=0)
    free: int


class LinksFile(_Strict):
    """The whole ``links.yaml`` (``schema_version: 1``, as every rigforge file carries)."""

    schema_version: Literal[1] = 1
    rig: LinksRig
    size_mib: int = Field(gt=0)
    gpus: list[GpuLinks] = Field(min_length=1)
    p2p: list[PairLinks] = Field(default_factory=list)
    lanes: LaneCounts | None = None

    def pair(self, src: str, dst: str) -> PairLinks | None:
        for entry in self.p2p:
            if (entry.src, entry.dst) == (src, dst):
                return entry
        return None


def load_links_file(path: Path) -> LinksFile:
    """Read and validate a ``links.yaml``; :class:`ConfigError` naming the file and YAML path."""
    doc = read_yaml_config(path, "links file")
    if not isinstance(doc.data, dict):
        raise problems_error(
            str(path), [("(top level)", "expected a mapping; re-run rigforge links")], doc
        )
    try:
        return LinksFile.model_validate(doc.data)
    except ValidationError as exc:
        problems = [
            (yaml_path(e["loc"]), f"{str(e['msg']).removeprefix('Value error, ')}{_fix(e)}")
            for e in exc.errors()
        ]
        raise problems_error(str(path), problems, doc) from None


def _fix(error: Mapping[str, Any]) -> str:
    """The fix for one pydantic error of a links file (it is written by a command, so the fix
    is mostly to re-measure)."""
    if error["type"] == "extra_forbidden":
        return "; remove the key (links.yaml is written by rigforge links)"
    if error["type"] == "missing":
        return "; re-run rigforge links to write a complete file"
    return "; re-run rigforge links (or correct the value)"


def dump_links_file(links: LinksFile) -> str:
    """The YAML text of a links file (keys in schema order)."""
    return yaml.safe_dump(links.model_dump(mode="json"), sort_keys=False)
