"""Click options shared by several subcommands (not a subcommand itself)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

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
