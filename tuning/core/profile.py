"""The tuning profile: the YAML file a sweep writes and ``rigforge apply`` / the deploy read.

The one typed profile loader (:func:`load_profile`, :func:`parse_profile`): the placement,
the plan command, the serving renderer, the GPU-settings deploy and the inventory validator
all read profiles through it.

Schema (``schema_version: 1``)::

    schema_version: 1
    tool_version: 0.1.0
    created_at: 2025-01-01T00:00:00+00:00      # UTC, ISO 8601
    rig: {name, spec, fingerprint}             # fingerprint = RigSnapshot.fingerprint()
    workload: decode
    policy: efficiency                          # or throughput
    floor: 0.95
    floor_relaxed: false                        # the floor did not fit the power budget:
                                                # caps maximise throughput instead
    seed: 0
    gpus:
      - uuid: GPU-…                             # what the deploy keys on
        name, pci_bus_id
        cap_w: 205                              # the chosen power limit (W)
        stock_cap_w, min_w, max_w, natural_draw_w
        throughput_rel: 0.999                   # heat-soak tokens/s ÷ uncapped tokens/s
        tokens_per_joule: 0.13
        peak_temp_c: 71
        probes: 4
        flagged: false                          # still throttled after every soak round
        curve: [{cap_w, throughput_tps, power_w, tokens_per_joule, temp_c}, …]
    validation: {passed, sim_seconds, throttle_events, peak_temp_c: {uuid: °C}, max_psu_load_ratio}

:func:`load_profile` validates with pydantic and reports every problem with its YAML path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from tuning import __version__
from tuning.core.checks import gpu_id_problem
from tuning.core.limits import MAX_GPU_POWER_W
from tuning.core.rig import GpuInfo, rig_fingerprint
from tuning.core.strict import StrictModel
from tuning.core.yamlsafe import YamlDocument
from tuning.errors import ConfigError, problems_error, read_yaml_config, yaml_path

SCHEMA_VERSION = 1


class _Model(StrictModel):
    """Unknown keys, control characters, booleans as numbers and ``.inf``/``.nan`` refused."""


class CurvePoint(_Model):
    """One probe: at ``cap_w`` the GPU gave ``throughput_tps`` drawing ``power_w``."""

    cap_w: float
    throughput_tps: float = Field(ge=0)
    power_w: float = Field(ge=0)
    tokens_per_joule: float = Field(ge=0)
    temp_c: float | None = None


class ProfileGpu(_Model):
    """One GPU's chosen cap and the curve it was chosen from."""

    uuid: str = Field(pattern=r"^GPU-")
    name: str
    pci_bus_id: str
    cap_w: float = Field(gt=0, le=MAX_GPU_POWER_W)
    stock_cap_w: float = Field(gt=0, le=MAX_GPU_POWER_W)
    min_w: float = Field(gt=0, le=MAX_GPU_POWER_W)
    max_w: float = Field(gt=0, le=MAX_GPU_POWER_W)
    natural_draw_w: float = Field(ge=0)
    throughput_rel: float = Field(ge=0)
    tokens_per_joule: float = Field(ge=0)
    peak_temp_c: float | None = None
    probes: int = Field(ge=0)
    flagged: bool = False
    curve: list[CurvePoint] = Field(default_factory=list)

    @field_validator("uuid")
    @classmethod
    def _uuid_is_an_id(cls, value: str) -> str:
        # It reaches the GPU-settings script and the serving units.
        problem = gpu_id_problem(value, strict=False)
        if problem:
            raise ValueError(problem)
        return value


class ProfileRig(_Model):
    name: str
    spec: str
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{16}$")


class Validation(_Model):
    """The final heat-soak's verdict."""

    passed: bool
    sim_seconds: float = Field(ge=0)
    throttle_events: int = Field(ge=0)
    peak_temp_c: dict[str, float] = Field(default_factory=dict)
    max_psu_load_ratio: float = Field(ge=0)


