"""The prepared GPU check: every GPU path this project has that a bare GPU machine can run, in one command.

    make gpu-check                     # = PYTHONPATH=. python3 -m export.gpu_check
    OUT=/some/folder make gpu-check    # the report (gpu_check.json) and the log (gpu_check.log) go there

On a machine with a CUDA GPU it measures and checks, each part within its own time budget and all of it
within --budget-s (480 s by default):
- the JPEG decode of the data path on the GPU (torchvision.io.decode_jpeg) against the CPU's (Pillow);
- the real training loop for a short epoch on synthetic data, its checkpoint, a resume to a second epoch
  and the hand-off files; DDP over NCCL at world size 1 against the same step without DDP;
- the exported network's PyTorch twin (uint8 pixels in, probabilities out) on the GPU: eager FP32, bf16
  autocast, torch.compile and CUDA graphs at batch 1/64/256, images/s and agreement with CPU FP32;
- the ONNX export of the GPU-trained model and its parity with ONNX Runtime on the CPU (and on the GPU where
  onnxruntime-gpu is installed); a TensorRT engine where TensorRT is installed;
- training throughput of both architectures at 224 px, batch 256: FP32, bf16 autocast + channels_last, and
  that with torch.compile (images/s after the warm-up, peak memory).
What the machine lacks (TensorRT, onnxruntime-gpu, tritonclient, Triton, Gradio, a compiler for
torch.compile) is skipped with the reason. Without a GPU the same command runs a tiny CPU version of the
same code in well under a minute, which the test suite runs, so the check never rots. docs/gpu.md has more.

Only torch, torchvision, numpy, Pillow, onnx, onnxscript, onnxruntime and safetensors are needed: nothing
here imports tritonclient, Triton or Gradio unless they are installed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import faulthandler
import importlib.util
import json
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.machine import cpu_isa

DEFAULT_OUT = Path("artifacts") / "gpu-check"
REPORT_FILE = "gpu_check.json"
LOG_FILE = "gpu_check.log"
# One call of the check must end within 8 minutes: the parts get 7, the hard stop comes 40 s later
# (with interpreter start-up, under 8 minutes).
DEFAULT_BUDGET_S = 420.0
HARD_STOP_AFTER_BUDGET_S = 40.0
# A section starts only if at least this much of the whole budget is left (compilation is slow).
MIN_SECONDS_TO_START = 20.0
# bf16 keeps 8 bits of significand: probabilities differ from FP32 by up to ~1e-2.
BF16_TOLERANCE = 3e-2
# PyTorch runs FP32 convolutions on cuDNN with TF32 allowed (torch.backends.cudnn.allow_tf32 defaults to
# True): a 10-bit mantissa, so probabilities differ from the CPU's FP32 by up to ~1e-3.
GPU_FP32_TOLERANCE = 3e-3
# nvJPEG and libjpeg-turbo (Pillow) differ in their IDCT and chroma upsampling by a level or two; a wrong
# colour space or channel order shows up as tens.
JPEG_MEAN_ABS_DIFF_LIMIT = 3.0


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the real sizes on a GPU, tiny ones on a CPU."""

    image_size: int
    train_batch: int
    train_steps: int
    loop_images: int  # synthetic training images for the loop's epoch
    loop_batch: int
    inference_batches: tuple[int, ...]
    inference_seconds: float  # timed per variant and batch size
    jpeg_images: int
    jpeg_size: int
    parity_batches: tuple[int, ...]


GPU_SIZES = Sizes(224, 256, 20, 2048, 256, (1, 64, 256), 1.0, 512, 256, (1, 7, 64))
CPU_SIZES = Sizes(64, 4, 1, 16, 16, (1, 4), 0.05, 16, 64, (1, 3))


@dataclass
class Section:
    name: str
    status: str = "passed"  # "passed", "failed" or "skipped"
    reason: str = ""
    seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):
    """This part cannot run here; the message says why."""


class Failure(Exception):
    """This part ran and a check failed; the message says which."""


