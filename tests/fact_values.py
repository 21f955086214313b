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


def value_type(cls: type) -> Any:
    """``T`` of ``class X(FactBase[T])``; ``None`` for a fact that declares none."""
    for base in getattr(cls, "__orig_bases__", ()):
        args = typing.get_args(base)
        if args:
            return args[0]
    return None


@cache
def _adapter(cls: type) -> TypeAdapter[Any] | None:
    kind = value_type(cls)
    return None if kind is None else TypeAdapter(kind)


def _unknown_keys(given: Any, known: Any, where: str = "") -> list[str]:
    """Keys of ``given`` (fixture JSON) that ``known`` (the value dumped back) lacks."""
    if isinstance(given, dict) and isinstance(known, dict):
        missing = [f"{where}.{key}" for key in given if key not in known]
        return missing + [
            found
            for key, value in given.items()
            if key in known
            for found in _unknown_keys(value, known[key], f"{where}.{key}")
        ]
    if isinstance(given, list) and isinstance(known, list):
        return [
            found
            for i, (a, b) in enumerate(zip(given, known, strict=False))
            for found in _unknown_keys(a, b, f"{where}[{i}]")
        ]
    return []


def from_json(cls: type, data: Any) -> Any:
    """The value ``cls``'s fact returns, built from fixture JSON.

    Missing fields take their defaults; a key the value type does not have (a typo in a
    fixture, which would otherwise be silently dropped) raises ``ValueError``.
    """
    adapter = _adapter(cls)
    if adapter is None:
        return data
    value = adapter.validate_python(data)
    unknown = _unknown_keys(data, adapter.dump_python(value, mode="json"))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return value


def to_json(cls: type, value: Any) -> Any:
    """``cls``'s value as JSON data (dataclasses as objects, tuples as lists)."""
    adapter = _adapter(cls)
    return value if adapter is None else adapter.dump_python(value, mode="json")