class Profile(_Model):
    """A tuning profile (see the module docstring)."""

    schema_version: int = SCHEMA_VERSION
    tool_version: str = __version__
    created_at: str
    rig: ProfileRig
    workload: str
    policy: str = Field(pattern=r"^(efficiency|throughput)$")
    floor: float = Field(gt=0, le=1)
    floor_relaxed: bool = False
    seed: int | None = None
    gpus: list[ProfileGpu] = Field(min_length=1)
    validation: Validation

    @model_validator(mode="after")
    def _each_gpu_once(self) -> Profile:
        problem = duplicate_uuid_problem([g.uuid for g in self.gpus])
        if problem:
            raise ValueError(problem)
        return self

    def caps_w(self) -> dict[str, float]:
        """The chosen cap per GPU UUID. Units: W."""
        return {gpu.uuid: gpu.cap_w for gpu in self.gpus}


def duplicate_uuid_problem(uuids: Sequence[object]) -> str | None:
    """``gpus[k].uuid`` repeating an earlier entry (YAML would let the second cap win), or
    ``None``. UUIDs compare case-insensitively, as NVML does."""
    seen: dict[str, int] = {}
    for position, uuid in enumerate(uuids):
        key = str(uuid).lower()
        if key in seen:
            return (
                f"gpus[{position}].uuid: duplicate {uuid}: gpus[{seen[key]}] has it too; a "
                "profile lists each GPU once (re-run rigforge sweep, or delete one entry)"
            )
        seen[key] = position
    return None


def parse_profile(data: Any, source: str = "<profile>", doc: YamlDocument | None = None) -> Profile:
    """Validate a parsed profile document; :class:`ConfigError` lists every problem by path
    (with its line when ``doc``, the parsed file, is given)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise problems_error(
            source,
            [
                (
                    "schema_version",
                    f"expected {SCHEMA_VERSION}, got {version!r}; "
                    "re-run 'rigforge sweep' to write a current profile",
                )
            ],
            doc,
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        problems = [_problem(e) for e in error.errors()]
        raise problems_error(source, problems, doc) from None


def _problem(error: Any) -> tuple[str, str]:
    """``(yaml path, sentence)`` of one pydantic error; a whole-profile check names the entry
    it is about first (``gpus[1].uuid: duplicate …``), and that entry is its path (and line)."""
    path = yaml_path(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    named = re.match(r"^(gpus\[\d+\](?:\.\w+)?): (.+)$", message, re.DOTALL)
    if path == "(top level)" and named:
        return named.group(1), named.group(2)
    return path, message


def load_profile(path: Path | str) -> Profile:
    """Read and validate a profile file (a directory means ``DIR/profile.yaml``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "profile.yaml"
    doc = read_yaml_config(path, "profile")
    return parse_profile(doc.data, str(path), doc)


def profile_mismatch(profile: Profile, gpus: Sequence[GpuInfo]) -> str | None:
    """Why ``profile`` was not tuned on ``gpus`` (a sentence without the fix), or ``None``.

    The one stale-profile check (the GPU-settings deploy, ``rigforge plan --profile`` and the
    inventory validator call it). Stale when a tuned UUID is not among ``gpus``, or one of
    ``gpus`` was never tuned (UUIDs compared case-insensitively; GPUs whose UUID is unknown
    are not compared), or — same UUIDs — the profile's ``rig.fingerprint`` differs from the
    fingerprint of ``gpus`` (a card moved slot, was renamed or resized). The fingerprint is
    compared only when every GPU's UUID, name, bus id and VRAM are known.
    """
    tuned = [gpu.uuid for gpu in profile.gpus]
    present = [gpu.uuid for gpu in gpus if gpu.uuid]
    tuned_lower = {u.lower() for u in tuned}
    present_lower = {u.lower() for u in present}
    missing = [u for u in tuned if u.lower() not in present_lower]
    new = [u for u in present if u.lower() not in tuned_lower]
    if missing or new:
        parts = [f"{', '.join(missing)} missing"] if missing else []
        parts += [f"{', '.join(new)} not tuned"] if new else []
        return f"was tuned on a different set of GPUs: {'; '.join(parts)}"
    known = all(g.uuid and g.name and g.pci_bus_id and g.memory_total_mib for g in gpus)
    if gpus and known:
        actual = rig_fingerprint(gpus)
        if actual != profile.rig.fingerprint:
            return (
                f"was tuned on rig {profile.rig.fingerprint} but the GPUs here are {actual} "
                "(a GPU was swapped, moved slot, renamed or resized)"
            )
    return None
