"""Every config.pbtxt of the repository, built with Triton's own protobuf schema, and read back with it.

Configs are ModelConfig messages from the protobuf classes tritonclient ships (the schema Triton parses),
printed with google.protobuf.text_format, so every file written parses; whatever reads a config (the local
server, the benchmark, the production image's plan build) parses it with the same classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from common.errors import UserError
from triton_repository.image_preprocessing import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from triton_repository.layout import (
    CONFIG_FILE,
    EMBEDDING_OUTPUT_NAME,
    IMAGE_INPUT_NAME,
    INPUT_NAME,
    LABELS_FILE,
    OUTPUT_NAME,
    ModelNames,
)
from triton_repository.tensorrt_engine import TENSORRT_WORKSPACE_BYTES

if TYPE_CHECKING:
    from common.model_card import ModelCard

DEVICES = ("gpu", "cpu")
DEFAULT_MAX_BATCH_SIZE = 64
# Dynamic batching starts as Triton's guide recommends, `dynamic_batching { }`: each batch takes every
# request queued while the previous one ran (up to max_batch_size), and none waits for company.
# Measured with `alexnet bench` (2-core CPU, 224 px, one instance): against a 500 us delay with preferred
# sizes [32, 64], it served at least as many images/s at concurrency 64 and cut 0.5 ms from every request
# at concurrency 1. Under load the queue itself forms the batches; a delay pays only where a batch's fixed
# cost dominates (measure on the GPU, then export with --queue-delay-us).
DEFAULT_QUEUE_DELAY_MICROSECONDS = 0
# Overload sheds load instead of queueing without bound: a request that finds QUEUED_BATCHES full batches
# already waiting is refused at once with UNAVAILABLE (HTTP 503, "Exceeds maximum queue size"), which
# clients retry after a backoff; one that has waited QUEUE_TIMEOUT_MICROSECONDS is refused the same way
# ("Request timeout expired"), and a client may ask for less with the request's own timeout. Two batches
# keep the instances fed and bound the wait of an accepted request by about two batch times. Measured with
# `alexnet bench` at concurrency 700 (docs/serving.md, "Overload").
QUEUED_BATCHES = 2
QUEUE_TIMEOUT_MICROSECONDS = 2_000_000
# One request may carry up to max_batch_size images, each within the per-image limits (16 MiB, 36 MP); a
# request's images together are held to these, so that one request cannot keep the preprocessing busy for
# long (64 flat 6000x6000 PNGs of 35 KB each took ~30 s to decode): 144 MP decode in about 2 s on one
# core. 64 MiB is also what newer Tritons accept as an HTTP body by default (--http-max-input-size).
MAX_REQUEST_PIXELS = 4 * MAX_IMAGE_PIXELS
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Two instances of the network on each device: one can take the next batch while the other finishes.
# With a bounded queue (above) this matters on Triton 2.51: a queue policy turns off the batcher's
# prefetching, and a request that arrives while the only instance is still finishing its previous batch
# then waits for the batcher's 500 ms timer. Measured (docs/serving.md, "Overload"): with two instances,
# each given every core, no such wait at concurrency 1, and more images/s at 64 and 700.
NETWORK_INSTANCES = 2
# Decoding JPEGs is CPU work; a GPU host has cores to spare for it. Two on a CPU host: see above.
PREPROCESS_INSTANCES = {"gpu": 4, "cpu": 2}
QUANTIZATION_PARAMETER = "quantization"
PRECISION_PARAMETER = "precision"  # a plan's: FP16 or FP32
SERVED_VERSIONS = 2  # the new version and the one before it (rollouts and rollbacks: docs/serving.md)
ONNX_PLATFORM, ONNX_BACKEND = "onnxruntime_onnx", "onnxruntime"
PLAN_PLATFORM, PLAN_BACKEND = "tensorrt_plan", "tensorrt"
BACKEND_OF_PLATFORM = {ONNX_PLATFORM: ONNX_BACKEND, PLAN_PLATFORM: PLAN_BACKEND}


class RepositoryError(UserError):
    """A config that is not a valid Triton model config; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Building


def card_parameters(card: ModelCard) -> dict[str, str]:
    """The model card facts every served config carries, so clients read them from the server."""
    return {
        "image_size": str(card.image_size),
        "resize_size": str(card.resize_size),
        "architecture": card.architecture,
        "dataset": card.dataset,
        "input_conversion": card.input_conversion,
        "source_weights_sha256": card.weights_sha256,
    }


