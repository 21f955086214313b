"""The target tier's stand-in ``nvidia-smi`` behaves like the real one where rigforge looks.

Default tier (plain ``sh`` and ``awk``): its CSV goes through the parser the deploy's facts use
(checked against real captures in ``tests/fixtures/real/query-gpu``), and its failures use
nvidia-smi's exit codes (``nvidia-smi(1)``, RETURN VALUE: 2 invalid argument, 6 not found,
9 driver not loaded) and the sentences :mod:`deploys.facts.nvidia` recognises.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploys.facts.nvidia import DRIVER_NOT_LOADED
from tests.target import gpu_standin, util
from tuning.captures import parse_query_gpu

GPU_1 = "GPU-c1000000-0000-4000-8000-000000000001"


@pytest.fixture
def smi(tmp_path: Path):
    """Run the stand-in over the CI inventory's two GPUs, its state and device in tmp_path."""
    state = tmp_path / "gpus"
    device = tmp_path / "nvidiactl"
    device.touch()
    gpus = util.standin_gpus(util.CI_YAML, "ci-target")
    state.write_text("".join(g.line(i) + "\n" for i, g in enumerate(gpus)))
    script = tmp_path / "nvidia-smi"
    text = gpu_standin._script("nvidia-smi").replace(gpu_standin.STATE, str(state))
    script.write_text(text.replace("/dev/nvidiactl", str(device)))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(script), *args], capture_output=True, text=True, check=False
        )

    run.device = device  # type: ignore[attr-defined]
    return run


def test_query_gpu_parses_like_a_real_capture(smi) -> None:
    fields = (
        "index,uuid,name,pci.bus_id,memory.total,power.limit,"
        "power.default_limit,power.min_limit,power.max_limit"
    )
    out = smi(f"--query-gpu={fields}", "--format=csv,nounits")
    assert out.returncode == 0, out.stdout
    records = parse_query_gpu(out.stdout)
    assert [r.uuid for r in records] == [GPU_1, "GPU-c1000000-0000-4000-8000-000000000002"]
    assert records[0].pci_bus_id == "00000000:41:00.0"
    assert records[0].memory_total_mib == 24576
    # inventory/examples/ci.yaml: min_w 100, max_w 350; the default limit is the maximum.
    assert (records[0].power_min_w, records[0].power_max_w, records[0].power_limit_w) == (
        100.0,
        350.0,
        350.0,
    )


def test_a_set_limit_is_read_back(smi) -> None:
    out = smi("-i", GPU_1, "-pl", "280")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        "Power limit for GPU 00000000:41:00.0 was set to 280.00 W from 350.00 W.",
        "All done.",
    ]
    got = smi("-i", "0000:41:00.0", "--query-gpu=power.limit", "--format=csv,noheader,nounits")
    assert got.stdout.strip() == "280.00"


def test_failures_use_nvidia_smis_exit_codes_and_words(smi) -> None:
    out_of_range = smi("-i", "0", "-pl", "400")
    assert out_of_range.returncode == 2
    assert "is not a valid power limit which should be between 100.00 W and 350.00 W" in (
        out_of_range.stdout
    )
    missing = smi("-i", "GPU-00000000-0000-0000-0000-000000000000", "-L")
    assert (missing.returncode, missing.stdout.strip()) == (6, "No devices were found")
    assert smi("--query-gpu=no.such.field", "--format=csv").returncode == 2
    smi.device.unlink()
    unloaded = smi("-L")
    assert unloaded.returncode == 9
    assert DRIVER_NOT_LOADED in unloaded.stdout