class Check:
    """Runs the sections within the budget, logging to the console and the log file, rewriting the JSON
    report after each section (so that a run cut short still leaves what it found)."""

    def __init__(self, out: Path, budget_s: float, device: torch.device, sizes: Sizes) -> None:
        self.out, self.budget_s, self.device, self.sizes = out, budget_s, device, sizes
        self.started = time.monotonic()
        self.section_deadline = self.started
        self.console = sys.stdout  # parts' own prints go to the log only
        self.sections: list[Section] = []
        self.environment: dict[str, Any] = {}
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / LOG_FILE, "w", buffering=1)  # noqa: SIM115 (open for the whole run)
        self.scratch = Path(tempfile.mkdtemp(prefix="alexnet-gpu-check-"))  # big files stay out of OUT

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def log(self, message: str) -> None:
        print(message, file=self.console, flush=True)
        self.log_file.write(message + "\n")

    def in_time(self) -> bool:
        """For the loops inside a part: True while its own share and the whole budget last."""
        now = time.monotonic()
        return now < self.section_deadline and now - self.started < self.budget_s

    def run(self, name: str, budget_s: float, part: Callable[[Section], None]) -> Section:
        """Run one part if `budget_s` (its share) fits in what is left; record how it went."""
        section = Section(name)
        started = time.monotonic()
        if self.left() < min(budget_s, MIN_SECONDS_TO_START):
            section.status, section.reason = (
                "skipped",
                f"out of time ({self.left():.0f} s of the budget left)",
            )
        else:
            self.log(f"== {name} (budget {budget_s:.0f} s, {self.left():.0f} s left)")
            self.section_deadline = started + budget_s
            try:
                with contextlib.redirect_stdout(self.log_file):  # the loop's own lines go to the log only
                    part(section)
            except Skip as skip:
                section.status, section.reason = "skipped", str(skip)
            except Exception as error:  # noqa: BLE001 (one broken part must not hide the others)
                section.status, section.reason = "failed", f"{type(error).__name__}: {error}"
                self.log_file.write(traceback.format_exc())
        section.seconds = round(time.monotonic() - started, 1)
        self.sections.append(section)
        self.log(
            f"   {section.status}{': ' + section.reason if section.reason else ''} ({section.seconds} s)"
        )
        for key, value in section.results.items():
            self.log(f"   {key}: {json.dumps(value)}")
        self.write_report()
        return section

    def write_report(self) -> None:
        report = {
            "mode": "gpu" if self.on_gpu else "cpu",
            "environment": self.environment,
            "budget_s": self.budget_s,
            "seconds": round(time.monotonic() - self.started, 1),
            "passed": not any(section.status == "failed" for section in self.sections),
            "sections": [section.__dict__ for section in self.sections],
        }
        tmp = self.out / f".{REPORT_FILE}.tmp"
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        os.replace(tmp, self.out / REPORT_FILE)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
        self.log_file.close()


# --- the machine ----------------------------------------------------------------------------------------


OPTIONAL = {
    "tensorrt": "TensorRT engines (`alexnet export tensorrt`)",
    "tritonclient": "the Triton client, repository writer and `alexnet serve`",
    "pytriton": "the Triton server binary (nvidia-pytriton)",
    "gradio": "the demo",
}


def describe_machine(check: Check, section: Section) -> None:
    import torchvision

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "isa": cpu_isa(),
        "device": str(check.device),
    }
    if check.on_gpu:
        properties = torch.cuda.get_device_properties(check.device)
        env |= {
            "gpu": properties.name,
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "compute_capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "nccl": _version_text(torch.cuda.nccl.version()),
            "bf16": torch.cuda.is_bf16_supported(),
        }
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    env["missing"] = {name: why for name, why in OPTIONAL.items() if importlib.util.find_spec(name) is None}
    check.environment = env
    section.results = {key: env[key] for key in ("python", "torch", "device", "missing")}


def _version_text(version: Any) -> str:
    return ".".join(map(str, version)) if isinstance(version, tuple | list) else str(version)


# --- the data path: JPEG decode -------------------------------------------------------------------------


