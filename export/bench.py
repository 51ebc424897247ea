"""`alexnet bench-export`: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8, images/s, side by side.

All three run the same computation (uint8 pixels in, probabilities out, preprocessing included) on the
same batches with the same number of CPU threads. Measurements are interleaved in rounds (eager, FP32,
INT8, eager, ...) and the median round is reported, so a neighbour's load spike slows every engine
rather than one: on a shared machine the ratios are more trustworthy than the absolute figures.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.timing import timed_loop
from export.onnx_export import export_onnx, read_metadata
from export.quantize import quantize_int8
from triton_repository.layout import INPUT_NAME, ONNX_FILE

TARGET_RATIO = 1.5
ENGINES = ("pytorch_eager", "onnxruntime_fp32", "onnxruntime_int8")


def images_per_second(run: Callable[[], object], batch_size: int, seconds: float) -> float:
    """Repeat `run` for about `seconds` (at least 3 times) after one warm-up call."""
    return timed_loop(run, seconds).per_second(batch_size)


def run_bench_export(
    model_dir: Path,
    *,
    batch_sizes: list[int],
    json_out: Path | None = None,
    threads: int | None = None,
    seconds: float = 1.0,
    rounds: int = 3,
    calibration_data: Path | None = None,
    fold: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure, print a table, optionally write JSON; returns the figures."""
    import torch

    from common.machine import cpu_isa, cpu_name, usable_cpu_count, versions
    from common.onnx_session import create_session
    from export.images import calibration_images
    from export.onnx_export import PixelsToProbabilities
    from export.pipeline import load_checked_model

    threads = threads or usable_cpu_count()
    torch.set_num_threads(threads)
    network, card = load_checked_model(model_dir)
    images, _ = calibration_images(card, calibration_data)
    wrapper = PixelsToProbabilities(network, card).eval()
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-export-") as scratch:
        fp32_path = export_onnx(network, card, Path(scratch) / ONNX_FILE, fold=fold)
        folded = read_metadata(fp32_path)["average_pool_folded_into_fc6"] == "yes"
        int8_path = Path(scratch) / "model_int8.onnx"
        quantize_int8(fp32_path, int8_path, images)
        sessions = {
            "onnxruntime_fp32": create_session(fp32_path, device="cpu", threads=threads),
            "onnxruntime_int8": create_session(int8_path, device="cpu", threads=threads),
        }
        results = []
        for batch_size in batch_sizes:
            batch = _batch_of(images, batch_size)
            tensor = torch.from_numpy(batch)

            def eager(tensor=tensor) -> object:
                with torch.inference_mode():
                    return wrapper(tensor)

            runners: dict[str, Callable[[], object]] = {"pytorch_eager": eager}
            for engine, session in sessions.items():
                runners[engine] = lambda session=session, batch=batch: session.run(None, {INPUT_NAME: batch})
            rounds_measured: dict[str, list[float]] = {engine: [] for engine in ENGINES}
            for _ in range(rounds):
                for engine in ENGINES:
                    rounds_measured[engine].append(images_per_second(runners[engine], batch_size, seconds))
            speeds = {engine: statistics.median(values) for engine, values in rounds_measured.items()}
            results.append(
                {
                    "batch_size": batch_size,
                    "images_per_s": speeds,
                    "rounds": rounds_measured,
                    "ratio_fp32_vs_eager": speeds["onnxruntime_fp32"] / speeds["pytorch_eager"],
                    "ratio_int8_vs_fp32": speeds["onnxruntime_int8"] / speeds["onnxruntime_fp32"],
                }
            )
    report = {
        "model": str(model_dir),
        "architecture": card.architecture,
        "image_size": card.image_size,
        "num_classes": card.num_classes,
        "average_pool_folded_into_fc6": folded,
        "device": "cpu",
        "threads": threads,
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa(),
        **versions("torch", "onnxruntime"),
        "seconds_per_measurement": seconds,
        "rounds": rounds,
        "target_ratio": TARGET_RATIO,
        "results": results,
    }
    log(format_table(report))
    if json_out is not None:
        from common.files import write_json

        write_json(json_out, report)
        log(f"wrote {json_out}")
    return report


def format_table(report: dict) -> str:
    lines = [
        f"{report['architecture']} AlexNet, {report['image_size']} px, CPU ({report['cpu_isa']}), "
        f"{report['threads']} threads "
        f"(median of {report['rounds']} interleaved rounds; images/s)",
        "ONNX graph: "
        + (
            "average pool folded into fc6 (exact, smaller fc6)"
            if report["average_pool_folded_into_fc6"]
            else "as traced (no fold)"
        ),
        f"{'batch':>5}  {'PyTorch eager':>13}  {'ORT FP32':>9}  {'ORT INT8':>9}  "
        f"{'FP32/eager':>10}  {'INT8/FP32':>9}",
    ]
    for row in report["results"]:
        speeds = row["images_per_s"]
        lines.append(
            f"{row['batch_size']:>5}  {speeds['pytorch_eager']:>13.1f}  {speeds['onnxruntime_fp32']:>9.1f}  "
            f"{speeds['onnxruntime_int8']:>9.1f}  {_ratio(row['ratio_fp32_vs_eager'])}  "
            f"{_ratio(row['ratio_int8_vs_fp32'], 9)}"
        )
    lines.append(
        f"targets: ORT FP32 >= {TARGET_RATIO}x eager, INT8 >= {TARGET_RATIO}x FP32 (* = target missed)"
    )
    return "\n".join(lines)


def _ratio(value: float, width: int = 10) -> str:
    mark = "" if value >= TARGET_RATIO else "*"
    return f"{value:.2f}x{mark}".rjust(width)


def _batch_of(images: np.ndarray, batch_size: int) -> np.ndarray:
    repeats = -(-batch_size // len(images))
    return np.ascontiguousarray(np.concatenate([images] * repeats)[:batch_size])
