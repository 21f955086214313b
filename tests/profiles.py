"""Full tuning-profile documents for tests that need a profile file (``schema_version: 1``).

The values other than each GPU's UUID, name, bus id and cap are plausible placeholders: a
sweep's provenance, curve and validation, which the tests using these do not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def profile_document(
    gpus: Sequence[tuple[str, str, str, float]], fingerprint: str = "sha256:0123456789abcdef"
) -> dict[str, Any]:
    """A valid profile for ``(uuid, name, pci_bus_id, cap_w)`` per GPU."""
    return {
        "schema_version": 1,
        "created_at": "2025-01-01T00:00:00+00:00",
        "rig": {"name": "test", "spec": "nvml", "fingerprint": fingerprint},
        "workload": "decode",
        "policy": "efficiency",
        "floor": 0.95,
        "gpus": [
            {
                "uuid": uuid,
                "name": name,
                "pci_bus_id": bus,
                "cap_w": cap_w,
                "stock_cap_w": 350.0,
                "min_w": 100.0,
                "max_w": 350.0,
                "natural_draw_w": 330.0,
                "throughput_rel": 0.98,
                "tokens_per_joule": 0.1,
                "probes": 4,
            }
            for uuid, name, bus, cap_w in gpus
        ],
        "validation": {
            "passed": True,
            "sim_seconds": 1800,
            "throttle_events": 0,
            "max_psu_load_ratio": 0.8,
        },
    }
