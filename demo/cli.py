"""`alexnet demo` and `alexnet quickstart`. Gradio and the serving client are imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from demo.errors import DemoError


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
    from serving.errors import ServingError

    if protocol not in ("grpc", "http"):
        raise DemoError(f"unknown protocol {protocol!r}: use --protocol grpc or --protocol http")
    problems = port_problems(host, {"--port": port})  # before anything slow: Gradio's import, the wait
    if problems:
        raise DemoError("; ".join(problems))
    client = TritonClassifier(url, protocol=protocol, model=model)
    try:
        wait_for_server(client, wait)
        from demo.app import build_demo, launch_demo  # Gradio: seconds to import
        from demo.quickstart import serve_forever

        page = build_demo(client, repository)
    except ServingError as error:
        quickstart = "or run `alexnet quickstart`, which trains, exports, serves and opens the page"
        raise DemoError(f"{error}; {quickstart}") from None
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
    model_dir: Annotated[
        Path,
        typer.Option(
            help="The model folder (model.json + model.safetensors); the digits model is trained there if it "
            "has no model.json"
        ),
    ] = Path("runs/digits"),
    repository: Annotated[
        Path, typer.Option(help="The Triton model repository (exported here unless it serves these weights)")
    ] = Path("model_repository"),
    port: Annotated[int, typer.Option(help="Port of the demo page (0: any free port)")] = 7860,
    http_port: Annotated[int, typer.Option(help="Triton's HTTP port (0: any free port)")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Triton's gRPC port (0: any free port)")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Triton's metrics port (0: any free port)")] = 8002,
    host: Annotated[str, typer.Option(help="Address the page listens on")] = "127.0.0.1",
) -> None:
    """Train the digits model if needed, export it, serve it with Triton, self-check, open the demo page.

    Ctrl-C stops the page and Triton. A taken port falls back to a free one, said before anything else.
    --model-dir and --repository point it at another model (one from `alexnet pretrained`, say: export it
    first if it needs --calibration-data); the self-check then compares HTTP and gRPC on images of its kind.

    Example: alexnet quickstart          (what `make run` does; then open http://127.0.0.1:7860/)

    Example: alexnet quickstart --check  (the same once, for scripts and CI)
    """
    from demo.quickstart import QuickstartSettings, run_quickstart

    settings = QuickstartSettings(
        model_dir=model_dir,
        repository=repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        page_port=port,
    )
    run_quickstart(settings, check=check, say=typer.echo)
