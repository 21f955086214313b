"""The wheel carries every data file the on-box code reads.

``deploys/tuner.py`` installs rigforge on a host from a wheel of this checkout, and setuptools
puts into a wheel only the data files ``[tool.setuptools.package-data]`` names: a YAML file
the code opens beside itself (``Path(__file__).with_name(...)``) but the table leaves out
works in the editable checkout and fails on the host (the target tier's GPU-settings unit,
``rigforge apply``, failed so when ``tuning/workloads/presets.yaml`` was missing).
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_every_yaml_file_under_tuning_is_package_data() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    table: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    missing = []
    for path in sorted((REPO_ROOT / "tuning").rglob("*.yaml")):
        rel = path.relative_to(REPO_ROOT)
        package = ".".join(rel.parent.parts)
        # A package's globs match paths relative to its folder (rigs/*.yaml in tuning.backends).
        owners = [
            (pkg, glob)
            for pkg, globs in table.items()
            for glob in globs
            if package.startswith(pkg)
            and fnmatch.fnmatch(str(Path(*rel.parts[len(pkg.split(".")) :])), glob)
        ]
        if not owners:
            missing.append(str(rel))
    assert missing == [], f"not in pyproject.toml's package-data (absent from the wheel): {missing}"
