"""`alexnet serve`, `alexnet classify` and `alexnet bench`: thin layers over serving.server, serving.client
and serving.bench. tritonclient, ONNX Runtime and numpy are imported inside the commands (never torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from common.files import write_json
from serving.errors import ServingError

UrlOption = Annotated[
    str | None,
    typer.Option(
        metavar="HOST:PORT",
        help="Triton's address (default 127.0.0.1:8001 for grpc, 127.0.0.1:8000 for http)",
    ),
]
ProtocolOption = Annotated[Literal["grpc", "http"], typer.Option(help="How to talk to Triton")]
ModelOption = Annotated[str, typer.Option(help="Served model name (`alexnet_int8` for the INT8 model)")]


def serve(
    repository: Annotated[
        Path, typer.Option(help="Triton model repository written by `alexnet export onnx`")
    ] = Path("model_repository"),
    host: Annotated[
        str, typer.Option(help="Address to bind (0.0.0.0 to accept other machines)")
    ] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP/REST port")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port (/metrics)")] = 8002,
    int8: Annotated[
        bool,
        typer.Option("--int8", help="Also load <name>_int8 (exported with --int8), served under that name"),
    ] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="Write Triton's log to this file instead of the console")
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds allowed for loading and warming up")] = 300.0,
) -> None:
    """Serve a model repository with a real Triton Inference Server (HTTP, gRPC, metrics) until Ctrl-C.

    Models whose backend this local server lacks (onnxruntime, tensorrt_plan) run their ONNX file with
    ONNX Runtime in Triton's Python backend, with the exported config otherwise unchanged; it prints
    what it serves in place of what, one line per model it changes (docs/architecture.md). Ready only
    once every model is loaded and warmed up; Ctrl-C or SIGTERM shut it down cleanly. A worker process
    that dies, or a model that answers no one, restarts the server (logged with how long it took); an
    overloaded one refuses what it cannot queue (UNAVAILABLE) and keeps serving. New versions exported
    into the repository are loaded without a restart.

    Example: alexnet serve --repository model_repository --http-port 8000 --grpc-port 8001
    """
    from common.signals import stop_signals_interrupt
    from serving.server import TritonServer
    from serving.supervisor import Supervisor

    ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    refuse_unusable_ports(host, ports)
    server = TritonServer(
        repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_file=log_file,
        serve_int8=int8,
        echo_log=log_file is None,
    )
    with stop_signals_interrupt():
        try:
            server.start()
            server.wait_until_ready(timeout=ready_timeout)
            if log_file is not None:  # otherwise they were printed with the log
                for note in server.notes:
                    _say(f"note: {note}")
            _say(
                f"Triton is ready: {', '.join(server.models)}\n"
                f"  HTTP    http://{server.http_url}   (curl http://{server.http_url}/v2/health/ready)\n"
                f"  gRPC    {server.grpc_url}   (alexnet classify IMAGE --url {server.grpc_url})\n"
                f"  metrics {server.metrics_url}\n"
                "Ctrl-C stops it."
            )
            Supervisor(server, log=_say, ready_timeout=ready_timeout).run()
        except KeyboardInterrupt:
            _say("stopping Triton…")
        finally:
            server.stop()
    _say("Triton stopped.")


def _say(line: str) -> None:
    """A line for whoever reads `alexnet serve`'s stderr. If nobody does any more (`alexnet serve | head`
    ended), the server keeps serving: a log line is not worth a dead server."""
    try:
        typer.echo(line, err=True)
    except (OSError, ValueError):
        pass


def refuse_unusable_ports(host: str, ports: dict[str, int]) -> None:
    """Before any slow work: ServingError naming each port that cannot be listened on, and the fix."""
    from common.ports import port_problems

    problems = port_problems(host, ports)
    if problems:
        raise ServingError("; ".join(problems))


START_TRITON = "start it with `alexnet serve --repository model_repository`"


def wait_for_server(
    classifier,
    wait: float,
    say=lambda line: typer.echo(line, err=True),
    how_to_start: str = START_TRITON,
) -> None:
    """Wait up to `wait` seconds for the served model; if it is not ready at once, say first what is being
    waited for and how to start it, so a missing server is never a silent pause."""
    if not classifier.is_ready():
        say(
            f"waiting up to {wait:g} s for Triton at {classifier.url} ({classifier.protocol}) to serve "
            f"{classifier.model} ({how_to_start}, or point --url at yours; --wait sets how long)"
        )
    classifier.wait_until_ready(timeout=wait)


def classify(
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE", help="JPEG, PNG or WebP files, or folders of them", show_default=False
        ),
    ],
    url: UrlOption = None,
    protocol: ProtocolOption = "grpc",
    top_k: Annotated[int, typer.Option(help="How many labels per image")] = 5,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON list instead of a table")
    ] = False,
    model: ModelOption = "alexnet",
    send: Annotated[
        Literal["pixels", "bytes"],
        typer.Option(
            help="pixels: resize here and send the model's input; bytes: send the files to <model>_image"
        ),
    ] = "pixels",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the server to be ready")] = 30.0,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Also classify the images in the folders' subfolders")
    ] = False,
    embed: Annotated[
        Path | None,
        typer.Option(
            help="Also write each image's fc7 features (4096 FP32, from <model>_embedding) to this file: "
            ".npy (one row per image, in the order printed) or .json ([{image, embedding}, ...])",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Classify image files with the served model: the top labels of each, as a table or JSON.

    Many files go in one request (up to the model's max batch size). A folder stands for its JPEG, PNG and
    WebP files, in name order (--recursive: its subfolders' too).

    Example: alexnet classify cat.jpg dog.png --url 127.0.0.1:8001 --top-k 3 --json
    Example: alexnet classify photos/ --recursive --embed features.npy
    """
    from serving.client import SEND_MODES, TritonClassifier, list_image_files

    if send not in SEND_MODES:
        raise ServingError(f"unknown --send {send!r}: use pixels or bytes")
    if top_k < 1:
        raise ServingError(f"--top-k {top_k}: ask for at least 1 label")
    if embed is not None and embed.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise ServingError(f"--embed {embed}: name a .npy or a .json file")
    refuse_pixels_only_model(model, send, embed)
    images = list_image_files(images, recursive=recursive)
    with TritonClassifier(url, protocol=protocol, model=model) as classifier:
        wait_for_server(classifier, wait)
        results = classifier.classify_files(images, top_k=top_k, send=send)
        if embed is not None:
            write_embeddings(embed, images, classifier.embed_files(images, send=send))
    records = [
        {
            "image": str(path),
            "top": [{"label": p.label, "index": p.index, "score": p.score} for p in predictions],
        }
        for path, predictions in zip(images, results, strict=True)
    ]
    typer.echo(json.dumps(records, indent=2) if json_output else format_table(records))
    if embed is not None:
        typer.echo(f"wrote the fc7 features of {len(images)} images to {embed}", err=True)