def check_jpeg_decode(check: Check, section: Section) -> None:
    """torchvision.io.decode_jpeg on the GPU against the training data path's decode (Pillow), images/s."""
    from PIL import Image

    from training.data import read_rgb

    sizes = check.sizes
    folder = check.scratch / "jpeg"
    folder.mkdir()
    paths = []
    for index, pixels in enumerate(_photo_like(sizes.jpeg_images, sizes.jpeg_size)):
        path = folder / f"{index:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    started = time.perf_counter()
    cpu = [np.asarray(read_rgb(path)) for path in paths]
    cpu_seconds = time.perf_counter() - started
    section.results["cpu_pillow_images_per_s"] = round(len(paths) / cpu_seconds, 1)
    if not check.on_gpu:
        raise Skip(f"no GPU: decoded {len(paths)} JPEGs on the CPU only")
    from torchvision.io import decode_jpeg, read_file

    encoded = [read_file(str(path)) for path in paths]
    decode_jpeg(encoded[:8], device=check.device)  # nvJPEG's start-up
    torch.cuda.synchronize(check.device)
    started = time.perf_counter()
    gpu = decode_jpeg(encoded, device=check.device)
    torch.cuda.synchronize(check.device)
    gpu_seconds = time.perf_counter() - started
    differences = [
        np.abs(image.permute(1, 2, 0).cpu().numpy().astype(np.int16) - reference.astype(np.int16))
        for image, reference in zip(gpu, cpu, strict=True)
    ]
    mean_abs = float(np.mean([d.mean() for d in differences]))
    section.results |= {
        "gpu_nvjpeg_images_per_s": round(len(paths) / gpu_seconds, 1),
        "gpu_vs_cpu_speed": round(cpu_seconds / gpu_seconds, 2),
        "mean_abs_diff": round(mean_abs, 3),
        "max_abs_diff": int(max(d.max() for d in differences)),
    }
    if mean_abs > JPEG_MEAN_ABS_DIFF_LIMIT:
        raise Failure(f"GPU-decoded pixels differ from Pillow's by {mean_abs:.2f} on average")


