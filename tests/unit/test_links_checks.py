"""The checks the verify suite runs on a measured links.yaml, on hand-made files."""

from __future__ import annotations

from typing import Any

from tuning.fabric.links_file import LinksFile
from tuning.links import low_host_links, p2p_losses


def links_file(h2d_gbps: float, pairs: list[tuple[str, float]]) -> LinksFile:
    data: dict[str, Any] = {
        "rig": {"name": "box", "fingerprint": "sha256:0"},
        "size_mib": 256,
        "gpus": [
            {"uuid": "GPU-a", "index": 0, "gen": 4, "width": 16, "h2d_gbps": h2d_gbps,
             "d2h_gbps": 27, "h2d_concurrent_gbps": 26, "d2h_concurrent_gbps": 27,
             "expected_gbps": 26.3},
        ],
        "p2p": [{"src": "GPU-a", "dst": "GPU-b", "gbps": g, "mode": m} for m, g in pairs],
    }  # fmt: skip
    return LinksFile.model_validate(data)


def test_a_host_link_under_80_percent_of_its_expectation_is_named() -> None:
    """26.3 GB/s expected on gen 4 x16: 21.0 (80 %) passes, 20.0 (76 %) does not."""
    assert low_host_links(links_file(21.1, [])) == []
    (problem,) = low_host_links(links_file(20.0, []))
    assert problem.startswith("GPU-a: H2D 20.0 GB/s is below 80%")


def test_p2p_lost_when_peer_turns_staged_or_loses_a_fifth() -> None:
    saved = links_file(26, [("peer", 27.8)])
    assert p2p_losses(links_file(26, [("peer", 27.0)]), saved) == []
    (staged,) = p2p_losses(links_file(26, [("staged", 13.3)]), saved)
    assert "was peer, now staged" in staged
    (slower,) = p2p_losses(links_file(26, [("peer", 20.0)]), saved)
    assert "20.0 GB/s, was 27.8 (72%)" in slower