EMBEDDING_SUFFIXES = (".npy", ".json")


def refuse_pixels_only_model(model: str, send: str, embed: Path | None) -> None:
    """`--model alexnet_int8` (or _trt) takes pixels and gives probabilities only: export writes no
    alexnet_int8_image for --send bytes and no alexnet_int8_embedding for --embed."""
    from triton_repository.layout import ModelNames, base_model, companion_model

    base = base_model(model)
    wanted, there = ModelNames(model), ModelNames(base)
    if send == "bytes" and companion_model(model, "image") is None:
        raise ServingError(
            f"--send bytes with --model {model}: export writes no {wanted.image} (the server decodes files "
            f"only for {base}); leave out --send bytes ({model} gets pixels, resized here as the server "
            f"would), or use --model {base}"
        )
    if embed is not None and companion_model(model, "embedding") is None:
        raise ServingError(
            f"--embed with --model {model}: export writes no {wanted.embedding}; the fc7 features come from "
            f"{there.embedding}: ask for them with --model {base} --embed {embed}"
        )


def write_embeddings(path: Path, images: list[Path], features) -> None:
    """The features as .npy (float32 [N, D], row i for images[i]) or JSON, replacing `path` whole."""
    import io

    import numpy as np

    from common.files import atomic_write  # standard library only

    if path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(features, dtype=np.float32))
        data = buffer.getvalue()
    else:
        pairs = zip(images, features, strict=True)
        data = json.dumps([{"image": str(image), "embedding": row.tolist()} for image, row in pairs]).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(data)


