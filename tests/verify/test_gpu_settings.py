"""Power caps: the boot-time unit holds the inventory's (or the profile's) cap per GPU."""

from __future__ import annotations

import re

import pytest

from tests.verify import expect, read
from tests.verify.conftest import Expected


def test_gpu_settings_unit_holds_the_caps_per_uuid(host, expected: Expected) -> None:
    caps = expect.caps_w(expected.config)
    if not caps:
        pytest.skip("no caps in the inventory or profile")
    path = f"{expect.UNIT_DIR}/{expect.GPU_SETTINGS_UNIT}"
    unit = host.file(path).content_string
    assert re.search(r"^After=.*nvidia-persistenced\.service", unit, re.M)
    assert re.search(r"^Type=oneshot$", unit, re.M)
    match = re.search(r'^Environment="RIGFORGE_CAPS_W=([^"]*)"', unit, re.M)
    assert match, f"{path} does not carry RIGFORGE_CAPS_W"
    found = dict(pair.split("=", 1) for pair in match.group(1).split())
    assert {k: float(v) for k, v in found.items()} == caps
    assert read.unit_enabled(host, expect.GPU_SETTINGS_UNIT)


@pytest.mark.gpu
def test_gpu_power_limits_equal_the_caps(host, expected: Expected) -> None:
    rows = {r[0]: float(r[1]) for r in read.smi(host, "power.limit")}
    for key, cap_w in expect.caps_w(expected.config).items():
        if key.startswith("GPU-"):
            # nvidia-smi prints the enforced limit to 0.01 W; the driver rounds to its step.
            assert rows.get(key) == pytest.approx(cap_w, abs=1), key
