"""The inference parts: the exported network's PyTorch twin on the device in each precision and way of
running it, the ONNX export on ONNX Runtime, and a TensorRT engine; each against CPU float32 logits."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.timing import timed_loop
from gpu_check.agreement import (
    BF16_BOUND,
    FP32_BOUND,
    GPU_FP32_BOUND,
    TF32_BOUND,
    WRONG_MEAN,
    WRONG_STD,
    Compared,
    PixelsToLogits,
    and_more,
    compare_logits,
    describe_confidence,
    log_probabilities,
    run_in_batches,
)
from gpu_check.harness import STRICT_FP32, TF32, Backend, Check, Failure, Section, Skip, backend
from gpu_check.machine import compile_blocker
from training.engine import synchronize


@dataclass
class Variant:
    name: str
    settings: Backend
    bound: float
    prepare: Callable[[int], Callable[[torch.Tensor], torch.Tensor]]  # batch size -> run(inputs)
    fixed_batch: bool = False  # a CUDA graph runs one batch size: shorter batches are padded


def check_inference(check: Check, section: Section, compared: Compared | None) -> None:
    """PixelsToLogits on the device, in each precision and way of running it, against CPU FP32 logits on
    real images; images/s per batch size with the input already on the device."""
    if compared is None:
        raise Skip("no trained model (the training loop part did not run or failed; or pass --model DIR)")
    card = compared.card
    mean, std = (WRONG_MEAN, WRONG_STD) if check.fault == "wrong-mean" else (card.mean, card.std)
    model = PixelsToLogits(copy.deepcopy(compared.network), mean, std).to(check.device).eval()
    section.results["compared"] = describe_confidence(compared)
    fp32_bound = GPU_FP32_BOUND if check.on_gpu else FP32_BOUND
    variants = [Variant(STRICT_FP32.label(check.on_gpu), STRICT_FP32, fp32_bound, lambda batch: model)]
    if check.on_gpu:
        variants += [
            Variant(TF32.label(True), TF32, TF32_BOUND, lambda batch: model),
            Variant("bf16 autocast", STRICT_FP32, BF16_BOUND, lambda batch: _autocast(model, check.device)),
            Variant(
                "CUDA graph, float32 (TF32 off)",
                STRICT_FP32,
                GPU_FP32_BOUND,
                lambda batch: _cuda_graph(model, batch, compared, check),
                fixed_batch=True,
            ),
        ]
        blocker = compile_blocker()
        if blocker:
            section.results["torch.compile"] = f"skipped: {blocker}"
        else:
            # Last, as compiling takes longest. Only the batch axis is dynamic: one graph for every batch
            # size above 1 (and one for 1, which compilers always specialise).
            compiled = torch.compile(model)
            variants.append(
                Variant(
                    "torch.compile, float32 (TF32 off)",
                    STRICT_FP32,
                    GPU_FP32_BOUND,
                    lambda batch: _batch_dynamic(compiled),
                )
            )
    else:
        section.reason = (
            "no GPU: eager float32 only (TF32, bf16, CUDA graphs and torch.compile are GPU paths)"
        )
    failures = []
    for variant in variants:
        for batch in check.sizes.inference_batches:
            key = f"{variant.name}, batch {batch}"
            if not check.in_time():
                section.results[key] = "not run: out of time"
                continue
            with backend(variant.settings), torch.inference_mode():
                run = variant.prepare(batch)
                agreements = [
                    compare_logits(
                        name,
                        compared.reference[name],
                        _logits(run, pixels, batch, variant, check),
                        variant.bound,
                    )
                    for name, pixels in compared.images.items()
                ]
                timing_input = _timing_input(compared, batch, check.device)
                images_per_s = _images_per_second(
                    run, timing_input, check.device, check.sizes.inference_seconds
                )
            section.results[key] = {
                "images_per_s": round(images_per_s, 1),
                **{agreement.images: agreement.as_dict() for agreement in agreements},
            }
            failures += [f"{key}, {a.line()}" for a in agreements if not a.passed]
    if failures:
        raise Failure("disagrees with CPU float32: " + "; ".join(failures[:4]) + and_more(failures, 4))


def _logits(
    run: Callable[[torch.Tensor], torch.Tensor],
    pixels: np.ndarray,
    batch: int,
    variant: Variant,
    check: Check,
) -> np.ndarray:
    """The variant's logits for every image, in batches of `batch` (padded where the variant needs it)."""
    outputs = []
    for start in range(0, len(pixels), batch):
        chunk = pixels[start : start + batch]
        if check.fault == "swap-channels":
            chunk = chunk[..., ::-1]
        count = len(chunk)
        if variant.fixed_batch and count < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - count, axis=0)])
        inputs = torch.from_numpy(np.ascontiguousarray(chunk)).to(check.device)
        outputs.append(run(inputs)[:count].float().cpu().numpy())
    return np.concatenate(outputs)


