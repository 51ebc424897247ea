"""`alexnet export tensorrt`: a serialized TensorRT engine (model.plan) for Triton's tensorrt_plan backend.

The engine is built from the checked ONNX export by the builder the production image uses too
(triton_repository/tensorrt_engine.py: one optimization profile for the batch axis, min 1, opt = max =
the repository's max batch size; the workspace limit; FP32 without TF32 or FP16, on TensorRT 10 by builder
flags and on TensorRT 11 from an FP16 graph). The `tensorrt` extra pins TensorRT 10, because
onnxruntime-gpu 1.31's TensorRT provider and the Triton 2x.xx containers link TensorRT 10. A plan only runs
on the TensorRT version and GPU family that built it: build it where it is served.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2

from export.errors import ExportError
from export.onnx_export import export_onnx
from export.parity import FP32_TOLERANCE, ParityReport, check_parity
from export.repository import RepositoryUpdate, choose_version
from triton_repository import tensorrt_engine
from triton_repository.configs import DEFAULT_MAX_BATCH_SIZE, read_config, tensorrt_plan_config
from triton_repository.layout import CONFIG_FILE, INPUT_NAME, ONNX_FILE, OUTPUT_NAME, PLAN_FILE, ModelNames
from triton_repository.tensorrt_engine import EngineSpec

# Against ONNX Runtime FP32. An FP32 engine is built without TF32 (TensorRT 10 allows it by default: inputs
# rounded to a 10-bit mantissa on Ampere and later, errors of ~1e-3 on a probability), so it is held to the
# FP32 bound every FP32 implementation meets; FP16 (11-bit significand) to its own, far below a top-1 flip
# on a confident model.
TENSORRT_FP32_TOLERANCE = FP32_TOLERANCE
TENSORRT_FP16_TOLERANCE = 2e-2
WHERE_IT_RUNS = (
    "Build the plan on the GPU machine that serves it, inside the Triton container the production image "
    "uses, or let the production container build it at first start (docs/production.md, 'The TensorRT "
    "plan'); the ONNX model from `alexnet export onnx` serves everywhere meanwhile"
)


@dataclass
class TensorRTResult:
    repository: Path
    model: str
    version: int
    tensorrt_version: str
    parity: ParityReport


def tensorrt_missing_reason() -> str | None:
    """Why `export tensorrt` cannot run here, or None when it can."""
    reasons = []
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        reasons.append("the tensorrt package is not installed (.venv/bin/pip install -e '.[tensorrt]')")
    import torch

    if not torch.cuda.is_available():
        reasons.append("this machine has no usable NVIDIA GPU")
    return " and ".join(reasons) or None


def export_tensorrt(
    model_dir: Path,
    repository: Path,
    *,
    name: str = "alexnet",
    max_batch_size: int | None = None,
    fp16: bool = False,
    version: int | None = None,
    calibration_data: Path | None = None,
    log: Callable[[str], None] = print,
) -> TensorRTResult:
    """Export to ONNX, build the TensorRT engine, check it against ONNX Runtime, write <name>_trt."""
    reason = tensorrt_missing_reason()
    if reason is not None:
        raise ExportError(f"`alexnet export tensorrt` cannot run here: {reason}. {WHERE_IT_RUNS}")

    import tensorrt as trt

    from common.onnx_session import create_session
    from export.images import real_images
    from export.pipeline import check_onnx_against_pytorch, load_checked_model, ort_classifier

    names = ModelNames(name)
    onnx_config = _repository_config(repository / names.onnx)
    max_batch_size = max_batch_size or onnx_config.max_batch_size
    network, card = load_checked_model(model_dir)
    images, images_name = real_images(card, calibration_data)
    version = choose_version(repository, [names.trt], version)
    with RepositoryUpdate(repository) as update, tempfile.TemporaryDirectory(dir=update.staging) as scratch:
        onnx_path = export_onnx(network, card, Path(scratch) / ONNX_FILE)
        onnx_session = create_session(onnx_path, device="cpu")
        onnx_parity = check_onnx_against_pytorch(
            network,
            card,
            onnx_session,
            images,
            images_name,
            batch_sizes=(1, max_batch_size),
            max_batch_size=max_batch_size,
        )
        if not onnx_parity.passed:
            raise ExportError(
                f"the ONNX model does not match PyTorch ({onnx_parity.failures()}); nothing was written"
            )
        precision = "FP16" if fp16 else "FP32"
        log(f"building a TensorRT {trt.__version__} engine ({precision}, batch 1..{max_batch_size})")
        plan = build_engine(onnx_path, image_size=card.image_size, max_batch_size=max_batch_size, fp16=fp16)
        parity = check_parity(
            ort_classifier(onnx_session),
            TensorRTClassifier(plan),
            images=images,
            images_name=images_name,
            image_size=card.image_size,
            batch_sizes=(1, 7, max_batch_size),
            max_batch_size=max_batch_size,
            tolerance=TENSORRT_FP16_TOLERANCE if fp16 else TENSORRT_FP32_TOLERANCE,
            reference_name="ONNX Runtime FP32",
            candidate_name=f"TensorRT {'FP16' if fp16 else 'FP32'}",
        )
        log(parity.summary())
        if not parity.passed:
            raise ExportError(
                f"the TensorRT engine does not match ONNX Runtime ({parity.failures()}); nothing was written"
            )
        (update.version_dir(names.trt, version) / PLAN_FILE).write_bytes(plan)
        update.add_config(
            tensorrt_plan_config(
                names.trt,
                card,
                max_batch_size=max_batch_size,
                fp16=fp16,
                queue_delay_us=onnx_config.dynamic_batching.max_queue_delay_microseconds,
            ),
            card,
        )
        update.commit()
    return TensorRTResult(repository, names.trt, version, trt.__version__, parity)


def _repository_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """The ONNX model's config, whose batching the plan follows (a bare default one if there is none)."""
    if (model_dir / CONFIG_FILE).is_file():
        return read_config(model_dir)
    return model_config_pb2.ModelConfig(max_batch_size=DEFAULT_MAX_BATCH_SIZE)


