"""Click options shared by several subcommands (not a subcommand itself)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from tuning.backends import DEFAULT_RIG
from tuning.budget import Policy

F = TypeVar("F", bound=Callable[..., object])


def policy_options(function: F) -> F:
    """``--policy efficiency|throughput`` and ``--floor`` (sweep, loop)."""
    function = click.option(
        "--floor",
        type=click.FloatRange(0.0, 1.0, min_open=True),
        default=0.95,
        show_default=True,
        help="efficiency: keep throughput ≥ floor × uncapped.",
    )(function)
    return click.option(
        "--policy",
        type=click.Choice([p.value for p in Policy]),
        default="efficiency",
        show_default=True,
        help="efficiency: most tokens per joule above the floor; throughput: most tokens/s "
        "inside the power budget and heat.",
    )(function)


#: ``--heat-soak-s``: how long the chosen caps run under full load before they are accepted.
heat_soak_option = click.option(
    "--heat-soak-s",
    type=click.FloatRange(10.0),
    default=1800.0,
    show_default=True,
    help="Longest heat-soak of the chosen caps, in rig-clock seconds (any throttle event "
    "rejects them); it ends early once every GPU's steady temperature is confidently "
    "predicted from its transient, unless --full-soak.",
)

#: ``--full-soak``: sit out the whole ``--heat-soak-s`` instead of stopping on a prediction.
full_soak_option = click.option(
    "--full-soak",
    is_flag=True,
    help="Soak the whole --heat-soak-s instead of stopping once the steady temperatures are "
    "predicted from the transient.",
)


def rig_option(help_text: str, *, default: str | None = DEFAULT_RIG) -> Callable[[F], F]:
    """``--rig SPEC`` (``rig_spec``): which rig a command reads or drives (``nvml``, ``sim:NAME``
    or a rig YAML file; ``help_text`` says which of them the command accepts). ``default``
    ``None``: the command decides (inspect: the default rig; restore: every journal)."""
    return click.option(
        "--rig",
        "rig_spec",
        default=default,
        show_default=default is not None,
        metavar="SPEC",
        help=help_text,
    )


def json_option(help_text: str | None) -> Callable[[F], F]:
    """``--json`` (the ``as_json`` flag): print one JSON document instead of the tables."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def host_option(help_text: str) -> Callable[[F], F]:
    """``--host NAME`` (``host_name``): the inventory host a command reads or writes back."""
    return click.option("--host", "host_name", default=None, help=help_text)


def out_option(
    help_text: str,
    *,
    dest: str | None = None,
    file: bool = False,
    default: Path | None = None,
) -> Callable[[F], F]:
    """``--out PATH``: a folder (``file=False``) or a file the command writes; ``dest`` names
    the parameter when it is not ``out``; a ``default`` is shown in ``--help``."""
    path_type = (
        click.Path(dir_okay=False, path_type=Path)
        if file
        else click.Path(file_okay=False, path_type=Path)
    )
    names = ("--out", dest) if dest else ("--out",)
    return click.option(
        *names,
        type=path_type,
        default=default,
        show_default=True if default is not None else None,
        help=help_text,
    )


#: ``--inventory-dir`` (default ``inventory``): where ``--host`` writes a host's data
#: (``host_data/HOST/``) for the commands that write one file back (plan, links).
inventory_dir_option = click.option(
    "--inventory-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("inventory"),
    show_default=True,
    help="The inventory's folder (--host writes under its host_data/).",
)
