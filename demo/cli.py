"""`alexnet demo` and `alexnet quickstart`. Gradio and the serving client are imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from demo.errors import DemoError

START_TRITON = (
    "start it with `alexnet serve --repository model_repository`, or run `alexnet quickstart`, which trains, "
    "exports, serves and opens the page"
)


def demo(
    url: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Triton's address (default 127.0.0.1:8001 for grpc, 127.0.0.1:8000 for http)",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port the page listens on")] = 7860,
    protocol: Annotated[Literal["grpc", "http"], typer.Option(help="How the page talks to Triton")] = "grpc",
    host: Annotated[
        str, typer.Option(help="Address the page listens on (0.0.0.0 to share it on the network)")
    ] = "127.0.0.1",
    model: Annotated[str, typer.Option(help="Served model name (as exported with --name)")] = "alexnet",
    wait: Annotated[float, typer.Option(help="Seconds to wait for Triton to become ready")] = 30.0,
    repository: Annotated[
        Path | None,
        typer.Option(
            help="The model repository Triton serves: the page shows the first-layer kernels export drew"
        ),
    ] = None,
) -> None:
    """Open the Gradio page on a running Triton: upload, paste or draw an image, see the top-5 labels.

    Example: alexnet serve --repository model_repository &
    alexnet demo --url 127.0.0.1:8001 --port 7860 --repository model_repository
    """
    from common.ports import port_problems
    from serving.cli import wait_for_server
    from serving.client import TritonClassifier

    if protocol not in ("grpc", "http"):
        raise DemoError(f"unknown protocol {protocol!r}: use --protocol grpc or --protocol http")
    problems = port_problems(host, {"--port": port})  # before anything slow: Gradio's import, the wait
    if problems:
        raise DemoError("; ".join(problems))
    client = TritonClassifier(url, protocol=protocol, model=model)
    # A ServingError (nothing answers, no such model) reaches the user as serving wrote it.
    wait_for_server(client, wait, how_to_start=START_TRITON)
    from demo.app import build_demo, launch_demo  # Gradio: seconds to import
    from demo.quickstart import serve_forever

    page = build_demo(client, repository)
    page_url = launch_demo(page, host=host, port=port, quiet=True)
    typer.echo(f"Demo page: {page_url} (asking Triton at {client.url} over {protocol})")
    try:
        serve_forever(typer.echo)
    finally:
        page.close(verbose=False)


def quickstart(
    check: Annotated[
        bool, typer.Option("--check", help="Run once without keeping the page open; exit 0 on success (CI)")
    ] = False,
    data: Annotated[
        str, typer.Option(help="What the model learns: digits (embedded) or fashion-mnist (Debian's package)")
    ] = "digits",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where --data fashion-mnist's IDX files are  \\[default: /usr/share/datasets/fashion-mnist]",
            show_default=False,
        ),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            help="The model folder (trained here if it has no model.json)  "
            "\\[default: runs/digits; runs/fashion-mnist with --data fashion-mnist]",
            show_default=False,
        ),
    ] = None,
    repository: Annotated[
        Path | None,
        typer.Option(
            help="The Triton model repository (exported here unless it serves these weights)  "
            "\\[default: model_repository; model_repository_fashion_mnist with --data fashion-mnist]",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the demo page (0: any free port)")] = 7860,
    http_port: Annotated[int, typer.Option(help="Triton's HTTP port (0: any free port)")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Triton's gRPC port (0: any free port)")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Triton's metrics port (0: any free port)")] = 8002,
    host: Annotated[str, typer.Option(help="Address the page listens on")] = "127.0.0.1",
) -> None:
    """Train the digits model (or Fashion-MNIST's) if needed, export it, serve it with Triton, self-check,
    open the demo page.

    Ctrl-C stops the page and Triton. A taken port falls back to a free one, said before anything else.
    --model-dir and --repository point it at another model (one from `alexnet pretrained`, say); the
    self-check then compares HTTP and gRPC on images of its kind.

    Example: alexnet quickstart          (what `make run` does; then open http://127.0.0.1:7860/)

    Example: alexnet quickstart --check  (the same once, for scripts and CI)

    Example: alexnet quickstart --data fashion-mnist  (after `apt-get install dataset-fashion-mnist`)
    """
    from demo.quickstart import QuickstartSettings, quickstart_data, run_quickstart

    defaults = quickstart_data(data)
    settings = QuickstartSettings(
        model_dir=model_dir or defaults.model_dir,
        repository=repository or defaults.repository,
        data=data,
        data_dir=data_dir,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        page_port=port,
    )
    run_quickstart(settings, check=check, say=typer.echo)


def people_digits(
    url: Annotated[str | None, typer.Option(help="Triton's gRPC HOST:PORT, serving the digits model")] = None,
    per_digit: Annotated[int, typer.Option(help="Pictures of each digit in each style")] = 10,
    split: Annotated[
        str, typer.Option(help="test (held out from training and tuning) or tune (what was tuned on)")
    ] = "test",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file")
    ] = None,
) -> None:
    """How the served digits model reads digits as people bring them: pens, a marker, chalk, photos, typed
    digits and the sketchpad (training/people_digits.py), sent as files to the image endpoint and through
    the demo page's own functions; top-1 per style by either path.

    Example: alexnet people-digits --url 127.0.0.1:8001 --json people_digits.json
    """

    from demo.people_check import as_json, run

    if split not in ("test", "tune"):
        raise DemoError(f"--split {split}: use test or tune")
    if per_digit < 1:
        raise DemoError(f"--per-digit {per_digit}: use 1 or more")
    results, table = run(url, split=split, per_digit=per_digit)
    typer.echo(table)
    if json_out is not None:
        from common.files import write_json

        write_json(json_out, as_json(results))
        typer.echo(f"wrote {json_out}")
