"""``rigforge``: inspect, sweep, plan, apply and restore — the on-box command line."""

from __future__ import annotations

import importlib
import sys

import click

from tuning import __version__
from tuning.errors import RigforgeError

#: subcommand name -> module under tuning.commands exposing ``command``
SUBCOMMANDS: dict[str, str] = {
    "inspect": "inspect",
    "sweep": "sweep",
    "apply": "apply",
    "restore": "restore",
    "plan": "plan",
    "loop": "loop",
    "links": "links",
    "exporter": "exporter",
}


#: Commands that journal and recover on their own (a sweep may resume from its journal), and
#: the read-only exporter, which must never change a GPU (it runs unprivileged anyway).
_SELF_RECOVERING = frozenset({"sweep", "apply", "restore", "exporter"})


class LazyGroup(click.Group):
    """Import a subcommand's module only when it runs (keeps ``rigforge --help`` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        # Before any subcommand runs (but not for --help): a run killed with -9 or by a power
        # loss left its journal behind; put those GPUs back first.
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if args and args[0] not in _SELF_RECOVERING and not {"--help", "-h"} & set(args[1:]):
            from tuning.apply.journal import recover_stale_journals

            recover_stale_journals(lambda message: click.echo(message, err=True))
        return super().invoke(ctx)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        module_name = SUBCOMMANDS.get(name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(f"tuning.commands.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"tuning.commands.{module_name}":
                return None  # not built yet
            raise
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rigforge")
def cli() -> None:
    """Tune and inspect a multi-GPU workstation that serves local LLMs.

    Without a GPU, every command runs against the simulated reference rig
    (--rig sim:reference): six GPUs, two PSUs on two 120 V circuits, an open-air rack.
    Settings left changed by an interrupted run (kill -9, power loss) are restored first.
    """


def main() -> None:
    """Console entry point: turns every :class:`RigforgeError` into one line and exit 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except RigforgeError as error:
        click.echo(f"rigforge: error: {error}", err=True)
        sys.exit(2)
    except SystemExit:
        raise


if __name__ == "__main__":
    main()
