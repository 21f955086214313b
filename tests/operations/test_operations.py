"""Operation fixtures are data: ``tests/operations/<module>.<operation>/<scenario>.json``.

    {
      "args": {"uuid": "GPU-…", "power_limit_w": 280},
      "facts": {"NvidiaGpus": {…}},        # fact class name → the value get_fact returns
                                           #   (as JSON; a typed fact's dataclass is built
                                           #   from it, see tests/fact_values.py)
      "commands": ["nvidia-smi -i GPU-… -pl 280"],
      "command_contains": [["curl", "--dearmor"]],  # or this: pieces of each command, for
                                                    #   long generated scripts
      "noop": "power limit of GPU-… is 280 W",     # optional: a no-op line must contain this
      "exception": {"name": "OperationValueError", "message": "outside its range"}  # or this
    }

The operation runs against a fake host (pyinfra's own test style: ``get_fact`` answers from
the fixture, ``noop`` is recorded). A new case is a new file; no code changes.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from pyinfra.context import ctx_host

from tests.fact_values import from_json

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*/*.json"))


class FakeHost:
    """Answers ``get_fact`` from a fixture and records ``noop`` lines and fact arguments."""

    name = "fake-host"

    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts
        self.noops: list[str] = []
        self.fact_calls: list[tuple[str, dict[str, Any]]] = []

    def get_fact(self, cls: type, *args: Any, **kwargs: Any) -> Any:
        self.fact_calls.append((cls.__name__, kwargs))
        assert cls.__name__ in self.facts, f"fixture lacks fact {cls.__name__}"
        return from_json(cls, json.loads(json.dumps(self.facts[cls.__name__])))

    def noop(self, description: str) -> None:
        self.noops.append(description)


def _operation(folder: str) -> Any:
    module_name, _, op_name = folder.rpartition(".")
    module = importlib.import_module(f"deploys.operations.{module_name}")
    return getattr(module, op_name)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_operation_fixture(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    op = _operation(path.parent.name)
    fake = FakeHost(case.get("facts", {}))
    with ctx_host.use(fake):
        if "exception" in case:
            with pytest.raises(Exception) as caught:  # noqa: PT011 - the fixture names the type
                list(op._inner(**case.get("args", {})))
            assert type(caught.value).__name__ == case["exception"]["name"]
            assert case["exception"]["message"] in str(caught.value)
            return
        commands = [str(c) for c in op._inner(**case.get("args", {}))]
    if "command_contains" in case:
        assert len(commands) == len(case["command_contains"]), commands
        for command, pieces in zip(commands, case["command_contains"], strict=True):
            missing = [piece for piece in pieces if piece not in command]
            assert not missing, f"{missing} not in {command!r}"
    else:
        assert commands == case.get("commands", [])
    if "noop" in case:
        assert any(case["noop"] in line for line in fake.noops), fake.noops
    elif not commands:
        pytest.fail(f"no commands and no expected no-op; noops were {fake.noops}")
    if "root" in case.get("args", {}):
        assert all(kw.get("root") == case["args"]["root"] for _, kw in fake.fact_calls)
