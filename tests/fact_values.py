"""Typed fact values to and from the JSON the fixtures hold (facts are ``FactBase[T]``).

A fact declares its value type as the parameter of its base (``class X(FactBase[Snapshot])``);
pydantic's ``TypeAdapter`` of that type turns fixture JSON into the frozen dataclass an
operation receives, and the parsed value back into JSON to compare with a fixture. A fact
without a parameter (``FactBase`` alone) passes JSON through unchanged.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

from pydantic import TypeAdapter


@cache
def _adapter(cls: type) -> TypeAdapter[Any] | None:
    for base in getattr(cls, "__orig_bases__", ()):
        args = typing.get_args(base)
        if args:
            return TypeAdapter(args[0])
    return None


def from_json(cls: type, data: Any) -> Any:
    """The value ``cls``'s fact returns, built from fixture JSON (strictly: unknown keys fail)."""
    adapter = _adapter(cls)
    return data if adapter is None else adapter.validate_python(data)


def to_json(cls: type, value: Any) -> Any:
    """``cls``'s value as JSON data (dataclasses as objects, tuples as lists)."""
    adapter = _adapter(cls)
    return value if adapter is None else adapter.dump_python(value, mode="json")
