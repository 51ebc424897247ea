"""Static INT8 with onnxruntime.quantization, calibrated on real images.

One INT8 file for every machine that serves it: the exporting CPU does not choose the format, because the
model is served elsewhere (other x86 CPUs, TensorRT on GPUs). The settings, and the measurements behind
them, are in docs/export.md ("INT8"):
- QDQ format: ONNX Runtime's CPU provider fuses QuantizeLinear/DequantizeLinear pairs around Conv and Gemm
  into its integer kernels, and the same Q/DQ graph is what TensorRT's explicit quantization reads.
- Symmetric int8 everywhere (S8S8, zero point 0): TensorRT accepts only symmetric int8 Q/DQ inside a
  network; ONNX Runtime runs it on any x86 CPU.
- Weights per channel, in 7 bits (reduce_range): x86 CPUs without VNNI multiply u8 x s8 pairs with an
  instruction (VPMADDUBSW) whose 16-bit sums saturate when both operands use all 8 bits; 7-bit weights
  cannot saturate, so an AVX2-only CPU computes what a VNNI CPU computes.
- Biases stay FP32 (TensorRT's parser rejects int32 bias Dequantize nodes), and so does the last layer
  (see `classifier_layer`).
- MinMax calibration on up to CALIBRATION_LIMIT real images.
- Only the network's layers are quantised (NETWORK_OP_TYPES); the pixel normalisation before them and the
  softmax after them stay FP32 (quantised, they became single-threaded element-wise kernels, and the served
  scores would be rounded to steps of 1/255).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.errors import ExportError
from export.parity import compare_outputs, run_batched
from triton_repository.layout import INPUT_NAME

MIN_INT8_AGREEMENT = 0.99  # top-1 agreement with FP32 below which --int8 refuses to write the model
CALIBRATION_BATCH = 32
CALIBRATION_LIMIT = 512  # images; more adds time, not range
# Relu, MaxPool and Reshape pass the quantised tensors between the layers, so the Q/DQ pairs around them
# fuse away and the whole network runs in integers from the first conv to the last fc layer.
NETWORK_OP_TYPES = ["Conv", "Relu", "MaxPool", "Reshape", "Flatten", "Gemm", "MatMul"]
# Stamped into the INT8 file's metadata: what a reader needs to know about how it was made.
QUANTIZATION = (
    "static INT8, QDQ, symmetric int8 activations and weights (zero point 0), per-channel 7-bit weights, "
    "MinMax calibration; biases, the last layer, normalisation and softmax in FP32"
)


@dataclass
class Int8Report:
    images: int
    top1_agreement: float  # INT8 top-1 == FP32 top-1, on real images
    max_abs_diff: float
    fp32_images_per_s: float
    int8_images_per_s: float
    batch_size: int
    quantize_seconds: float
    cpu_isa: str  # agreement and speed depend on the CPU's integer kernels: say which ones ran

    @property
    def speedup(self) -> float:
        return self.int8_images_per_s / self.fp32_images_per_s

    def summary(self) -> str:
        return (
            f"int8: top-1 agreement with FP32 {self.top1_agreement:.2%} on {self.images} real images "
            f"(max |diff| {self.max_abs_diff:.3f}); speed at batch {self.batch_size}: "
            f"{self.int8_images_per_s:.0f} vs {self.fp32_images_per_s:.0f} images/s FP32 = "
            f"{self.speedup:.2f}x (ONNX Runtime CPU: {self.cpu_isa}); "
            f"quantised in {self.quantize_seconds:.1f}s"
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
                reduce_range=True,  # 7-bit weights: no u8 x s8 saturation on CPUs without VNNI
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=NETWORK_OP_TYPES,
                nodes_to_exclude=[classifier_layer(prepared)],
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "QuantizeBias": False,  # TensorRT's parser rejects int32 bias DequantizeLinear nodes
                },
            )
        except Exception as error:  # the quantiser raises many types; all mean "no INT8 model"
            raise ExportError(f"INT8 quantisation failed: {error}") from error
        finally:
            root.setLevel(level)
    drop_unused_opsets(int8_path)
    return time.perf_counter() - start


def classifier_layer(path: Path) -> str:
    """The name of the last layer (the one whose output the softmax reads): it stays FP32.

    Quantised, its output (the logits) would be rounded to one int8 scale for all classes, and two close
    logits rounded to the same step flip the top-1 answer; FP32, it costs 4096 x classes multiply-adds.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    (softmax,) = (node for node in graph.node if node.op_type == "Softmax")
    return producer[softmax.input[0]].name


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
    from common.machine import cpu_isa

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
        cpu_isa=cpu_isa(),
    )


def check_int8_agreement(report: Int8Report, minimum: float = MIN_INT8_AGREEMENT) -> None:
    """The INT8 gate: refuse a model whose top-1 answers differ from FP32's on too many real images."""
    if report.top1_agreement < minimum:
        raise ExportError(
            f"the INT8 model agrees with FP32 on only {report.top1_agreement:.2%} of {report.images} images "
            f"(at least {minimum:.2%} needed); nothing was written. Export without --int8, or calibrate on "
            "more representative images with --calibration-data DIR"
        )
