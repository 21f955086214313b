"""Pydantic field types for strings that end up inside systemd units (shared by the inventory
schema and the models file). The checks themselves live in :mod:`tuning.serving_checks`."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from tuning.core.checks import gpu_id_problem, secret_arg_problem, text_problem


def _unit_text(value: str) -> str:
    # Copied into a systemd unit: a newline would inject directives, a quote break quoting.
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _gpu_id(value: str) -> str:
    problem = gpu_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _engine_arg(value: str) -> str:
    problem = text_problem(value) or secret_arg_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: Text copied into a unit (model names, weights): no control characters, quotes or backslashes.
UnitText = Annotated[str, AfterValidator(_unit_text)]
#: A GPU UUID or PCI bus id.
GpuId = Annotated[str, AfterValidator(_gpu_id)]
#: One engine command-line argument: unit-safe text that is not a secret.
EngineArg = Annotated[str, AfterValidator(_engine_arg)]
