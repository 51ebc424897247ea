"""The `alexnet` command: one entry point, each stage's commands defined in its own package.

The stage modules import torch, ONNX Runtime or Gradio inside their commands, not at import time,
so `alexnet classify --help` answers at once and serving never loads torch.
"""

from __future__ import annotations

import typer

from common.cli import run
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


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
