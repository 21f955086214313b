"""The bandwidth model: fair sharing, TLP arithmetic, peer vs staged, write collapse.

Expected values are worked by hand in each docstring from the figures in
``tuning/fabric/pcie.yaml`` (Gen4 lane 16 GT/s × 128/130; 24 B per write TLP, 20 B per
completion; link efficiency 0.966).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tuning.backends import open_rig
from tuning.backends.sim import SimRig
from tuning.errors import ConfigError
from tuning.fabric.graph import Fabric
from tuning.fabric.model import (
    P2pMode,
    Transfer,
    expected_h2d_gbps,
    latency_us,
    max_min_fair,
    p2p_mode,
    solve,
)
from tuning.links import fabric_of_rig

GEN4_X16_RAW = 16 * 16 * (128 / 130) / 8  # 31.51 GB/s
WRITE_GEN4 = GEN4_X16_RAW * 256 / 280 * 0.966  # 27.83
READ_GEN4_128 = GEN4_X16_RAW * 128 / 148 * 0.966  # 26.33


def test_progressive_filling_by_hand() -> None:
    """Flows A and B share link L (10); B also crosses M (3). B is held at 3 by M; A takes
    the rest of L: 7. A third flow C on M alone halves M: B = C = 1.5, A = 8.5."""
    caps = {"L": 10.0, "M": 3.0}
    assert max_min_fair(caps, [{"L": 1.0}, {"L": 1.0, "M": 1.0}], [float("inf")] * 2) == (
        pytest.approx([7.0, 3.0])
    )
    rates = max_min_fair(caps, [{"L": 1.0}, {"L": 1.0, "M": 1.0}, {"M": 1.0}], [float("inf")] * 3)
    assert rates == pytest.approx([8.5, 1.5, 1.5])


def test_a_ceiling_stops_one_flow_and_the_others_take_the_rest() -> None:
    caps = {"L": 10.0}
    assert max_min_fair(caps, [{"L": 1.0}, {"L": 1.0}], [2.0, float("inf")]) == pytest.approx(
        [2.0, 8.0]
    )


def small_rig(**fabric_edits: Any) -> Fabric:
    data: dict[str, Any] = {
        "name": "model-test",
        "gpus": [
            {"preset": "rtx_a6000", "slot": i + 1, "bus_id": f"00000000:0{i + 1}:00.0"}
            for i in range(4)
        ],
        "fabric": {
            "sockets": [
                {
                    "name": "cpu0",
                    "pcie_lanes": 64,
                    "memory_bw_gbps": 200,
                    "root_ports": [
                        {"name": "P0", "gen": 4, "width": 16, "root_complex": "rc0"},
                        {"name": "P1", "gen": 4, "width": 16, "root_complex": "rc1"},
                        {"name": "P2", "gen": 4, "width": 16, "root_complex": "rc2"},
                        {"name": "P3", "gen": 4, "width": 8, "root_complex": "rc3"},
                    ],
                    "write_collapse": {"per_flow_gbps": 6.5},
                }
            ],
            "switches": [
                {"name": "sw0", "uplink": "P0", "gen": 4, "width": 16, "downstream_ports": 2}
            ],
            "chipset": {"name": "pch", "uplink": "P3", "gen": 4, "width": 8, "lanes": 16},
            "gpus": [
                {"gpu": 0, "at": "sw0"},
                {"gpu": 1, "at": "sw0"},
                {"gpu": 2, "at": "P1"},
                {"gpu": 3, "at": "pch"},
            ],
        },
    }
    data["fabric"].update(copy.deepcopy(fabric_edits))
    return fabric_of_rig(SimRig.from_dict(data, source="x"))


def test_gen4_x16_rates_follow_the_tlp_arithmetic() -> None:
    """H2D is the GPU's DMA reads: 31.51 × 128/148 × 0.966 = 26.33 GB/s with 128 B
    completions; D2H posted writes: 31.51 × 256/280 × 0.966 = 27.83 GB/s."""
    fabric = small_rig()
    assert solve(fabric, [Transfer("h2d", gpu=2)])[0] == pytest.approx(READ_GEN4_128, rel=1e-3)
    assert solve(fabric, [Transfer("d2h", gpu=2)])[0] == pytest.approx(WRITE_GEN4, rel=1e-3)
    assert expected_h2d_gbps(fabric, 2) == pytest.approx(READ_GEN4_128, rel=1e-3)


def test_two_gpus_behind_one_switch_share_its_uplink_each_direction_apart() -> None:
    """Both switch GPUs copying H2D at once split sw0's x16 uplink: 26.33 / 2 = 13.17 each;
    one H2D and one D2H use opposite directions and each runs at its full rate."""
    fabric = small_rig()
    both = solve(fabric, [Transfer("h2d", gpu=0), Transfer("h2d", gpu=1)])
    assert both == pytest.approx([READ_GEN4_128 / 2] * 2, rel=1e-3)
    opposite = solve(fabric, [Transfer("h2d", gpu=0), Transfer("d2h", gpu=1)])
    assert opposite == pytest.approx([READ_GEN4_128, WRITE_GEN4], rel=1e-3)


def test_host_memory_binds_when_it_is_the_narrowest() -> None:
    """Three GPUs pull from a 50 GB/s host memory: GPU 3 is held by its x8 chipset uplink at
    26.33 / 2 = 13.17; the other two share what is left, (50 - 13.17) / 2 = 18.42 each."""
    fabric = small_rig(sockets=[{
        "name": "cpu0", "pcie_lanes": 64, "memory_bw_gbps": 50,
        "root_ports": [
            {"name": "P0", "gen": 4, "width": 16}, {"name": "P1", "gen": 4, "width": 16},
            {"name": "P2", "gen": 4, "width": 16}, {"name": "P3", "gen": 4, "width": 8},
        ],
    }])  # fmt: skip
    rates = solve(fabric, [Transfer("h2d", gpu=g) for g in (0, 2, 3)])
    held = READ_GEN4_128 / 2
    assert rates == pytest.approx([(50 - held) / 2, (50 - held) / 2, held], rel=1e-3)


def test_peer_inside_a_switch_never_touches_its_uplink() -> None:
    """0→1 stays in sw0, so a concurrent H2D into GPU 0 over the uplink keeps its full rate."""
    fabric = small_rig()
    assert p2p_mode(fabric, 0, 1) is P2pMode.PEER
    rates = solve(fabric, [Transfer("p2p", src=0, dst=1), Transfer("h2d", gpu=0)])
    assert rates[1] == pytest.approx(READ_GEN4_128, rel=1e-3)


def test_behind_the_chipset_peer_traffic_is_staged() -> None:
    """GPU 3 sits behind the chipset: its copies to GPU 2 go through host memory as two
    copies, D2H at x8 write rate (13.92) then H2D at x16 read rate (26.33):
    1 / (1/13.92 + 1/26.33) = 9.10 GB/s."""
    fabric = small_rig()
    assert p2p_mode(fabric, 3, 2) is P2pMode.STAGED
    d2h_x8 = WRITE_GEN4 / 2
    assert solve(fabric, [Transfer("p2p", src=3, dst=2)])[0] == pytest.approx(
        1 / (1 / d2h_x8 + 1 / READ_GEN4_128), rel=1e-3
    )
    assert latency_us(fabric, 3, 2) > 10 * latency_us(fabric, 0, 2)


def test_write_collapse_needs_two_destination_roots_and_spares_reads() -> None:
    """collapse-report.md's rule: writes leaving one switch for two root complexes at once
    collapse to the per-flow rate; to one root, or as reads, they do not."""
    fabric = small_rig(
        chipset=None,
        gpus=[{"gpu": 0, "at": "sw0"}, {"gpu": 1, "at": "sw0"},
              {"gpu": 2, "at": "P1"}, {"gpu": 3, "at": "P2"}],
    )  # fmt: skip
    two_roots = solve(fabric, [Transfer("p2p", src=0, dst=2), Transfer("p2p", src=1, dst=3)])
    assert two_roots == pytest.approx([6.5, 6.5])
    one_root = solve(fabric, [Transfer("p2p", src=0, dst=2), Transfer("p2p", src=1, dst=2)])
    assert one_root == pytest.approx([WRITE_GEN4 / 2] * 2, rel=1e-3)
    reads = solve(
        fabric,
        [Transfer("p2p", src=2, dst=0, op="read"), Transfer("p2p", src=3, dst=1, op="read")],
    )
    assert min(reads) > 10


def test_reference_rig_peer_only_between_professional_cards() -> None:
    """sim:reference: the A6000s (1, 4) and the 6000 Ada (3) may peer through the root
    complex; every pair with a GeForce card (0, 2, 5) is staged."""
    fabric = fabric_of_rig(open_rig("sim:reference"))
    assert p2p_mode(fabric, 1, 4) is P2pMode.PEER
    assert p2p_mode(fabric, 1, 3) is P2pMode.PEER
    assert p2p_mode(fabric, 0, 1) is P2pMode.STAGED
    assert p2p_mode(fabric, 2, 5) is P2pMode.STAGED


def test_nvlink_bridge_carries_the_pair_and_spares_pcie() -> None:
    """bench/rigs/2x3090-nvlink.yaml: a bridge of 4 links × 14.0625 GB/s each way, payload
    share 0.9 (pcie.yaml): 50.6 GB/s, while an H2D into GPU 0 keeps its PCIe rate."""
    rig = SimRig.from_file(Path(__file__).parents[2] / "bench" / "rigs" / "2x3090-nvlink.yaml")
    fabric = fabric_of_rig(rig)
    assert p2p_mode(fabric, 0, 1) is P2pMode.NVLINK
    rates = solve(fabric, [Transfer("p2p", src=0, dst=1), Transfer("h2d", gpu=0)])
    assert rates == pytest.approx([4 * 14.0625 * 0.9, READ_GEN4_128], rel=1e-3)
    assert latency_us(fabric, 0, 1) < 1.0


def test_a_slot_narrower_than_the_gpu_reports_is_refused() -> None:
    """A Gen4 x16 card the rig file does not say trained lower cannot sit in an x8 port."""
    with pytest.raises(ConfigError, match=r"fabric.gpus\[2\].at: GPU 2 reports gen 4 x16"):
        small_rig(
            sockets=[{"name": "cpu0", "pcie_lanes": 64, "memory_bw_gbps": 200,
                      "root_ports": [{"name": "P0", "gen": 4, "width": 16},
                                     {"name": "P1", "gen": 4, "width": 8},
                                     {"name": "P3", "gen": 4, "width": 8}]}],
            switches=[{"name": "sw0", "uplink": "P0", "gen": 4, "width": 16,
                       "downstream_ports": 2}],
        )  # fmt: skip