def _pixels_input(card: ModelCard) -> mc.ModelInput:
    size = card.image_size
    # The declared layout is what generic Triton image clients read to know whether to send NHWC or NCHW.
    return mc.ModelInput(
        name=INPUT_NAME, data_type=mc.TYPE_UINT8, format=mc.ModelInput.FORMAT_NHWC, dims=[size, size, 3]
    )


def _probabilities_output(card: ModelCard) -> mc.ModelOutput:
    return mc.ModelOutput(
        name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[card.num_classes], label_filename=LABELS_FILE
    )


def _keep_previous_version(config: mc.ModelConfig) -> None:
    """Serve the two latest versions: requests (which go to the latest ready one) never race the unload
    of the version they were routed to while a new one rolls out, and a rollback finds it loaded."""
    config.version_policy.latest.num_versions = SERVED_VERSIONS


def _bound_the_queue(config: mc.ModelConfig) -> None:
    """Refuse what the model cannot serve in time (QUEUED_BATCHES, QUEUE_TIMEOUT_MICROSECONDS)."""
    policy = config.dynamic_batching.default_queue_policy
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = QUEUE_TIMEOUT_MICROSECONDS
    policy.allow_timeout_override = True
    policy.max_queue_size = QUEUED_BATCHES * max(1, config.max_batch_size)


def _set_parameters(config: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def _add_pixel_model_parts(
    config: mc.ModelConfig, card: ModelCard, max_batch_size: int, gpu: bool, queue_delay_us: int
) -> None:
    """Inputs, outputs, batching, instances, warm-up and parameters shared by the ONNX and plan models."""
    config.max_batch_size = max_batch_size
    _keep_previous_version(config)
    config.input.append(_pixels_input(card))
    config.output.append(_probabilities_output(card))
    config.dynamic_batching.SetInParent()
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    _bound_the_queue(config)
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.append(mc.ModelInstanceGroup(kind=kind, count=NETWORK_INSTANCES))
    size = card.image_size
    for batch_size in sorted({1, max_batch_size}):
        warmup = config.model_warmup.add(name=f"random_pixels_batch_{batch_size}", batch_size=batch_size)
        warmup.inputs[INPUT_NAME].CopyFrom(
            mc.ModelWarmup.Input(data_type=mc.TYPE_UINT8, dims=[size, size, 3], random_data=True)
        )
    _set_parameters(config, card_parameters(card))


def _tensorrt_profile(card: ModelCard, max_batch_size: int) -> dict[str, str]:
    size = card.image_size

    def shape(batch: int) -> str:
        return f"{INPUT_NAME}:{batch}x{size}x{size}x3"

    return {
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(max_batch_size),
        "trt_profile_max_shapes": shape(max_batch_size),
    }


def onnx_model_config(
    name: str,
    card: ModelCard,
    *,
    max_batch_size: int,
    device: str,
    fp16: bool = False,
    int8: bool = False,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_MICROSECONDS,
) -> mc.ModelConfig:
    """The `alexnet` (or `alexnet_int8`) model: ONNX Runtime backend, TensorRT accelerator on GPUs.

    The INT8 model gets no accelerator: its Q/DQ graph is one TensorRT can run (symmetric int8), but
    ONNX Runtime's TensorRT provider in INT8 has not been shown to load it on a GPU yet, and Triton
    does not start when a model fails to load. ONNX Runtime's CUDA provider runs the graph instead.
    """
    config = mc.ModelConfig(name=name, platform=ONNX_PLATFORM, backend=ONNX_BACKEND)
    gpu = device == "gpu"
    _add_pixel_model_parts(config, card, max_batch_size, gpu, queue_delay_us)
    if int8:
        config.parameters[QUANTIZATION_PARAMETER].string_value = "int8"
    if gpu and not int8:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        accelerator.parameters["precision_mode"] = "FP16" if fp16 else "FP32"
        accelerator.parameters["max_workspace_size_bytes"] = str(TENSORRT_WORKSPACE_BYTES)
        accelerator.parameters.update(_tensorrt_profile(card, max_batch_size))
    return config


def plan_config(onnx_config: mc.ModelConfig, plan_name: str, *, fp16: bool) -> mc.ModelConfig:
    """The TensorRT plan model built from an ONNX model: the ONNX model's config with its own name, the
    tensorrt_plan platform and the plan's precision, without ONNX Runtime's TensorRT accelerator. Inputs,
    outputs, labels, batching, instances, warm-up and parameters stay, so `<name>_trt` answers exactly
    like `<name>` (`alexnet export tensorrt` and the production image's plan build both derive it here)."""
    config = mc.ModelConfig()
    config.CopyFrom(onnx_config)
    for field in ("platform", "backend", "default_model_filename", "optimization"):
        config.ClearField(field)
    config.name, config.platform, config.backend = plan_name, PLAN_PLATFORM, PLAN_BACKEND
    config.parameters[PRECISION_PARAMETER].string_value = "FP16" if fp16 else "FP32"
    return config


def tensorrt_plan_config(
    name: str,
    card: ModelCard,
    *,
    max_batch_size: int,
    fp16: bool,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_MICROSECONDS,
) -> mc.ModelConfig:
    """The `alexnet_trt` model: a serialized TensorRT engine (GPU only)."""
    onnx_config = onnx_model_config(
        name, card, max_batch_size=max_batch_size, device="gpu", fp16=fp16, queue_delay_us=queue_delay_us
    )
    return plan_config(onnx_config, name, fp16=fp16)


def preprocess_config(name: str, card: ModelCard, *, max_batch_size: int, device: str) -> mc.ModelConfig:
    """The Python-backend model: encoded image bytes -> the network's uint8 pixels."""
    size = card.image_size
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    _keep_previous_version(config)
    config.input.append(mc.ModelInput(name=IMAGE_INPUT_NAME, data_type=mc.TYPE_STRING, dims=[1]))
    config.output.append(mc.ModelOutput(name=INPUT_NAME, data_type=mc.TYPE_UINT8, dims=[size, size, 3]))
    config.dynamic_batching.SetInParent()  # hands each execute() all queued requests, no waiting
    _bound_the_queue(config)
    config.instance_group.append(
        mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=PREPROCESS_INSTANCES[device])
    )
    _set_parameters(
        config,
        {
            "image_size": str(size),
            "resize_size": str(card.resize_size),
            "input_conversion": card.input_conversion,
            "max_image_bytes": str(MAX_IMAGE_BYTES),
            "max_image_pixels": str(MAX_IMAGE_PIXELS),
            "max_request_bytes": str(MAX_REQUEST_BYTES),
            "max_request_pixels": str(MAX_REQUEST_PIXELS),
        },
    )
    return config