def _photo_like(count: int, size: int) -> list[np.ndarray]:
    """Smooth gradients with some noise: JPEG-friendly, unlike uniform noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(0, 255, 3)
        base = a * ramp[None, :, None] + b * ramp[:, None, None] + c * (1 - ramp[None, :, None])
        noisy = base / 3 + rng.normal(0, 8, (size, size, 3))
        images.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return images


# --- the real training loop, resume, DDP ----------------------------------------------------------------


def check_training_loop(check: Check, section: Section) -> Path:
    """One short epoch of `alexnet train` on synthetic data, then a resume to a second epoch."""
    from common.model_card import CHECKPOINT_FILE, ModelCard
    from training.config import TrainConfig
    from training.loop import main

    sizes = check.sizes
    out = check.scratch / "run"
    config = TrainConfig(
        data="synthetic",
        out=str(out),
        epochs=1,
        batch_size=sizes.loop_batch,
        image_size=sizes.image_size,
        synthetic_size=sizes.loop_images,
        device=check.device.type,
        warmup_epochs=0.0,
    )
    started = time.perf_counter()
    main(config)
    first_seconds = time.perf_counter() - started
    checkpoint = torch.load(out / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    if checkpoint["epoch"] != 1:
        raise Failure(f"the checkpoint after one epoch says epoch {checkpoint['epoch']}")
    started = time.perf_counter()
    main(dataclasses.replace(config, epochs=2, resume=True), checkpoint)
    second_seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    card = ModelCard.load(out)
    missing = [
        name for name in ("model.safetensors", "model.json", CHECKPOINT_FILE) if not (out / name).is_file()
    ]
    section.results = {
        "epochs": [r["epoch"] for r in records],
        "images_per_s": [r["images_per_s"] for r in records],
        "warm_up_seconds": [r.get("warm_up_seconds") for r in records],
        "session_seconds": [round(first_seconds, 1), round(second_seconds, 1)],
        "device": card.training["device"],
        "precision": card.training["precision"],
    }
    if [r["epoch"] for r in records] != [1, 2] or missing or card.training["epochs"] != 2:
        raise Failure(f"the resumed run is incomplete: epochs {section.results['epochs']}, missing {missing}")
    if card.training["device"] != check.device.type:
        raise Failure(f"trained on {card.training['device']}, not on {check.device.type}")
    return out


def check_ddp(check: Check, section: Section) -> None:
    """DistributedDataParallel at world size 1 (NCCL on the GPU, gloo on the CPU): one training step must
    give the same weights as the same step without DDP."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training.engine import train_step
    from training.model import build_model
    from training.precision import Precision

    backend = "nccl" if check.on_gpu else "gloo"
    extra = {"device_id": check.device} if check.on_gpu else {}
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, **extra
    )
    try:
        torch.manual_seed(0)
        plain = build_model("torchvision", 10).to(check.device)
        wrapped = DistributedDataParallel(
            copy.deepcopy(plain), device_ids=[check.device.index] if check.on_gpu else None
        )
        images = torch.randn(check.sizes.train_batch, 3, check.sizes.image_size, check.sizes.image_size)
        labels = torch.randint(0, 10, (check.sizes.train_batch,))
        images, labels = images.to(check.device), labels.to(check.device)
        for model in (plain, wrapped):
            torch.manual_seed(1)  # the same dropout masks for both
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            train_step(model, images, labels, optimizer, Precision(device_type=check.device.type))
        total = torch.ones(1, device=check.device)
        dist.all_reduce(total)
        difference = max(
            (a - b).abs().max().item()
            for a, b in zip(plain.parameters(), wrapped.module.parameters(), strict=True)
        )
    finally:
        dist.destroy_process_group()
    section.results = {"backend": backend, "all_reduce": total.item(), "max_weight_diff": difference}
    if total.item() != 1.0 or difference > 1e-4:
        raise Failure(f"DDP's step differs from the plain one by {difference:.2e}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- inference: the exported network's PyTorch twin -----------------------------------------------------


def check_inference(check: Check, section: Section, model_dir: Path | None) -> None:
    """PixelsToProbabilities (what the ONNX graph computes) on the device: eager FP32, bf16, compiled and
    CUDA graphs; images/s per batch size and agreement with CPU FP32."""
    from export.onnx_export import PixelsToProbabilities
    from export.parity import compare_outputs, random_pixels
    from training.model_dir import load_model_dir

    if model_dir is None:
        raise Skip("the training loop produced no model")
    network, card = load_model_dir(model_dir, device="cpu")
    reference_model = PixelsToProbabilities(network, card).eval()
    sizes = check.sizes
    pixels = random_pixels(max(sizes.inference_batches), card.image_size, seed=0)
    with torch.inference_mode():
        reference = reference_model(torch.from_numpy(pixels)).numpy()
    model = copy.deepcopy(reference_model).to(check.device)
    variants: dict[str, tuple[Callable[[int], Callable[[torch.Tensor], torch.Tensor]], float]] = {
        "eager fp32": (lambda batch: model, GPU_FP32_TOLERANCE),
    }
    if check.on_gpu:
        variants["bf16 autocast"] = (lambda batch: _autocast(model, check.device), BF16_TOLERANCE)
        variants["CUDA graph fp32"] = (
            lambda batch: _cuda_graph(model, batch, pixels, check.device),
            GPU_FP32_TOLERANCE,
        )
        # Last, as compiling takes longest; a dynamic batch axis: one graph for 64 and 256, one for 1.
        compiled = torch.compile(model, dynamic=True)
        variants["torch.compile fp32"] = (lambda batch: compiled, GPU_FP32_TOLERANCE)
    else:
        # bf16 on a CPU without AMX is emulated and slow, and no CPU path of ours uses it.
        section.reason = "no GPU: eager FP32 only (bf16, torch.compile and CUDA graphs are GPU paths)"
    for name, (prepare, tolerance) in variants.items():
        for batch in sizes.inference_batches:
            if not check.in_time():
                section.results[f"{name}, batch {batch}"] = "not run: out of time"
                continue
            inputs = torch.from_numpy(pixels[:batch]).to(check.device)
            with torch.inference_mode():
                run = prepare(batch)
                outputs = run(inputs).float().cpu().numpy()
                images_per_s = _images_per_second(run, inputs, check.device, sizes.inference_seconds)
            parity = compare_outputs(name, reference[:batch], outputs, tolerance)
            section.results[f"{name}, batch {batch}"] = {
                "images_per_s": round(images_per_s, 1),
                "max_abs_diff_vs_cpu_fp32": float(f"{parity.max_abs_diff:.3g}"),
                "top1_agreement": parity.top1_agreement,
                "passed": parity.passed,
            }
            if not parity.passed:
                section.status = "failed"
    if section.status == "failed":
        raise Failure("some variants disagree with CPU FP32 beyond their tolerance (see the results)")


def _autocast(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(inputs)

    return run


def _cuda_graph(
    model: torch.nn.Module, batch: int, pixels: np.ndarray, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model captured as one CUDA graph for `batch` (a static input buffer, replayed per call)."""
    static_input = torch.from_numpy(pixels[:batch]).to(device)
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
        static_input.copy_(inputs)
        graph.replay()
        return static_output

    return run


def _images_per_second(
    run: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, device: torch.device, seconds: float
) -> float:
    """Back-to-back calls for about `seconds` (at least 3) after an untimed one; inputs already on device."""
    run(inputs)
    _synchronize(device)
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        run(inputs)
        calls += 1
    _synchronize(device)
    return calls * inputs.shape[0] / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- ONNX export of the trained model, ONNX Runtime parity ----------------------------------------------


def check_onnx(check: Check, section: Section, model_dir: Path | None) -> None:
    """Export the GPU-trained model as `alexnet export onnx` does; ONNX Runtime (CPU, and CUDA where
    onnxruntime-gpu is installed) against PyTorch FP32 on the CPU."""
    from common.onnx_session import create_session
    from export.onnx_export import PixelsToProbabilities, export_onnx
    from export.parity import FP32_TOLERANCE, check_parity
    from training.model_dir import load_model_dir

    if model_dir is None:
        raise Skip("the training loop produced no model")
    network, card = load_model_dir(model_dir, device="cpu")
    started = time.perf_counter()
    onnx_path = export_onnx(network, card, check.scratch / "onnx" / "model.onnx")
    section.results["export_seconds"] = round(time.perf_counter() - started, 1)
    section.results["onnx_mb"] = round(onnx_path.stat().st_size / 1e6, 1)
    reference_model = PixelsToProbabilities(network, card).eval()

    def reference(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return reference_model(torch.from_numpy(np.ascontiguousarray(pixels))).numpy()

    import onnxruntime

    devices = ["cpu"]
    if check.on_gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        devices.append("cuda")
    else:
        section.reason = "ONNX Runtime on the GPU not checked: onnxruntime-gpu is not installed"
    for device in devices:
        session = create_session(onnx_path, device=device, tensorrt=False)
        output = session.get_outputs()[0].name
        input_name = session.get_inputs()[0].name
        report = check_parity(
            reference,
            lambda pixels, session=session, output=output, input_name=input_name: session.run(
                [output], {input_name: pixels}
            )[0],
            images=np.empty((0,)),
            images_name="",
            image_size=card.image_size,
            batch_sizes=check.sizes.parity_batches,
            max_batch_size=max(check.sizes.parity_batches),
            tolerance=FP32_TOLERANCE if device == "cpu" else GPU_FP32_TOLERANCE,
            reference_name="PyTorch FP32 (CPU)",
            candidate_name=f"ONNX Runtime {session.get_providers()[0]}",
        )
        section.results[f"onnxruntime_{device}"] = report.as_dict()
        check.log(report.summary())
        if not report.passed:
            raise Failure(f"ONNX Runtime ({device}) disagrees with PyTorch: {report.failures()}")


def check_tensorrt(check: Check, section: Section, model_dir: Path | None) -> None:
    """A TensorRT engine (FP32 without TF32, and FP16) from the ONNX export, against ONNX Runtime FP32."""
    missing = [name for name in ("tensorrt", "tritonclient") if importlib.util.find_spec(name) is None]
    if not check.on_gpu or missing:
        raise Skip("needs a GPU and " + ", ".join(missing or ["a GPU"]) + " (pip install '.[tensorrt]')")
    if model_dir is None:
        raise Skip("the training loop produced no model")
    from common.onnx_session import create_session
    from export.onnx_export import export_onnx
    from export.parity import check_parity
    from export.tensorrt_build import (
        TENSORRT_FP16_TOLERANCE,
        TENSORRT_FP32_TOLERANCE,
        TensorRTClassifier,
        build_engine,
    )
    from training.model_dir import load_model_dir
    from triton_repository.layout import ONNX_FILE

    network, card = load_model_dir(model_dir, device="cpu")
    onnx_path = check.scratch / "onnx" / ONNX_FILE
    if not onnx_path.is_file():
        export_onnx(network, card, onnx_path)
    session = create_session(onnx_path, device="cpu")
    output, input_name = session.get_outputs()[0].name, session.get_inputs()[0].name
    batches = check.sizes.parity_batches
    for fp16 in (False, True):
        plan = build_engine(onnx_path, image_size=card.image_size, max_batch_size=max(batches), fp16=fp16)
        report = check_parity(
            lambda pixels: session.run([output], {input_name: pixels})[0],
            TensorRTClassifier(plan),
            images=np.empty((0,)),
            images_name="",
            image_size=card.image_size,
            batch_sizes=batches,
            max_batch_size=max(batches),
            tolerance=TENSORRT_FP16_TOLERANCE if fp16 else TENSORRT_FP32_TOLERANCE,
            reference_name="ONNX Runtime FP32 (CPU)",
            candidate_name=f"TensorRT {'FP16' if fp16 else 'FP32'}",
        )
        section.results["fp16" if fp16 else "fp32"] = report.as_dict()
        check.log(report.summary())
        if not report.passed:
            raise Failure(f"TensorRT disagrees with ONNX Runtime: {report.failures()}")


# --- training throughput --------------------------------------------------------------------------------


def check_training_throughput(check: Check, section: Section) -> None:
    """Both architectures: FP32, bf16 autocast + channels_last, and that compiled (images/s, peak memory)."""
    from training.bench import bench_one
    from training.precision import Precision

    fp32 = Precision(device_type=check.device.type)
    if check.on_gpu:
        fast = Precision.choose(check.device, amp=True, channels_last=True)
        architectures = ("torchvision", "paper")
        # Every uncompiled figure first: compiling is what may run out of time.
        runs = [(a, p, False) for a in architectures for p in (fp32, fast)] + [
            (a, fast, True) for a in architectures
        ]
    else:
        section.reason = "no GPU: the torchvision network in FP32 only (the rest are GPU paths)"
        runs = [("torchvision", fp32, False)]
    for architecture, precision, compiled in runs:
        name = f"{architecture}, {precision.name}" + (" + torch.compile" if compiled else "")
        if check.left() < (90 if compiled else 15):
            section.results[name] = "not run: out of time"
            continue
        try:
            row = bench_one(
                architecture,
                check.device,
                precision,
                batch_size=check.sizes.train_batch,
                image_size=check.sizes.image_size,
                steps=check.sizes.train_steps,
                compile=compiled,
            )
        except Exception as error:  # noqa: BLE001 (torch.compile needs a C compiler and Triton)
            if not compiled:
                raise
            section.results[name] = f"torch.compile failed: {type(error).__name__}: {error}"[:500]
            section.status = "failed"
            continue
        keys = ("images_per_s", "ms_per_step", "warm_up_seconds", "peak_memory_gib")
        section.results[name] = {key: row[key] for key in keys}
        _release(check.device)
    if section.status == "failed":
        raise Failure("torch.compile failed for training (see the results)")


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- the whole check ------------------------------------------------------------------------------------


def run_check(out: Path, budget_s: float, device: torch.device) -> bool:
    sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    check = Check(out, budget_s, device, sizes)
    # A hard stop a little after the budget, whatever hangs: the report so far is already on disk.
    faulthandler.dump_traceback_later(budget_s + HARD_STOP_AFTER_BUDGET_S, exit=True, file=check.log_file)
    try:
        check.log(f"alexnet GPU check on {device} ({'GPU' if check.on_gpu else 'tiny CPU'} version)")
        check.run("machine", 10, lambda s: describe_machine(check, s))
        check.run("jpeg decode", 30 if check.on_gpu else 10, lambda s: check_jpeg_decode(check, s))
        model_dir: list[Path] = []
        check.run("training loop", 100, lambda s: model_dir.append(check_training_loop(check, s)))
        trained = model_dir[0] if model_dir else None
        check.run("ddp", 30, lambda s: check_ddp(check, s))
        check.run("inference", 90, lambda s: check_inference(check, s, trained))
        check.run("onnx export", 60, lambda s: check_onnx(check, s, trained))
        check.run("tensorrt", 120, lambda s: check_tensorrt(check, s, trained))
        check.run("training throughput", 150, lambda s: check_training_throughput(check, s))
        # Proof that none of what the GPU machine lacks was needed (where it is installed, as here).
        check.environment["imported"] = sorted(name for name in OPTIONAL if name in sys.modules)
        check.write_report()
        passed = not any(section.status == "failed" for section in check.sections)
        verdicts = ", ".join(f"{s.name} {s.status}" for s in check.sections)
        check.log(
            f"{'PASSED' if passed else 'FAILED'} in {time.monotonic() - check.started:.0f} s: {verdicts}"
        )
        check.log(f"report: {out / REPORT_FILE}, log: {out / LOG_FILE}")
        return passed
    finally:
        faulthandler.cancel_dump_traceback_later()
        check.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.gpu_check",
        description="Run every GPU path that this machine can run (a tiny CPU version without a GPU).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or DEFAULT_OUT),
        help=f"folder for {REPORT_FILE} and {LOG_FILE} (default: $OUT, else {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole check"
    )
    args = parser.parse_args(argv)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return 0 if run_check(args.out, args.budget_s, device) else 1


if __name__ == "__main__":
    sys.exit(main())
