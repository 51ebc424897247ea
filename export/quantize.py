"""Static INT8 with onnxruntime.quantization, calibrated on real images.

Choices, measured on the digits model (2-core CPU, ONNX Runtime 1.31, 1 thread, interleaved runs):
- QDQ format, not QOperator: ONNX Runtime's CPU provider fuses QuantizeLinear/DequantizeLinear pairs
  around Conv and Gemm into the same integer kernels QOperator names explicitly, so CPU speed is the
  same within noise (batch 64: 1165 vs 1242 images/s; batch 1: 526 vs 455), and only QDQ also runs on
  TensorRT (explicit quantization) and Triton's TensorRT accelerator.
- Per-channel weight scales: AlexNet's filters differ widely in range; per-channel kept more top-1
  agreement with FP32 (99.66% vs 99.33% on the digits, before the pool fold; equal after it) at the
  same speed at batch 64 (batch 1: up to ~20% slower in a noisy measurement). The 99% gate matters more.
- uint8 activations, int8 weights (U8S8) without reduce_range: right for CPUs with VNNI (AVX512-VNNI
  and AVX-VNNI) where U8S8 cannot saturate; older AVX2-only CPUs may lose a little accuracy, which the
  agreement check below would catch.
- MinMax calibration: the calibration images are the validation images themselves, so their range
  is the range to cover.
- Only the network's layers are quantised (NETWORK_OP_TYPES); the pixel normalisation before them and the
  softmax after them stay FP32. Quantised, the normalisation's Mul and Add become QLinearMul/QLinearAdd,
  element-wise kernels that run on one thread and took 15 of 32 ms per batch of 64 at 2 threads (ORT's
  profiler), which is why INT8 gained little from a second thread; a quantised softmax would also round
  the served scores to steps of 1/255. Leaving them in float: INT8/FP32 at batch 64, 2 threads, went from
  1.46x to 2.84x in one interleaved run, with the same 100% top-1 agreement.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.errors import ExportError
from export.onnx_export import INPUT_NAME
from export.parity import compare_outputs, run_batched

MIN_INT8_AGREEMENT = 0.99
CALIBRATION_BATCH = 32
CALIBRATION_LIMIT = 512  # images; more adds time, not range
# Relu, MaxPool and Reshape pass the quantised tensors between the layers, so the Q/DQ pairs around them
# fuse away and the whole network runs in integers from the first conv to the last fc layer.
NETWORK_OP_TYPES = ["Conv", "Relu", "MaxPool", "Reshape", "Flatten", "Gemm", "MatMul"]


@dataclass
class Int8Report:
    images: int
    top1_agreement: float  # INT8 top-1 == FP32 top-1, on real images
    max_abs_diff: float
    fp32_images_per_s: float
    int8_images_per_s: float
    batch_size: int
    quantize_seconds: float

    @property
    def speedup(self) -> float:
        return self.int8_images_per_s / self.fp32_images_per_s

    def summary(self) -> str:
        return (
            f"int8: top-1 agreement with FP32 {self.top1_agreement:.2%} on {self.images} real images "
            f"(max |diff| {self.max_abs_diff:.3f}); speed at batch {self.batch_size}: "
            f"{self.int8_images_per_s:.0f} vs {self.fp32_images_per_s:.0f} images/s FP32 = "
            f"{self.speedup:.2f}x (ONNX Runtime CPU); quantised in {self.quantize_seconds:.1f}s"
        )


class PixelsCalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over uint8 pixels, in batches."""

    def __init__(self, pixels: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> None:
        self._batches = iter([pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration_pixels: np.ndarray) -> float:
    """Write the static INT8 model of `fp32_path` to `int8_path`; returns the seconds it took."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start = time.perf_counter()
    pixels = calibration_pixels[:CALIBRATION_LIMIT]
    # The quantiser logs (on the root logger) that it cannot quantise the uint8 input: true, and meant.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(dir=int8_path.parent, prefix=".quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared))
            quantize_static(
                str(prepared),
                str(int8_path),
                calibration_data_reader=_reader(pixels),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=NETWORK_OP_TYPES,
            )
        except Exception as error:  # the quantiser raises many types; all mean "no INT8 model"
            raise ExportError(f"INT8 quantisation failed: {error}") from error
        finally:
            root.setLevel(level)
    drop_unused_opsets(int8_path)
    return time.perf_counter() - start


def drop_unused_opsets(path: Path) -> None:
    """Keep only the operator set imports the graph uses.

    quant_pre_process runs ONNX Runtime's optimiser, which declares every domain it knows (ai.onnx.ml 5,
    com.microsoft.nchwc, org.pytorch.aten...) although the graph uses only standard operators. The file
    should state what it needs and no more: other consumers (TensorRT's parser, older tools) need not
    know those domains. (ONNX Runtime 1.19, in the production Triton container, loads it either way.)
    """
    import onnx

    model = onnx.load(str(path))
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, str(path))


def _reader(pixels: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(PixelsCalibrationReader, CalibrationDataReader):
        pass

    return Reader(pixels)


def images_per_second(session, pixels: np.ndarray, *, seconds: float = 1.0) -> float:
    """Throughput of an ONNX Runtime session on one batch, after a warm-up run."""
    feed = {INPUT_NAME: pixels}
    session.run(None, feed)
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs < 3:
        session.run(None, feed)
        runs += 1
    return runs * len(pixels) / elapsed


def evaluate_int8(
    fp32_session, int8_session, pixels: np.ndarray, *, batch_size: int, quantize_seconds: float
) -> Int8Report:
    """Top-1 agreement INT8 vs FP32 on real images, and their speed ratio (interleaved, best of 3)."""
    fp32 = run_batched(lambda x: fp32_session.run(None, {INPUT_NAME: x})[0], pixels, batch_size)
    int8 = run_batched(lambda x: int8_session.run(None, {INPUT_NAME: x})[0], pixels, batch_size)
    check = compare_outputs("int8 vs fp32", fp32, int8, tolerance=1.0)
    timing_batch = pixels[:batch_size]
    fp32_speed, int8_speed = 0.0, 0.0
    for _ in range(3):  # interleaved rounds: a busy neighbour slows both, not one
        fp32_speed = max(fp32_speed, images_per_second(fp32_session, timing_batch, seconds=0.5))
        int8_speed = max(int8_speed, images_per_second(int8_session, timing_batch, seconds=0.5))
    return Int8Report(
        images=len(pixels),
        top1_agreement=check.top1_agreement,
        max_abs_diff=check.max_abs_diff,
        fp32_images_per_s=fp32_speed,
        int8_images_per_s=int8_speed,
        batch_size=len(timing_batch),
        quantize_seconds=quantize_seconds,
    )