def ensemble_config(names: ModelNames, card: ModelCard, *, max_batch_size: int) -> mc.ModelConfig:
    """`alexnet_image`: image bytes -> preprocess -> alexnet -> probabilities, with the same labels."""
    return _image_ensemble(
        names.image, names.preprocess, names.onnx, _probabilities_output(card), card, max_batch_size
    )


def embedding_model_config(
    name: str,
    card: ModelCard,
    *,
    features: int,
    max_batch_size: int,
    device: str,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_MICROSECONDS,
) -> mc.ModelConfig:
    """`alexnet_embedding`: the `alexnet` model's config (input, batching, warm-up, accelerator) with the
    fc7 features as its output, FP32 [features], no labels."""
    config = onnx_model_config(
        name, card, max_batch_size=max_batch_size, device=device, queue_delay_us=queue_delay_us
    )
    config.ClearField("output")
    config.output.append(_embedding_output(features))
    return config


def embedding_ensemble_config(
    names: ModelNames, card: ModelCard, *, features: int, max_batch_size: int
) -> mc.ModelConfig:
    """`alexnet_embedding_image`: image bytes -> preprocess -> alexnet_embedding -> fc7 features."""
    return _image_ensemble(
        names.embedding_image, names.preprocess, names.embedding, _embedding_output(features), card,
        max_batch_size,
    )  # fmt: skip


def _embedding_output(features: int) -> mc.ModelOutput:
    return mc.ModelOutput(name=EMBEDDING_OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[features])


