"""Running a Typer app the way every command of this project runs: a user error (common.errors.UserError)
or a mistyped command line prints one `error: ...` line that says how to fix it and exits with status 2.
Shared by `alexnet` (alexnet_cli.py) and `python -m training` (what torchrun starts)."""

from __future__ import annotations

import sys

import typer
import typer.main

# typer 0.29 (pinned) ships its own copy of click; these are the errors click raises for a mistyped command.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from common.errors import UserError
from common.files import disk_full_error


def click_command(typer_app: typer.Typer):
    """The click command tree typer builds for `typer_app`, with every switch (a flag that takes no value,
    like --resume or --json) shown in --help without a value (typer 0.29 shows `--resume <bool>`)."""
    command = typer.main.get_command(typer_app)
    _show_switches_without_values(command)
    return command


def _show_switches_without_values(command) -> None:
    for param in command.get_params(typer.Context(command)):  # --help's own option included
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        _show_switches_without_values(subcommand)


def usage_error_line(error: UsageError, args: list[str]) -> str:
    """A mistyped command line as one line that says how to fix it."""
    message = error.format_message().rstrip(".")
    path = error.ctx.command_path if error.ctx is not None else "alexnet"
    switch = _switch_given_a_value(error, args)
    if switch:
        message += f": {switch} is a switch and takes no value (give it alone for on, leave it out for off)"
    return f"{path}: {message}; see `{path} --help`"


def _switch_given_a_value(error: UsageError, args: list[str]) -> str | None:
    """The switch before an unexpected extra argument (`--int8 true`), if that is the mistake."""
    if error.ctx is None or "unexpected extra argument" not in error.format_message():
        return None
    switches = {
        opt
        for param in error.ctx.command.get_params(error.ctx)
        if getattr(param, "is_flag", False)
        for opt in (*param.opts, *param.secondary_opts)
    }
    for before, word in zip(args, args[1:], strict=False):
        if before in switches and word in error.format_message():
            return before
    return None


def run(typer_app: typer.Typer) -> None:
    """Run a Typer app; a user error, or a mistyped command line, prints one line that says what to do, and
    exits with status 2."""
    args = sys.argv[1:]
    try:
        status = click_command(typer_app).main(args=args, standalone_mode=False)
    except NoArgsIsHelpError:  # `alexnet` or `alexnet classify` alone: the help was printed
        sys.exit(2)
    except UsageError as error:
        print(f"error: {usage_error_line(error, args)}", file=sys.stderr)
        sys.exit(2)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (OSError, RuntimeError) as error:
        full = disk_full_error(error)
        if full is None:
            raise
        where = f" writing {full.filename}" if full.filename else ""
        print(
            f"error: no space left on the disk{where}: free some space and run the command again",
            file=sys.stderr,
        )
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if isinstance(status, int) and status != 0:  # --help answers 0; Ctrl-C inside a command 130
        sys.exit(status)