def format_table(records: list[dict]) -> str:
    """A readable table: one block per image, one row per label."""
    width = max([len("IMAGE")] + [len(record["image"]) for record in records])
    label_width = max([len("LABEL")] + [len(p["label"]) for record in records for p in record["top"]])
    lines = [f"{'IMAGE':<{width}}  RANK  {'LABEL':<{label_width}}  SCORE"]
    for record in records:
        for rank, prediction in enumerate(record["top"], start=1):
            image = record["image"] if rank == 1 else ""
            lines.append(
                f"{image:<{width}}  {rank:>4}  {prediction['label']:<{label_width}}  "
                f"{prediction['score']:.4f}"
            )
    return "\n".join(lines)


def bench(
    url: UrlOption = None,
    protocol: ProtocolOption = "grpc",
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrencies to sweep")] = "1,16,64",
    duration: Annotated[float, typer.Option(help="Measured seconds per point (after the warm-up)")] = 10.0,
    warmup: Annotated[float, typer.Option(help="Unmeasured seconds before each point")] = 2.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file")
    ] = None,
    compare_inprocess: Annotated[
        Path | None,
        typer.Option(
            "--compare-inprocess",
            help="Model repository the server runs: also time its ONNX file in-process (batch 1 and 64) "
            "and print the ratios",
        ),
    ] = None,
    model: ModelOption = "alexnet",
    rounds: Annotated[
        int,
        typer.Option(help="Alternate the sweep and the in-process baseline this many times; report medians"),
    ] = 1,
    soak: Annotated[
        int,
        typer.Option(
            help="Instead of the sweep: send this many requests at the highest --concurrency and check that "
            "none fails and the server's memory drifts by at most --max-memory-drift"
        ),
    ] = 0,
    server_pid: Annotated[
        int | None,
        typer.Option(help="The tritonserver pid, for the soak's memory figures (pgrep tritonserver)"),
    ] = None,
    max_memory_drift: Annotated[float, typer.Option(help="Soak: the largest memory growth allowed")] = 0.05,
) -> None:
    """Load the served model with batch-1 pixel requests at each concurrency: images/s and p50/p95/p99.

    Example: alexnet bench --url 127.0.0.1:8001 --concurrency 1,16,64 --duration 10
    --compare-inprocess model_repository --json bench.json

    Soak: alexnet bench --soak 10000 --concurrency 64 --server-pid $(pgrep -n tritonserver)
    """
    from serving.bench import format_report, run_benchmark

    try:
        levels = [int(level) for level in concurrency.split(",") if level.strip()]
    except ValueError:
        raise ServingError(
            f"--concurrency {concurrency!r}: give comma-separated integers like 1,16,64"
        ) from None
    if not levels or min(levels) < 1:
        raise ServingError(f"--concurrency {concurrency!r}: every level must be at least 1")
    if duration <= 0 or rounds < 1:
        raise ServingError("--duration must be positive and --rounds at least 1")
    from serving.client import DEFAULT_URLS

    if soak:
        _soak(
            url or DEFAULT_URLS.get(protocol, ""),
            protocol,
            model,
            soak,
            max(levels),
            server_pid,
            max_memory_drift,
            json_out,
        )
        return
    report = run_benchmark(
        url or DEFAULT_URLS.get(protocol, ""),
        protocol=protocol,
        model=model,
        concurrencies=levels,
        duration=duration,
        warmup=warmup,
        compare_repository=compare_inprocess,
        rounds=rounds,
        progress=lambda line: typer.echo(line, err=True),
    )
    typer.echo(format_report(report))
    _write_json(json_out, report.to_json())


def _write_json(path: Path | None, data: dict) -> None:
    """A benchmark's figures as JSON, where --json asked for them."""
    if path is None:
        return
    write_json(path, data)
    typer.echo(f"wrote {path}", err=True)


def _soak(
    url: str,
    protocol: str,
    model: str,
    requests: int,
    concurrency: int,
    server_pid: int | None,
    max_memory_drift: float,
    json_out: Path | None,
) -> None:
    """`alexnet bench --soak N`: the figures, then an error if a request failed or memory grew too much."""
    from serving.bench import format_soak, run_soak

    report = run_soak(
        url,
        protocol=protocol,
        model=model,
        requests=requests,
        concurrency=concurrency,
        server_pid=server_pid,
        progress=lambda line: typer.echo(line, err=True),
    )
    typer.echo(format_soak(report))
    _write_json(json_out, report.to_json())
    if report.failures:
        raise ServingError(f"soak failed: {report.failures} of {requests} requests failed")
    drift = report.memory_drift
    if drift is not None and drift > max_memory_drift:
        raise ServingError(f"soak failed: server memory grew {drift:.1%} (allowed {max_memory_drift:.0%})")
