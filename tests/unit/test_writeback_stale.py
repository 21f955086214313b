"""A stale profile is refused, not applied: ``deploys.gpu_settings.profile_matches_gpus``
compares the profile with the host's GPUs (the ``NvidiaGpus`` fact, else the inventory's list)
and fails the host with a sentence naming the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.context import ctx_host

from deploys.gpu_settings import profile_matches_gpus, stale_profile_problem
from tests.fact_values import from_json
from tests.profiles import profile_document
from tuning.core.rig import GpuInfo, rig_fingerprint
from tuning.errors import ConfigError

A = "GPU-c1000000-0000-4000-8000-000000000001"
B = "GPU-c1000000-0000-4000-8000-000000000002"
C = "GPU-c1000000-0000-4000-8000-00000000000c"
NAME = "NVIDIA GeForce RTX 3090"


def _gpu(uuid: str, bus: str) -> dict[str, Any]:
    return {"uuid": uuid, "name": NAME, "pci_bus_id": bus, "memory_total_mib": 24576}


GPUS = [_gpu(A, "00000000:41:00.0"), _gpu(B, "00000000:42:00.0")]


class FakeHost:
    """``get_fact`` answers from a dict; ``noop`` lines are recorded."""

    name = "ws1"

    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts
        self.noops: list[str] = []

    def get_fact(self, cls: type, *args: Any, **kwargs: Any) -> Any:
        return from_json(cls, json.loads(json.dumps(self.facts[cls.__name__])))

    def noop(self, description: str) -> None:
        self.noops.append(description)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A profile tuned on GPUS (both UUIDs, with their fingerprint)."""
    fingerprint = rig_fingerprint(
        GpuInfo(index=i, **{k: g[k] for k in ("uuid", "name", "pci_bus_id", "memory_total_mib")})
        for i, g in enumerate(GPUS)
    )
    path = tmp_path / "profile.yaml"
    caps = {A: 240.0, B: 250.0}
    rows = [(g["uuid"], g["name"], g["pci_bus_id"], caps[g["uuid"]]) for g in GPUS]
    path.write_text(yaml.safe_dump(profile_document(rows, fingerprint)))
    return path


def _nvidia(gpus: list[dict[str, Any]], status: str = "ok") -> dict[str, Any]:
    """The NvidiaGpus fact listing ``gpus`` in nvidia-smi's order (index 0, 1, …)."""
    listed = [{"index": i, **gpu} for i, gpu in enumerate(gpus)]
    return {"NvidiaGpus": {"status": status, "message": None, "gpus": listed}}


def _run(profile: Path, facts: dict[str, Any], inventory: list[dict[str, Any]]) -> tuple:
    fake = FakeHost(facts)
    with ctx_host.use(fake):
        commands = [
            str(c) for c in profile_matches_gpus._inner(str(profile), inventory_gpus=inventory)
        ]
    return commands, fake.noops


def test_matching_gpus_are_a_noop(profile: Path) -> None:
    commands, noops = _run(profile, _nvidia(GPUS), GPUS)
    assert commands == []
    assert "matches this host's GPUs (nvidia-smi on the host)" in noops[0]


def test_swapped_gpu_fails_the_host_naming_the_missing_uuid(profile: Path) -> None:
    swapped = [GPUS[0], _gpu(C, "00000000:42:00.0")]
    # The inventory still lists the old card: the host's facts win over it.
    commands, _ = _run(profile, _nvidia(swapped), GPUS)
    assert len(commands) == 1
    assert commands[0].endswith("exit 1")
    assert f"was tuned on a different set of GPUs: {B} missing" in commands[0]
    assert "re-run rigforge sweep --host ws1" in commands[0]


def test_a_new_gpu_the_profile_never_tuned_is_refused(profile: Path) -> None:
    commands, _ = _run(profile, _nvidia([*GPUS, _gpu(C, "00000000:43:00.0")]), GPUS)
    assert f"{C} not tuned" in commands[0]


def test_moved_gpu_changes_the_fingerprint_and_is_refused(profile: Path) -> None:
    moved = [_gpu(A, "00000000:41:00.0"), _gpu(B, "00000000:61:00.0")]
    commands, _ = _run(profile, _nvidia(moved), GPUS)
    assert "but the GPUs here are sha256:" in commands[0]


@pytest.mark.parametrize("status", ["no_nvidia_smi", "driver_not_loaded"])
def test_without_gpu_facts_the_inventory_list_is_compared(profile: Path, status: str) -> None:
    commands, noops = _run(profile, _nvidia([], status), GPUS)
    assert commands == []
    assert f"the inventory's gpus (nvidia-smi: {status})" in noops[0]


def test_without_gpu_facts_a_stale_inventory_list_is_refused(profile: Path) -> None:
    commands, _ = _run(profile, _nvidia([], "no_nvidia_smi"), [GPUS[0]])
    assert f"{B} missing" in commands[0]


def test_a_file_that_is_not_a_profile_is_refused_not_compared(tmp_path: Path) -> None:
    """A ``gpus:`` list without the profile's provenance (``rig.fingerprint`` …) is not a
    profile: the one loader refuses it naming the missing key, before anything is compared."""
    path = tmp_path / "hand.yaml"
    # A missing top-level key is reported at its parent, the document: line 1.
    path.write_text(yaml.safe_dump({"schema_version": 1, "gpus": [{"uuid": A, "cap_w": 240}]}))
    with pytest.raises(ConfigError, match=r"hand.yaml:1: rig: Field required"):
        stale_profile_problem(path, [_gpu(A, "00000000:01:00.0")], "ws1")
