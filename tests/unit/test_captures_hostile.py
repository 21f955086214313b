"""Captures as people really paste them: a grep-filtered ``lspci -vv`` whose device lines carry
a label, and CPU lists too large to expand.

The lspci text is ``lspci -vv`` of two RTX 3090s (the header and link lines have the shape of
``tests/fixtures/real/lspci/rtx3090-x870e-01-00.0-gen1-x8-downgraded-grep.txt``) passed through
``sed 's/^/Card: /'`` for the device lines, as a collection script does. Expected by hand: two
GPUs, 01:00.0 at x16 and 21:00.0 downgraded to gen 1 x8, each named as nvidia-smi names it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning.backends.sim_config import parse_cpu_list as rig_cpu_list
from tuning.captures.folder import load_captures
from tuning.captures.values import parse_cpu_list

PREFIXED = """\
Card: 01:00.0 VGA compatible controller: NVIDIA Corporation GA102 [GeForce RTX 3090] (rev a1)
\t\tLnkCap:\tPort #0, Speed 16GT/s, Width x16, ASPM L0s L1, Exit Latency L0s <512ns, L1 <4us
\t\tLnkSta:\tSpeed 16GT/s, Width x16
Card: 21:00.0 VGA compatible controller: NVIDIA Corporation GA102 [GeForce RTX 3090] (rev a1)
\t\tLnkCap:\tPort #0, Speed 16GT/s, Width x16, ASPM L0s L1, Exit Latency L0s <512ns, L1 <4us
\t\tLnkSta:\tSpeed 2.5GT/s (downgraded), Width x8 (downgraded)
"""


def test_prefixed_lspci_device_lines_give_one_gpu_each(tmp_path: Path) -> None:
    (tmp_path / "lspci.txt").write_text(PREFIXED, encoding="utf-8")
    gpus = load_captures(tmp_path).snapshot.gpus
    assert [(g.pci_bus_id, g.name) for g in gpus] == [
        ("0000:01:00.0", "NVIDIA GeForce RTX 3090"),
        ("0000:21:00.0", "NVIDIA GeForce RTX 3090"),
    ]
    assert (gpus[1].pcie.gen_current, gpus[1].pcie.width_current) == (1, 8)


def test_huge_cpu_lists_are_refused_without_expanding() -> None:
    """0-2000000000 would be 2·10⁹ ints (16 GB as a tuple): refused before expanding."""
    assert parse_cpu_list("0-2000000000") is None
    assert parse_cpu_list("0-3,8") == (0, 1, 2, 3, 8)
    with pytest.raises(ValueError, match="outside 0–8191"):
        rig_cpu_list("0-2000000000")


def test_physically_impossible_readings_become_unknown_with_a_note(tmp_path: Path) -> None:
    """1e20 MiB of VRAM, −100 W and −273 °C cannot come from a GPU: unknown, and said so."""
    (tmp_path / "q.csv").write_text(
        "index, name, pci.bus_id, uuid, memory.total [MiB], power.limit [W], temperature.gpu\n"
        "0, NVIDIA GeForce RTX 3090, 00000000:01:00.0, GPU-30900000-0000-4000-8000-000000000001"
        ", 100000000000000000000 MiB, -100.00 W, -273\n",
        encoding="utf-8",
    )
    captured = load_captures(tmp_path)
    (gpu,) = captured.snapshot.gpus
    assert (gpu.memory_total_mib, gpu.power_limit_w, gpu.temp_c) == (None, None, None)
    notes = "\n".join(captured.warnings)
    for field in ("memory_total_mib", "power_limit_w", "temp_c"):
        assert f"{field} " in notes
    assert "-273 °C is outside" in notes
