"""Shared test fixtures: where the real captures live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real nvidia-smi / lspci / NUMA captures, kept outside the repo (never copied into it).
REAL_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "real"


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """The folder of real captures; tests that need it skip when it is absent."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real captures not found at {REAL_FIXTURES}")
    return REAL_FIXTURES
