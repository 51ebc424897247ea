"""The `alexnet` command: one entry point, each stage's commands defined in its own package.

The stage modules import torch, ONNX Runtime or Gradio inside their commands, not at import time,
so `alexnet classify --help` answers at once and serving never loads torch.
"""

from __future__ import annotations

import sys

import typer
import typer.main

# typer 0.29 (pinned) ships its own copy of click; these are the errors click raises for a mistyped command.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from common.errors import UserError
from common.files import disk_full_error
from demo import cli as demo_cli
from export import cli as export_cli
from serving import cli as serving_cli
from training import cli as training_cli

app = typer.Typer(
    name="alexnet",
    help="AlexNet from training to production: train, export, serve with Triton, demo in a browser.\n\n"
    "Example: alexnet quickstart    (train the digits model, export, serve, open http://127.0.0.1:7860/)\n\n"
    "Example: alexnet train --help  (each command has its own help and examples)",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(no_args_is_help=False)(training_cli.train)
app.command()(training_cli.pretrained)
app.command("bench-train")(training_cli.bench_train)
app.command()(training_cli.figures)
app.add_typer(export_cli.app, name="export")
app.command("bench-export")(export_cli.bench_export)
app.command()(serving_cli.serve)
app.command(no_args_is_help=True)(serving_cli.classify)
app.command()(serving_cli.bench)
app.command()(demo_cli.demo)
app.command()(demo_cli.quickstart)
app.command("people-digits")(demo_cli.people_digits)


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


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