def _image_ensemble(
    name: str, preprocess: str, network: str, output: mc.ModelOutput, card: ModelCard, max_batch_size: int
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    _keep_previous_version(config)
    config.input.append(mc.ModelInput(name=IMAGE_INPUT_NAME, data_type=mc.TYPE_STRING, dims=[1]))
    config.output.append(output)
    steps = config.ensemble_scheduling.step
    steps.add(
        model_name=preprocess,
        model_version=-1,
        input_map={IMAGE_INPUT_NAME: IMAGE_INPUT_NAME},
        output_map={INPUT_NAME: "preprocessed_pixels"},
    )
    steps.add(
        model_name=network,
        model_version=-1,
        input_map={INPUT_NAME: "preprocessed_pixels"},
        output_map={output.name: output.name},
    )
    _set_parameters(config, card_parameters(card))
    return config


def labels_text(card: ModelCard) -> str:
    return "".join(f"{label}\n" for label in card.labels)


# ---------------------------------------------------------------------------------------------
# Text


def config_text(config: mc.ModelConfig, comment: str = "") -> str:
    """config.pbtxt text: a comment (by default, export's explanation of the choices), then the message."""
    header = f"# {comment}\n" if comment else _explanation(config)
    return header + text_format.MessageToString(config)


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def read_config(model_dir: Path) -> mc.ModelConfig:
    """The config.pbtxt of a model folder; RepositoryError naming the file when it does not parse."""
    path = model_dir / CONFIG_FILE
    try:
        return parse_config(path.read_text())
    except text_format.ParseError as error:
        raise RepositoryError(
            f"{path} is not a valid Triton model config ({error}): fix it, or export the model again "
            "with `alexnet export onnx`"
        ) from error


def write_config(model_dir: Path, config: mc.ModelConfig) -> None:
    """The message alone, without the explanation (for configs nobody reads: the local server's copy)."""
    (model_dir / CONFIG_FILE).write_text(text_format.MessageToString(config))


def _explanation(config: mc.ModelConfig) -> str:
    lines = [f"# Written by `alexnet export`; Triton model configuration for {config.name}."]
    if config.backend in (ONNX_BACKEND, PLAN_BACKEND) and config.HasField("dynamic_batching"):
        delay = config.dynamic_batching.max_queue_delay_microseconds
        lines += [
            f"# dynamic_batching: each batch takes the requests queued while the previous one ran, up to "
            f"{config.max_batch_size};",
            f"#   a lone request waits {delay} us for company"
            + (
                " (Triton's recommended start; --queue-delay-us to change after measuring)"
                if delay == 0
                else " (--queue-delay-us)"
            ),
        ]
    if config.dynamic_batching.HasField("default_queue_policy"):
        policy = config.dynamic_batching.default_queue_policy
        lines.append(
            f"# queue: at most {policy.max_queue_size} requests wait, each at most "
            f"{policy.default_timeout_microseconds / 1e6:g} s; the rest are refused at once with UNAVAILABLE "
            "(HTTP 503), which clients retry after a backoff"
        )
    for group in config.instance_group:
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        lines.append(
            f"# instance_group: {group.count} x {kind}"
            + (" (for CPU-only hosts: export with --device cpu)" if kind == "KIND_GPU" else "")
        )
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    for accelerator in accelerators:
        lines.append(
            f"# {accelerator.name} accelerator: ONNX Runtime hands the graph to TensorRT in "
            f"{accelerator.parameters['precision_mode']} (--fp16 for FP16), "
            f"batch profile 1..{config.max_batch_size}"
        )
    quantized = QUANTIZATION_PARAMETER in config.parameters
    if quantized and any(group.kind == mc.ModelInstanceGroup.KIND_GPU for group in config.instance_group):
        lines += [
            "# no TensorRT accelerator: the INT8 Q/DQ graph is TensorRT-ready (symmetric int8), but",
            "#   ONNX Runtime's TensorRT provider in INT8 has not been shown to load it on a GPU, and a",
            "#   model that fails to load stops Triton; ONNX Runtime's CUDA provider runs it instead",
            "#   (docs/export.md, INT8)",
        ]
    if config.version_policy.HasField("latest"):
        lines.append(
            f"# version_policy: the {config.version_policy.latest.num_versions} latest versions stay loaded; "
            "requests go to the newest"
        )
    if config.model_warmup:
        lines.append(
            "# model_warmup: random pixels at batch 1 and the maximum, so no request pays for set-up"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Reading what a config means


def engine_backend(config: mc.ModelConfig) -> str:
    """The backend a config asks for, whether it names a backend or a platform."""
    return config.backend or BACKEND_OF_PLATFORM.get(config.platform, config.platform)


def wants_fp16(config: mc.ModelConfig) -> bool:
    """FP16 asked for by a plan's `precision` parameter or a TensorRT accelerator's `precision_mode`."""
    plan_precision = config.parameters.get(PRECISION_PARAMETER)
    if plan_precision is not None and plan_precision.string_value.upper() == "FP16":
        return True
    return any(
        accelerator.parameters.get("precision_mode", "").upper() == "FP16"
        for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator
    )


def io_signature(config: mc.ModelConfig) -> dict[str, list[tuple[str, str, tuple[int, ...]]]]:
    """Names, types and shapes of a config's inputs and outputs (batch axis -1 where batched)."""
    batch = (-1,) if config.max_batch_size > 0 else ()

    def describe(tensors) -> list[tuple[str, str, tuple[int, ...]]]:
        return [(t.name, mc.DataType.Name(t.data_type), batch + tuple(t.dims)) for t in tensors]

    return {"inputs": describe(config.input), "outputs": describe(config.output)}