def _timing_input(compared: Compared, batch: int, device: torch.device) -> torch.Tensor:
    pixels = np.concatenate(list(compared.images.values()))
    pixels = np.resize(pixels, (batch, *pixels.shape[1:]))  # repeats the images where there are fewer
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(device)


def _autocast(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(inputs)

    return run


def _batch_dynamic(
    compiled: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Mark only the batch axis dynamic (not H, W and C, as dynamic=True would), so one compiled graph
    serves every batch size above 1 without recompiling."""

    def run(inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[0] > 1:
            torch._dynamo.mark_dynamic(inputs, 0)
        return compiled(inputs)

    return run


def _cuda_graph(
    model: nn.Module, batch: int, compared: Compared, check: Check
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model captured as one CUDA graph for `batch`: a static input buffer that each call copies its
    batch into before replaying (the copy --inject-fault stale-graph-input leaves out)."""
    device = check.device
    static_input = _timing_input(compared, batch, device).flip(0).contiguous()  # not the first images
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up outside the capture (cuDNN picks its kernels)
            model(static_input)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = model(static_input)

    def run(inputs: torch.Tensor) -> torch.Tensor:
        if check.fault != "stale-graph-input":
            static_input.copy_(inputs)
        graph.replay()
        return static_output.clone()

    return run


def _images_per_second(
    run: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, device: torch.device, seconds: float
) -> float:
    """Back-to-back calls for about `seconds` (at least 3) after an untimed one; inputs already on device."""
    loop = timed_loop(lambda: run(inputs), seconds, wait=lambda: synchronize(device))
    return loop.per_second(inputs.shape[0])


def check_onnx(check: Check, section: Section, compared: Compared | None) -> None:
    """Export the model as `alexnet export onnx` does; ONNX Runtime (CPU, and CUDA where onnxruntime-gpu is
    installed) against PyTorch FP32 on the CPU, on the real images, at each batch size."""
    if compared is None:
        raise Skip("no trained model (the training loop part did not run or failed; or pass --model DIR)")
    from common.onnx_session import create_session
    from export.onnx_export import export_onnx

    card = compared.card
    if check.fault == "wrong-mean":
        card = dataclasses.replace(card, mean=WRONG_MEAN, std=WRONG_STD)
    started = time.perf_counter()
    onnx_path = export_onnx(compared.network, card, check.scratch / "onnx" / "model.onnx")
    section.results["export_seconds"] = round(time.perf_counter() - started, 1)
    section.results["onnx_mb"] = round(onnx_path.stat().st_size / 1e6, 1)
    import onnxruntime

    devices = ["cpu"]
    if check.on_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        devices.append("cuda")
    else:
        section.reason = "ONNX Runtime on the GPU not checked: onnxruntime-gpu is not installed"
    failures = []
    for device in devices:
        session = create_session(onnx_path, device=device, tensorrt=False)
        output, input_name = session.get_outputs()[0].name, session.get_inputs()[0].name

        def run(pixels: np.ndarray, session=session, output=output, input_name=input_name) -> np.ndarray:
            if check.fault == "swap-channels":
                pixels = pixels[..., ::-1]
            return log_probabilities(session.run([output], {input_name: np.ascontiguousarray(pixels)})[0])

        # The CUDA provider computes convolutions with TF32 where cuDNN allows it (its default).
        bound = FP32_BOUND if device == "cpu" else TF32_BOUND
        for batch in check.sizes.parity_batches:
            key = f"onnxruntime {device}, batch {batch}"
            agreements = [
                compare_logits(name, compared.reference[name], run_in_batches(run, pixels, batch), bound)
                for name, pixels in compared.images.items()
            ]
            section.results[key] = {agreement.images: agreement.as_dict() for agreement in agreements}
            failures += [f"{key}, {a.line()}" for a in agreements if not a.passed]
    check.log("   " + "; ".join(a.line() for a in agreements))
    if failures:
        raise Failure(
            "ONNX Runtime disagrees with PyTorch: " + "; ".join(failures[:4]) + and_more(failures, 4)
        )


def check_tensorrt(check: Check, section: Section, compared: Compared | None) -> None:
    """A TensorRT engine (FP32 without TF32, and FP16) from the ONNX export, against CPU FP32 logits."""
    if not check.on_gpu or importlib.util.find_spec("tensorrt") is None:
        raise Skip("needs a GPU and TensorRT (pip install '.[tensorrt]')" if check.on_gpu else "no GPU")
    if compared is None:
        raise Skip("no trained model (the training loop part did not run or failed; or pass --model DIR)")
    from export.onnx_export import export_onnx
    from triton_repository.layout import INPUT_NAME, ONNX_FILE, OUTPUT_NAME
    from triton_repository.tensorrt_engine import EngineSpec, build_engine

    card = compared.card
    onnx_path = check.scratch / "onnx" / ONNX_FILE
    if not onnx_path.is_file() or check.fault == "wrong-mean":
        export_onnx(compared.network, card, onnx_path)
    max_batch = max(check.sizes.parity_batches)
    failures = []
    for fp16 in (False, True):
        spec = EngineSpec(onnx_path, INPUT_NAME, (card.image_size, card.image_size, 3), max_batch, fp16)
        run = _TensorRTRunner(build_engine(spec), INPUT_NAME, OUTPUT_NAME, check.fault)
        name = "fp16" if fp16 else "fp32 (TF32 off)"
        agreements = [
            compare_logits(
                images, compared.reference[images], run_in_batches(run, pixels, max_batch),
                BF16_BOUND if fp16 else GPU_FP32_BOUND,
            )
            for images, pixels in compared.images.items()
        ]  # fmt: skip
        section.results[name] = {agreement.images: agreement.as_dict() for agreement in agreements}
        failures += [f"TensorRT {name}, {a.line()}" for a in agreements if not a.passed]
    if failures:
        raise Failure("TensorRT disagrees with PyTorch: " + "; ".join(failures))


class _TensorRTRunner:
    """Run a serialized engine on uint8 pixels (CUDA buffers from torch) on its own stream."""

    def __init__(self, plan: bytes, input_name: str, output_name: str, fault: str | None) -> None:
        import tensorrt as trt

        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.input_name, self.output_name, self.fault = input_name, output_name, fault

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.fault == "swap-channels":
            pixels = pixels[..., ::-1]
        with torch.cuda.stream(self.stream):
            inputs = torch.from_numpy(np.ascontiguousarray(pixels)).cuda()
            self.context.set_input_shape(self.input_name, tuple(inputs.shape))
            shape = tuple(self.context.get_tensor_shape(self.output_name))
            outputs = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input_name, inputs.data_ptr())
            self.context.set_tensor_address(self.output_name, outputs.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise Failure("TensorRT failed to run the engine")
            result = outputs.cpu()
        return log_probabilities(result.numpy())
