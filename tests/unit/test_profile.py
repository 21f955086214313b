"""The profile YAML: round trip, and every error with its YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuning.core.profile import load_profile, parse_profile
from tuning.errors import ConfigError
from tuning.profile import dump_profile

DOC = {
    "schema_version": 1,
    "tool_version": "0.1.0",
    "created_at": "2025-01-01T00:00:00+00:00",
    "rig": {"name": "r", "spec": "sim:reference", "fingerprint": "sha256:0123456789abcdef"},
    "workload": "decode",
    "policy": "efficiency",
    "floor": 0.95,
    "seed": 0,
    "gpus": [
        {
            "uuid": "GPU-1",
            "name": "NVIDIA GeForce RTX 3090",
            "pci_bus_id": "00000000:01:00.0",
            "cap_w": 240.0,
            "stock_cap_w": 350.0,
            "min_w": 100.0,
            "max_w": 350.0,
            "natural_draw_w": 320.0,
            "throughput_rel": 0.99,
            "tokens_per_joule": 0.13,
            "peak_temp_c": 66.0,
            "probes": 5,
            "curve": [
                {
                    "cap_w": 240,
                    "throughput_tps": 32,
                    "power_w": 239,
                    "tokens_per_joule": 0.13,
                    "temp_c": 60,
                }
            ],
        }
    ],
    "validation": {
        "passed": True,
        "sim_seconds": 1800,
        "throttle_events": 0,
        "peak_temp_c": {"GPU-1": 66.0},
        "max_psu_load_ratio": 0.9,
    },
}


def test_round_trip(tmp_path: Path) -> None:
    profile = parse_profile(DOC)
    dump_profile(profile, tmp_path / "profile.yaml")
    again = load_profile(tmp_path)
    assert again == profile
    assert again.caps_w() == {"GPU-1": 240.0}


def test_errors_name_their_yaml_path() -> None:
    bad = yaml.safe_load(yaml.safe_dump(DOC))
    bad["gpus"][0]["cap_w"] = -5
    bad["gpus"][0]["uuid"] = "1"
    bad["policy"] = "fastest"
    with pytest.raises(ConfigError) as error:
        parse_profile(bad, "p.yaml")
    text = str(error.value)
    assert "p.yaml: gpus[0].cap_w" in text
    assert "p.yaml: gpus[0].uuid" in text
    assert "p.yaml: policy" in text


def test_wrong_schema_version_is_refused() -> None:
    with pytest.raises(ConfigError, match="schema_version"):
        parse_profile({**DOC, "schema_version": 2})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(tmp_path / "nope.yaml")
