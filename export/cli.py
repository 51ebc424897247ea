"""`alexnet export onnx|tensorrt` and `alexnet bench-export`: thin layers over export.pipeline,
export.tensorrt_build and export.bench. torch, onnx and onnxruntime are imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

app = typer.Typer(
    name="export",
    help="Export a trained model directory to ONNX / TensorRT inside a Triton model repository.\n\n"
    "Example: alexnet export onnx --model runs/digits --repository model_repository --device cpu\n\n"
    "Example: alexnet export onnx --help  (every option, and what the repository holds afterwards)",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ModelOption = Annotated[
    Path,
    typer.Option("--model", help="Model directory (model.safetensors + model.json) from `alexnet train`."),
]
RepositoryOption = Annotated[
    Path, typer.Option("--repository", help="Triton model repository to write into.")
]
NameOption = Annotated[
    str, typer.Option("--name", help="Model name; the other models are <name>_int8, _image, ...")
]
VersionOption = Annotated[
    int | None, typer.Option("--version", help="Version folder to write (default: one above the highest).")
]
Fp16Option = Annotated[bool, typer.Option("--fp16", help="Let TensorRT run in FP16 (GPU only).")]


@app.command("onnx")
def onnx(
    model: ModelOption = Path("runs/digits"),
    repository: RepositoryOption = Path("model_repository"),
    name: NameOption = "alexnet",
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Largest batch Triton forms.")] = 64,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8", help="Also write <name>_int8, static INT8 (refused below 99% top-1 agreement)."
        ),
    ] = False,
    int8_min_agreement: Annotated[
        float | None,
        typer.Option(
            "--int8-min-agreement",
            envvar="ALEXNET_INT8_MIN_AGREEMENT",
            min=0.0,
            help="The INT8 gate: least top-1 agreement with FP32 on the real images, as a fraction "
            "(default 0.99; above 1 refuses every model, a way to rehearse a refusal).",
        ),
    ] = None,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            "--calibration-data",
            help="Folder of the model's kind of images (JPEG/PNG/WebP) for the parity check and INT8 "
            "calibration. Default: the validation split of the data set model.json names, where it is on "
            "this machine; else the parity check uses crops of scikit-learn's sample photos, and --int8 "
            "needs this folder.",
        ),
    ] = None,
    device: Annotated[
        Literal["gpu", "cpu"],
        typer.Option("--device", help="Where Triton runs the model: gpu (production) or cpu (no GPU here)."),
    ] = "gpu",
    fp16: Fp16Option = False,
    version: VersionOption = None,
    parity_tolerance: Annotated[
        float,
        typer.Option("--parity-tolerance", help="Largest |probability difference| ONNX Runtime vs PyTorch."),
    ] = 1e-4,
    queue_delay_us: Annotated[
        int,
        typer.Option(
            "--queue-delay-us",
            help="How long Triton holds a request for others to batch with (default 0: Triton's "
            "recommended start; raise it only where `alexnet bench` shows a gain).",
        ),
    ] = 0,
    embedding: Annotated[
        bool,
        typer.Option(
            "--embedding/--no-embedding",
            help="Also write <name>_embedding (pixels -> the 4096 fc7 features, parity-checked like <name>) "
            "and <name>_embedding_image (image bytes -> features).",
        ),
    ] = True,
) -> None:
    """Export to ONNX, check it against PyTorch, and write the Triton models into the repository.

    The models: <name> (pixels in), <name>_image (image files in, decoded by <name>_preprocess),
    <name>_embedding and <name>_embedding_image (the fc7 features; --no-embedding skips them) and, with
    --int8, <name>_int8. The repository is only changed if every check passes.

    Example: alexnet export onnx --model runs/digits --repository model_repository --device cpu --int8
    """
    from export.pipeline import export_repository

    result = export_repository(
        model,
        repository,
        name=name,
        max_batch_size=max_batch_size,
        int8=int8,
        int8_min_agreement=int8_min_agreement,
        calibration_data=calibration_data,
        device=device,
        fp16=fp16,
        version=version,
        tolerance=parity_tolerance,
        queue_delay_us=queue_delay_us,
        embedding=embedding,
    )
    typer.echo(f"wrote version {result.version} of {', '.join(result.models)} into {result.repository}")


@app.command("tensorrt")
def tensorrt(
    model: ModelOption = Path("runs/digits"),
    repository: RepositoryOption = Path("model_repository"),
    name: NameOption = "alexnet",
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            "--max-batch-size", help="Optimization profile maximum (default: REPO/<name>'s, else 64)."
        ),
    ] = None,
    fp16: Fp16Option = False,
    version: VersionOption = None,
    calibration_data: Annotated[
        Path | None, typer.Option("--calibration-data", help="Folder of images for the parity check.")
    ] = None,
) -> None:
    """Build a TensorRT engine from the ONNX export and write it as the model <name>_trt.

    Needs an NVIDIA GPU and TensorRT (.venv/bin/pip install -e '.\\[tensorrt]'); a plan runs only on the
    TensorRT version and GPU family that built it, so build it where it will be served.

    Example: alexnet export tensorrt --model runs/digits --repository model_repository --fp16
    """
    from export.tensorrt_build import export_tensorrt

    result = export_tensorrt(
        model,
        repository,
        name=name,
        max_batch_size=max_batch_size,
        fp16=fp16,
        version=version,
        calibration_data=calibration_data,
    )
    typer.echo(f"wrote version {result.version} of {result.model} into {result.repository}")


def bench_export(
    model: ModelOption = Path("runs/digits"),
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")] = "1,64",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="CPU threads for every engine (default: the usable cores)."),
    ] = None,
    seconds: Annotated[
        float, typer.Option("--seconds", help="Measuring time per engine, batch size and round.")
    ] = 1.0,
    rounds: Annotated[int, typer.Option("--rounds", help="Interleaved rounds; the median is reported.")] = 3,
    calibration_data: Annotated[
        Path | None, typer.Option("--calibration-data", help="Folder of images for INT8 calibration.")
    ] = None,
    fold: Annotated[
        bool,
        typer.Option(
            "--fold/--no-fold", help="Export with the average pool folded into fc6, as `export` does."
        ),
    ] = True,
) -> None:
    """Images/s of PyTorch eager, ONNX Runtime FP32 and ONNX Runtime INT8 on this machine's CPU.

    The three run side by side in interleaved rounds; it prints the medians and the ratios ONNX Runtime
    FP32 / eager and INT8 / FP32.

    Example: alexnet bench-export --model runs/digits --batch-sizes 1,64 --json artifacts/bench_export.json
    """
    from export.bench import run_bench_export

    run_bench_export(
        model,
        batch_sizes=_parse_batch_sizes(batch_sizes),
        json_out=json_out,
        threads=threads,
        seconds=seconds,
        rounds=rounds,
        calibration_data=calibration_data,
        fold=fold,
    )


def _parse_batch_sizes(text: str) -> list[int]:
    from export.errors import ExportError

    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ExportError(f"--batch-sizes {text!r}: give comma-separated integers, e.g. 1,64") from error
    if not sizes or min(sizes) < 1:
        raise ExportError(f"--batch-sizes {text!r}: give batch sizes of 1 or more, e.g. 1,64")
    return sizes
