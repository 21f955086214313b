"""Fact fixtures are data: ``tests/facts/<FactClass>/<scenario>.json``.

Each file holds the command's captured output and the fact value it must parse to::

    {
      "args": {"root": "/"},                      # optional: the fact's arguments
      "command_output": "…",                      # or "output_file": "query-gpu/….txt"
                                                  #   (a real capture, under REAL_FIXTURES)
      "requires_command_missing": true,           # optional: the binary is absent → default()
      "command_contains": ["--format=csv,nounits"], # optional: pieces of the command line
      "fact": {…}
    }

A new case is a new file; no code changes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import FactBase

import deploys.facts
from tests.conftest import REAL_FIXTURES
from tests.fact_values import to_json, value_type

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*/*.json"))


def all_facts() -> dict[str, type[FactBase]]:
    """Every FactBase subclass defined in ``deploys/facts/``, by class name."""
    found: dict[str, type[FactBase]] = {}
    for info in pkgutil.iter_modules(deploys.facts.__path__):
        module = importlib.import_module(f"deploys.facts.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, FactBase) and obj.__module__ == module.__name__:
                found[name] = obj
    return found


FACTS = all_facts()


def _output(case: dict[str, Any]) -> list[str]:
    if "output_file" in case:
        path = REAL_FIXTURES / case["output_file"]
        if not path.is_file():
            pytest.skip(f"real capture {path} not present")
        return path.read_text(encoding="utf-8").splitlines()
    return str(case["command_output"]).splitlines()


#: Modules whose every fact must have fixtures here (every module of ``deploys/facts/``).
FIXTURE_MODULES = ("nvidia", "pcie", "kernel", "irq", "host", "container", "cpu")


def test_every_fact_has_fixtures() -> None:
    covered = {path.parent.name for path in CASES}
    required = {
        name for name, cls in FACTS.items() if cls.__module__.rsplit(".", 1)[-1] in FIXTURE_MODULES
    }
    assert len(required) >= 7
    assert required <= covered, f"facts without fixtures: {sorted(required - covered)}"


def test_every_fact_declares_its_value_type() -> None:
    """Facts are ``FactBase[T]`` (frozen dataclasses or plain values), never bare ``FactBase``."""
    untyped = sorted(name for name, cls in FACTS.items() if value_type(cls) is None)
    assert not untyped, f"facts without a value type: {untyped}"


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_fact_fixture(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    fact = FACTS[path.parent.name]()
    args = case.get("args", {})
    command = str(fact.command(**args))
    for piece in case.get("command_contains", []):
        assert piece in command
    if case.get("requires_command_missing"):
        assert fact.requires_command(**args)
        value = fact.default()
    else:
        value = fact.process(_output(case))
    # Compare as JSON so tuples/lists and int keys cannot hide a difference.
    assert json.loads(json.dumps(to_json(type(fact), value))) == case["fact"]
