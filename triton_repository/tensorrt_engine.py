"""The one TensorRT engine builder: `alexnet export tensorrt` (export/tensorrt_build.py) and the production
image's entry point (serving/docker/trt_plan.py, Python 3.10, no torch) both build their plans here, with
TensorRT's Python API or, where an image has it instead, NVIDIA's `trtexec` tool, with the same settings:

- one optimization profile over the batch axis: 1 to max_batch_size, tuned for the full batch that
  dynamic batching forms under load;
- a workspace limit of TENSORRT_WORKSPACE_BYTES (the onnxruntime backend's accelerator gets the same);
- FP32 means FP32: TensorRT 10 allows TF32 by default (inputs rounded to a 10-bit mantissa), so an FP32
  engine clears it; FP16 is allowed with BuilderFlag.FP16 (`--fp16`);
- TensorRT 11 removed the precision flags (strongly typed networks): FP16 comes from the graph, converted
  to FP16 first (onnxruntime's float16 converter, FP32 inputs and outputs kept);
- before TensorRT 10 a network had to ask for explicit batch; from 10 on it is the only mode.

A plan only runs on the TensorRT version and GPU family that built it: build it where it is served.
Standard library only at import time; TensorRT (and for FP16 on TensorRT 11, onnx and onnxruntime) are
imported when an engine is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

# The same limit triton_repository/configs.py gives ONNX Runtime's TensorRT accelerator in the image.
TENSORRT_WORKSPACE_BYTES = 1 << 30


class EngineBuildError(UserError):
    """TensorRT could not build the engine; the message says why and what to do."""


@dataclass(frozen=True)
class EngineSpec:
    """What to build: the ONNX graph, its input, the batch range and the precision."""

    onnx_file: Path
    input_name: str
    item_shape: tuple[int, ...]  # one item, without the batch axis: (S, S, 3) for the pixels
    max_batch_size: int
    fp16: bool
    workspace_bytes: int = TENSORRT_WORKSPACE_BYTES

    def shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.item_shape)


def tensorrt_major(version: str) -> int:
    """The major version from "10.5.0" (tensorrt.__version__) or "100500" (getInferLibVersion)."""
    if "." in version:
        return int(version.split(".")[0])
    return int(version) // 10000 if len(version) > 2 else int(version)


def precision_flags(*, fp16: bool, tensorrt_major: int) -> tuple[list[str], list[str]]:
    """(BuilderFlags to set, BuilderFlags to clear) for the precision asked for; none on TensorRT 11+."""
    if tensorrt_major >= 11:
        return [], []
    return (["FP16"], []) if fp16 else ([], ["TF32"])


def graph_for(spec: EngineSpec, tensorrt_major: int) -> Path:
    """The ONNX file TensorRT parses: the spec's, or on TensorRT 11+ for FP16 an FP16 copy beside it."""
    if not (spec.fp16 and tensorrt_major >= 11):
        return spec.onnx_file
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as error:
        raise EngineBuildError(
            f"TensorRT {tensorrt_major} builds FP16 engines from an FP16 graph, and converting one needs "
            f"onnx and onnxruntime ({error}): install them, or build an FP32 engine"
        ) from None
    model = convert_float_to_float16(onnx.load(str(spec.onnx_file)), keep_io_types=True)
    fp16_file = spec.onnx_file.with_name(spec.onnx_file.stem + "_fp16.onnx")
    onnx.save(model, str(fp16_file))
    return fp16_file


def build_engine(spec: EngineSpec) -> bytes:
    """The serialized engine for `spec`, built with TensorRT's Python API."""
    import tensorrt as trt

    major = tensorrt_major(trt.__version__)
    onnx_file = graph_for(spec, major)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit_batch = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(
            f"TensorRT's ONNX parser rejected {onnx_file}: {errors}: the graph may use an operator this "
            "TensorRT lacks"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    to_set, to_clear = precision_flags(fp16=spec.fp16, tensorrt_major=major)
    for flag in to_set:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in to_clear:
        if hasattr(trt.BuilderFlag, flag):
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    full = spec.shape(spec.max_batch_size)
    profile.set_shape(spec.input_name, spec.shape(1), full, full)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_file} (its log is above)")
    return bytes(plan)


def trtexec_command(trtexec: str, spec: EngineSpec, plan: Path, *, tensorrt_major: int) -> list[str]:
    """The same build as `build_engine`, as a trtexec command line that writes the plan to `plan`."""

    def shape(batch: int) -> str:
        return f"{spec.input_name}:" + "x".join(str(d) for d in spec.shape(batch))

    command = [
        trtexec,
        f"--onnx={graph_for(spec, tensorrt_major)}",
        f"--saveEngine={plan}",
        f"--minShapes={shape(1)}",
        f"--optShapes={shape(spec.max_batch_size)}",
        f"--maxShapes={shape(spec.max_batch_size)}",
        f"--memPoolSize=workspace:{spec.workspace_bytes // 2**20}M",
        "--skipInference",  # build and save only; Triton warms the model up when it loads it
    ]
    to_set, to_clear = precision_flags(fp16=spec.fp16, tensorrt_major=tensorrt_major)
    return command + [f"--{flag.lower()}" for flag in to_set] + [f"--no{flag}" for flag in to_clear]
