"""The fabric on the box: every GPU's host link carries what it negotiated, and no GPU pair
lost the peer bandwidth the saved ``links.yaml`` recorded (issue 11).

Opt-in like the rest of the ``gpu`` checks: it runs ``rigforge links --rig nvml --json``
on the host with the tuner the deploy installed (read only: copies between its own buffers,
no setting changed) and skips where the host has no GPU or no tuner. The saved file is
``host_data/<host>/links.yaml`` beside the inventory (``rigforge links --host NAME``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.verify.conftest import Expected
from tuning.fabric.links_file import LinksFile, load_links_file
from tuning.links import low_host_links, p2p_losses

RIGFORGE = "/opt/rigforge/venv/bin/rigforge"


def _measure(host) -> LinksFile:
    __tracebackhide__ = True
    if not host.file(RIGFORGE).exists:
        pytest.skip(f"no tuner at {RIGFORGE} (deploy with tuner.install: true)")
    out = host.run(f"{RIGFORGE} links --rig nvml --out /tmp/rigforge-links")
    # 0: no GPU flagged; 1: a GPU flagged (the checks below say which); 2: no usable GPU
    if out.rc == 2:
        pytest.skip(f"rigforge links cannot measure here: {out.stderr.strip()[-200:]}")
    assert out.rc in (0, 1), out.stderr
    text = host.file("/tmp/rigforge-links/links.yaml").content_string
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "rigforge-links-measured.yaml"
    path.write_text(text, encoding="utf-8")
    return load_links_file(path)


@pytest.mark.gpu
def test_every_gpu_host_link_carries_its_negotiated_rate(host, expected: Expected) -> None:
    problems = low_host_links(_measure(host))
    assert not problems, "\n".join(problems)


@pytest.mark.gpu
def test_no_gpu_pair_lost_peer_bandwidth(host, expected: Expected, request) -> None:
    inventory = request.config.getoption("--rigforge-inventory", default=None) or os.environ.get(
        "RIGFORGE_INVENTORY"
    )
    saved_path = Path(inventory).parent / "host_data" / expected.name / "links.yaml"
    if not saved_path.is_file():
        pytest.skip(f"no saved {saved_path}: run rigforge links --host {expected.name} once")
    problems = p2p_losses(_measure(host), load_links_file(saved_path))
    assert not problems, "\n".join(problems)
