"""The base of every model that reads a user file: unknown keys, control characters in any
string, booleans where a number is meant (YAML's ``true`` is not 1 W) and non-finite numbers
(``.inf``, ``.nan``) are refused for every field, so a new field is safe by construction.

Imports only pydantic and :mod:`tuning.core.checks`.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from tuning.core.checks import text_problem

__all__ = ["StrictModel", "control_problem"]


def control_problem(value: object) -> str | None:
    """Why a string (or a list of strings) holds a control character, or ``None``."""
    if isinstance(value, str):
        return text_problem(value, quotes=False)
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = control_problem(item) if isinstance(item, str) else None
            if problem:
                return f"item {index} {problem}"
    return None


def _numeric(annotation: Any) -> bool:
    """Is this field a number (``int``, ``float``, optionally ``None``)?"""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    if origin is Annotated:
        return _numeric(typing.get_args(annotation)[0])
    return False


class StrictModel(BaseModel):
    """Base for user-file models: unknown keys, control characters, booleans as numbers and
    non-finite numbers are errors; values are immutable."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_surprises(cls, value: Any, info: ValidationInfo) -> Any:
        # Lists: their item types (GpuId, EngineArg, DebianPackage…) refuse per item, with the
        # item's index in the path.
        problem = control_problem(value) if isinstance(value, str) else None
        if problem:
            raise ValueError(problem)
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _numeric(field.annotation):
                raise ValueError(
                    f"{value!r} is a boolean, not a number (YAML reads true/false/yes/no/on/off "
                    "as booleans); write the number"
                )
        return value
