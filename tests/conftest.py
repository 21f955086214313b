"""Shared test fixtures: where the real captures live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real nvidia-smi / lspci / NUMA captures: the project's own copy (SOURCES.md says where each
#: came from), so a clone with nothing beside it runs every default-tier test. Never edit a capture.
REAL_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "real"


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """The folder of real captures (in the repository; a missing folder is a broken checkout)."""
    assert REAL_FIXTURES.is_dir(), f"real captures missing at {REAL_FIXTURES}"
    return REAL_FIXTURES
