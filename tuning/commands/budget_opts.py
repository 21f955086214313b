"""The power-budget options shared by ``rigforge sweep`` and ``rigforge apply``.

NVML knows nothing of PSUs or circuits, so on real GPUs the budget comes from a person:
``--budget FILE`` (see :func:`tuning.budget.load_budget_file`), ``--inventory FILE --host
NAME`` (that host's ``psus``, ``circuits`` and ``gpus[].psu``), or ``/etc/rigforge/budget.yaml``
(what ``deploys/tune.py`` installs). A sweep of real GPUs without any refuses to start unless
``--no-budget`` says so out loud. A simulated rig has its own PSUs; a budget given for it
replaces them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tuning import budget as budget_module
from tuning.budget import RigBudget, load_budget_file, load_inventory_budget
from tuning.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

NO_BUDGET_WARNING = (
    "rigforge: WARNING: --no-budget: sweeping real GPUs with NO PSU or circuit budget. Probes "
    "run in parallel without a power limit and the draw watchdog cannot fire; a tripped "
    "breaker or an overloaded PSU is on you. Give --budget FILE or --inventory FILE --host NAME."
)


def budget_options(function: F) -> F:
    """Add ``--budget``, ``--inventory`` and ``--no-budget`` to a click command."""
    for decorator in reversed(
        [
            click.option(
                "--budget",
                "budget_path",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="power budget YAML: psus, circuits, gpus: {UUID or bus id: PSU}.",
            ),
            click.option(
                "--inventory",
                "inventory_path",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="inventory YAML whose --host entry gives the budget (psus, circuits, "
                "gpus[].psu).",
            ),
            click.option(
                "--no-budget",
                is_flag=True,
                help="run real GPUs without a PSU/circuit budget (unsafe; prints a warning).",
            ),
        ]
    ):
        function = decorator(function)
    return function


def resolve_budget(
    rig_spec: str,
    *,
    budget_path: Path | None,
    inventory_path: Path | None,
    host_name: str | None,
    no_budget: bool,
    required: bool,
    log: Callable[[str], None],
) -> RigBudget | None:
    """The budget the options give, or ``None`` (a simulated rig's own PSUs; ``--no-budget``).

    ``required``: refuse ``--rig nvml`` without a budget (a sweep) unless ``--no-budget``.
    Raises :class:`click.UsageError` for contradictory options and :class:`ConfigError` for
    a missing or invalid budget.
    """
    if budget_path is not None and inventory_path is not None:
        raise click.UsageError("give --budget or --inventory, not both")
    if no_budget and (budget_path is not None or inventory_path is not None):
        raise click.UsageError("--no-budget contradicts --budget/--inventory")
    if inventory_path is not None and host_name is None:
        raise click.UsageError("--inventory needs --host NAME (the host whose budget to use)")
    if budget_path is not None:
        return load_budget_file(budget_path)
    if inventory_path is not None:
        assert host_name is not None
        return load_inventory_budget(inventory_path, host_name)
    if rig_spec != "nvml":
        return None
    installed = budget_module.DEFAULT_BUDGET_PATH
    if not no_budget and installed.is_file():
        log(f"rigforge: power budget from {installed}")
        return load_budget_file(installed)
    if no_budget:
        log(NO_BUDGET_WARNING)
        return None
    if required:
        raise ConfigError(
            "refusing to sweep real GPUs without a power budget: NVML knows nothing of PSUs or "
            "circuits, so parallel probes could overload them. Give --budget FILE (psus, "
            "circuits, gpus) or --inventory FILE --host NAME, or --no-budget to run without one"
        )
    return None