def build_engine(onnx_path: Path, *, image_size: int, max_batch_size: int, fp16: bool) -> bytes:
    """The serialized engine for `onnx_path`, with a batch profile 1..max_batch_size: built by the same
    builder as the production image's (triton_repository/tensorrt_engine.py)."""
    spec = EngineSpec(onnx_path, INPUT_NAME, (image_size, image_size, 3), max_batch_size, fp16)
    return tensorrt_engine.build_engine(spec)


class TensorRTClassifier:
    """Run a serialized engine on uint8 pixels (CUDA buffers from torch), for the parity check."""

    def __init__(self, plan: bytes) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ExportError("TensorRT could not load the engine it just built")
        self.context = self.engine.create_execution_context()
        # A stream of its own: on the legacy default stream TensorRT adds a synchronisation to every call.
        self.stream = torch.cuda.Stream()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            inputs = torch.from_numpy(np.ascontiguousarray(pixels)).cuda()
            if not self.context.set_input_shape(INPUT_NAME, tuple(inputs.shape)):
                raise ExportError(
                    f"the engine does not accept a batch of shape {tuple(inputs.shape)} (its profile is "
                    f"{self.engine.get_tensor_profile_shape(INPUT_NAME, 0)})"
                )
            outputs = torch.empty(
                tuple(self.context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda"
            )
            self.context.set_tensor_address(INPUT_NAME, inputs.data_ptr())
            self.context.set_tensor_address(OUTPUT_NAME, outputs.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ExportError("TensorRT failed to run the engine")
            result = outputs.cpu()  # waits for the engine: the copy is queued on the same stream
        return result.numpy()
