"""The prepared GPU check: every GPU path this project has that a bare GPU machine can run, in one command.

    make gpu-check                                    # = PYTHONPATH=. python3 -m export.gpu_check
    OUT=/some/folder make gpu-check                   # gpu_check.json and gpu_check.log go there
    make gpu-check ARGS='--inject-fault swap-channels'   # prove that the comparisons can fail

On a machine with a CUDA GPU it measures and checks, each part within its own time budget and all of it
within --budget-s (420 s by default):
- the JPEG decode of the data path on the GPU (torchvision.io.decode_jpeg) against the CPU's (Pillow);
- the real training loop on the real data path (a folder of JPEGs, decoded by DataLoader workers): scikit-
  learn's digits, trained until the model is confident, checkpointed, resumed for a last epoch; a run
  started on the CPU resumed on the GPU with channels_last; DDP over NCCL at world size 1;
- the exported network's PyTorch twin (uint8 pixels in) on the GPU: FP32 with TF32 off and on, bf16
  autocast, a CUDA graph and torch.compile at batch 1/64/256, against CPU FP32 on real images (digits and
  two colour photographs): logits within a bound relative to their spread, and the same top-1;
- the ONNX export of that model and ONNX Runtime against PyTorch FP32 on the same images (and on the GPU
  where onnxruntime-gpu is installed); a TensorRT engine where TensorRT is installed;
- training throughput of both architectures at 224 px, batch 256: FP32, bf16 autocast + channels_last, and
  that with torch.compile (images/s after the warm-up, peak memory).
What the machine lacks (TensorRT, onnxruntime-gpu, tritonclient, Triton, Gradio, a C compiler for
torch.compile) is skipped with the reason. Without a GPU the same command runs a tiny CPU version of the
same code, which the test suite runs, so the check never rots. `--inject-fault` plants a known bug in the
compared side (a swapped channel order, a wrong mean, a CUDA graph replaying a stale input) and the check
must then fail, naming what disagreed. docs/gpu.md has more.

Only torch, torchvision, numpy, Pillow, scikit-learn, onnx, onnxscript, onnxruntime and safetensors are
needed: nothing here imports tritonclient, Triton or Gradio unless they are installed.
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
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.machine import cpu_isa
from common.ports import free_port

DEFAULT_OUT = Path("artifacts") / "gpu-check"
REPORT_FILE = "gpu_check.json"
LOG_FILE = "gpu_check.log"
# One call of the check must end within 8 minutes: the parts get 7, the hard stop comes 40 s later
# (with interpreter start-up, under 8 minutes).
DEFAULT_BUDGET_S = 420.0
HARD_STOP_AFTER_BUDGET_S = 40.0
# A section starts only if at least this much of the whole budget is left (compilation is slow).
MIN_SECONDS_TO_START = 20.0

# Agreement is measured on logits, relative to their spread (the largest minus the smallest logit of the
# image, as the reference computes them): a bound that means the same for a confident model (logits apart
# by tens) as for a hesitant one. Each bound sits between the noise of the precision it is for and what
# a real bug does, an order of magnitude or more from each (docs/gpu.md has the measurements: a swapped
# channel order or a wrong mean moves the logits by about half their spread, bf16 by under 1%).
FP32_BOUND = 1e-4  # two float32 implementations on the CPU (PyTorch's kernels, ONNX Runtime's)
GPU_FP32_BOUND = 1e-3  # the GPU with TF32 off: autotuned cuDNN may pick Winograd or FFT convolutions
TF32_BOUND = 1e-2  # TF32 rounds inputs to a 10-bit mantissa (relative error ~5e-4 per product)
BF16_BOUND = 5e-2  # bf16 keeps 8 bits of significand (relative error ~4e-3 per value)
# nvJPEG and libjpeg-turbo (Pillow) differ in their IDCT and chroma upsampling by a level or two; a wrong
# colour space or channel order shows up as tens.
JPEG_MEAN_ABS_DIFF_LIMIT = 3.0
# The bugs --inject-fault plants in the compared side (never in the reference).
FAULTS = {
    "swap-channels": "the compared side gets BGR pixels (a decoder or client that hands over BGR)",
    "wrong-mean": "the compared side normalises with mean 0.5 and std 0.5 (the Normalize(0.5, 0.5) habit)",
    "stale-graph-input": "the CUDA graph replays without copying the new batch into its input buffer",
}
WRONG_MEAN, WRONG_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
PARTS = (
    "machine",
    "jpeg decode",
    "training loop",
    "resume on the gpu",
    "ddp",
    "inference",
    "onnx export",
    "tensorrt",
    "training throughput",
)


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the real sizes on a GPU, tiny ones on a CPU."""

    image_size: int
    train_batch: int  # training throughput
    train_steps: int
    digits_file_size: int  # the side of the digit JPEGs the training loop reads
    digits_per_class: tuple[int, int] | None  # (train, val) digits per class written; None: all 1,797
    loop_batch: int
    loop_epochs: tuple[int, int]  # epochs of the first session, and in all after the resume
    inference_batches: tuple[int, ...]
    inference_seconds: float  # timed per variant and batch size
    compared_digits: int  # validation digits the inference and ONNX parts compare on (at most)
    compared_photos: int  # crops of scikit-learn's two colour photographs
    jpeg_images: int
    jpeg_size: int
    parity_batches: tuple[int, ...]


GPU_SIZES = Sizes(
    image_size=224,
    train_batch=256,
    train_steps=20,
    digits_file_size=256,
    digits_per_class=None,
    loop_batch=64,
    loop_epochs=(4, 5),  # the quickstart recipe: ~99% validation top-1 after 5 epochs
    inference_batches=(1, 64, 256),
    inference_seconds=1.0,
    compared_digits=360,
    compared_photos=64,
    jpeg_images=512,
    jpeg_size=256,
    parity_batches=(1, 7, 64),
)
CPU_SIZES = Sizes(
    image_size=64,
    train_batch=4,
    train_steps=1,
    digits_file_size=80,
    digits_per_class=(8, 4),
    loop_batch=16,
    loop_epochs=(1, 2),
    inference_batches=(1, 4),
    inference_seconds=0.05,
    compared_digits=64,
    compared_photos=16,
    jpeg_images=16,
    jpeg_size=64,
    parity_batches=(1, 3),
)


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


@dataclass
class Compared:
    """The model the inference and ONNX parts compare, and the real images they compare it on."""

    network: nn.Module  # on the CPU, eval mode
    card: Any  # common.model_card.ModelCard
    source: str  # where it came from
    images: dict[str, np.ndarray]  # name -> uint8 [N, S, S, 3]
    reference: dict[str, np.ndarray]  # name -> CPU FP32 logits [N, classes]


# --- the CUDA/cuDNN settings each part states ------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """cuDNN's autotuner and TF32, set explicitly by every part that runs on the GPU (never inherited from
    the part before). PyTorch's defaults: no autotuning, TF32 in cuDNN convolutions, not in matmuls."""

    benchmark: bool = False
    conv_tf32: bool = True
    matmul_tf32: bool = False

    def label(self, on_gpu: bool) -> str:
        """How float32 really runs under these settings."""
        if not on_gpu:
            return "float32"
        if self.conv_tf32 and self.matmul_tf32:
            return "float32 with TF32 (convolutions and matmuls)"
        if self.conv_tf32:
            return "float32 with TF32 convolutions (PyTorch's default)"
        return "float32 (TF32 off)"


STRICT_FP32 = Backend(benchmark=True, conv_tf32=False, matmul_tf32=False)
TF32 = Backend(benchmark=True, conv_tf32=True, matmul_tf32=True)
TRAINING = Backend(benchmark=True)  # as `alexnet train` runs: cuDNN autotunes its fixed-size batches


def current_backend() -> Backend:
    return Backend(
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    )


@contextlib.contextmanager
def backend(settings: Backend) -> Iterator[Backend]:
    """Run with `settings`, and put back whatever was set before."""
    saved = current_backend()
    _apply(settings)
    try:
        yield settings
    finally:
        _apply(saved)


def _apply(settings: Backend) -> None:
    torch.backends.cudnn.benchmark = settings.benchmark
    torch.backends.cudnn.allow_tf32 = settings.conv_tf32
    torch.backends.cuda.matmul.allow_tf32 = settings.matmul_tf32


# --- running the parts ------------------------------------------------------------------------------------


class Check:
    """Runs the sections within the budget, logging to the console and the log file, rewriting the JSON
    report after each section (so that a run cut short still leaves what it found)."""

    def __init__(
        self, out: Path, budget_s: float, device: torch.device, sizes: Sizes, fault: str | None = None
    ) -> None:
        self.out, self.budget_s, self.device, self.sizes, self.fault = out, budget_s, device, sizes, fault
        self.started = time.monotonic()
        self.section_deadline = self.started
        self.console = sys.stdout  # parts' own prints go to the log only
        self.sections: list[Section] = []
        self.running: Section | None = None
        self.environment: dict[str, Any] = {}
        self.lock = threading.Lock()  # the report is written by the parts and by the hard stop
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
            self.running = section
            try:
                # Each part sets the cuDNN/TF32 settings it runs with; none leaks into the next.
                with backend(current_backend()), contextlib.redirect_stdout(self.log_file):
                    part(section)
            except Skip as skip:
                section.status, section.reason = "skipped", str(skip)
            except Exception as error:  # noqa: BLE001 (one broken part must not hide the others)
                section.status, section.reason = "failed", f"{type(error).__name__}: {error}"
                self.log_file.write(traceback.format_exc())
            finally:
                self.running = None
        section.seconds = round(time.monotonic() - started, 1)
        with self.lock:
            self.sections.append(section)
        self.log(
            f"   {section.status}{': ' + section.reason if section.reason else ''} ({section.seconds} s)"
        )
        for key, value in section.results.items():
            self.log(f"   {key}: {json.dumps(value, default=str)}")
        self.write_report()
        return section

    def report(self) -> dict[str, Any]:
        return {
            "mode": "gpu" if self.on_gpu else "cpu",
            "environment": self.environment,
            "injected_fault": self.fault,
            "budget_s": self.budget_s,
            "seconds": round(time.monotonic() - self.started, 1),
            "passed": not any(section.status == "failed" for section in self.sections),
            "sections": [dataclasses.asdict(section) for section in self.sections],
        }

    def write_report(self) -> None:
        with self.lock:
            report = self.report()
            tmp = self.out / f".{REPORT_FILE}.tmp"
            tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
            os.replace(tmp, self.out / REPORT_FILE)

    def hard_stop(self, after_s: float) -> None:
        """Called by the watchdog thread: the running part failed (with what it measured so far) and the
        report written, then the process ends, whatever the main thread is stuck in."""
        section = self.running
        if section is not None:
            section.status = "failed"
            section.reason = f"hard stop: still running {after_s:.0f} s after the check started"
            section.seconds = round(time.monotonic() - self.started, 1)
            with self.lock:
                self.sections.append(section)
        self.environment["imported"] = imported_optional_packages()
        self.write_report()
        verdicts = ", ".join(f"{s.name} {s.status}" for s in self.sections)
        self.log(f"FAILED: hard stop after {after_s:.0f} s; {verdicts}")
        self.log_file.flush()
        shutil.rmtree(self.scratch, ignore_errors=True)  # checkpoints of hundreds of MB
        os._exit(1)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.log_file.close()


# --- the machine ----------------------------------------------------------------------------------------


OPTIONAL = {
    "tensorrt": "TensorRT engines (`alexnet export tensorrt`)",
    "tritonclient": "the Triton client, repository writer and `alexnet serve`",
    "pytriton": "the Triton server binary (nvidia-pytriton)",
    "gradio": "the demo",
}


def imported_optional_packages() -> list[str]:
    """Which of what the GPU machine lacks this run imported (none unless a part needed it)."""
    return sorted(name for name in OPTIONAL if name in sys.modules)


def describe_machine(check: Check, section: Section) -> None:
    import torchvision

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "isa": cpu_isa(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": str(check.device),
        "torch_compile": compile_blocker() or "available",
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
    section.results = {key: env[key] for key in ("python", "torch", "device", "missing", "torch_compile")}


def _version_text(version: Any) -> str:
    return ".".join(map(str, version)) if isinstance(version, tuple | list) else str(version)


def compile_blocker() -> str | None:
    """Why torch.compile cannot build here, or None. Inductor compiles C++ (and, on GPUs, Triton's launcher)
    with the system's C compiler against Python's headers: without them every compile fails."""
    compilers = [name for name in ("cc", "gcc", "clang") if shutil.which(name)]
    if os.environ.get("CXX") and shutil.which(os.environ["CXX"]):
        compilers.append(os.environ["CXX"])
    if not compilers:
        return (
            "no C compiler (cc, gcc or clang) on PATH: torch.compile's inductor needs one (apt install gcc)"
        )
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return (
            f"no Python.h in {headers.parent}: torch.compile builds against Python's headers "
            f"(apt install python{sys.version_info.major}.{sys.version_info.minor}-dev)"
        )
    return None


# --- real images ------------------------------------------------------------------------------------------


def photo_crops(count: int, size: int, seed: int = 0) -> np.ndarray:
    """`count` square crops of scikit-learn's two colour photographs (a temple, a flower), resized to `size`:
    real colour images, where a swapped channel order shows (on the grey digits it cannot)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 4, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        crops.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8))
    return np.stack(crops)


def write_digits_folder(root: Path, file_size: int, per_class: tuple[int, int] | None) -> dict[str, int]:
    """scikit-learn's digit scans (the quickstart's fixed split) as an ImageNet-style folder of JPEGs,
    enlarged to `file_size` pixels: what `alexnet train --data DIR` reads on a GPU machine."""
    from PIL import Image

    from training.digits import load_digits_split

    split = load_digits_split()
    written = {}
    for name, images, labels, limit in (
        ("train", split.train_images, split.train_labels, per_class and per_class[0]),
        ("val", split.val_images, split.val_labels, per_class and per_class[1]),
    ):
        counts: dict[int, int] = {}
        for index, (scan, label) in enumerate(zip(images, labels, strict=True)):
            if limit and counts.get(int(label), 0) >= limit:
                continue
            counts[int(label)] = counts.get(int(label), 0) + 1
            folder = root / name / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            picture = (
                Image.fromarray(scan).convert("RGB").resize((file_size, file_size), Image.Resampling.BILINEAR)
            )
            picture.save(folder / f"{index:04d}.jpg", quality=90)
        written[name] = sum(counts.values())
    return written


# --- the data path: JPEG decode -------------------------------------------------------------------------


def check_jpeg_decode(check: Check, section: Section) -> None:
    """torchvision.io.decode_jpeg on the GPU against the training data path's decode (Pillow), images/s."""
    from PIL import Image

    from training.data import read_rgb

    sizes = check.sizes
    folder = check.scratch / "jpeg"
    folder.mkdir()
    paths = []
    for index, pixels in enumerate(photo_crops(sizes.jpeg_images, sizes.jpeg_size, seed=1)):
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
    if check.fault == "swap-channels":
        gpu = [image.flip(0) for image in gpu]
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
        raise Failure(
            f"GPU-decoded pixels differ from Pillow's by {mean_abs:.2f} levels on average "
            f"(limit {JPEG_MEAN_ABS_DIFF_LIMIT})"
        )


# --- the real training loop, resume, DDP ----------------------------------------------------------------


def check_training_loop(check: Check, section: Section) -> Path:
    """`alexnet train` on the real data path (JPEG files, DataLoader workers, pinned memory on a GPU):
    the digits as an image folder, trained to a confident model, checkpointed, then resumed for the last
    epoch from that checkpoint. Its model is the one the inference and ONNX parts compare."""
    from common.model_card import CHECKPOINT_FILE, ModelCard
    from training.config import TrainConfig
    from training.data import default_workers
    from training.loop import main

    sizes = check.sizes
    data = check.scratch / "digits"
    workers = default_workers(str(data), world_size=1)
    data_path = (
        f"ImageNet-style folder: JPEGs of {sizes.digits_file_size} px (scikit-learn's digits), "
        f"{workers} DataLoader workers" + (", pinned memory" if check.on_gpu else "")
    )
    section.results["data_path"] = data_path  # the results so far are what a hard stop reports
    started = time.perf_counter()
    written = write_digits_folder(data, sizes.digits_file_size, sizes.digits_per_class)
    section.results["data_path"] = data_path.replace(
        "JPEGs", f"{written['train']} train / {written['val']} val JPEGs"
    )
    section.results["writing_seconds"] = round(time.perf_counter() - started, 1)
    out = check.scratch / "run"
    first_epochs, all_epochs = sizes.loop_epochs
    config = TrainConfig(
        data=str(data),
        out=str(out),
        epochs=first_epochs,
        batch_size=sizes.loop_batch,
        image_size=sizes.image_size,
        augmentation="shift",  # the digits' own (no flips): the quickstart recipe on files
        device=check.device.type,
        warmup_epochs=1.0 if check.on_gpu else 0.0,
    )
    with backend(TRAINING):
        started = time.perf_counter()
        main(config)
        first_seconds = time.perf_counter() - started
        checkpoint = torch.load(out / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        if checkpoint["epoch"] != first_epochs:
            raise Failure(f"the checkpoint after {first_epochs} epoch(s) says epoch {checkpoint['epoch']}")
        section.results["session_seconds"] = [round(first_seconds, 1)]
        started = time.perf_counter()
        main(dataclasses.replace(config, epochs=all_epochs, resume=True), checkpoint)
        section.results["session_seconds"].append(round(time.perf_counter() - started, 1))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    card = ModelCard.load(out)
    missing = [
        name for name in ("model.safetensors", "model.json", CHECKPOINT_FILE) if not (out / name).is_file()
    ]
    section.results |= {
        "epochs": [r["epoch"] for r in records],
        "images_per_s": [r["images_per_s"] for r in records],
        "warm_up_seconds": [r.get("warm_up_seconds") for r in records],
        "val_top1": [r["top1"] for r in records],
        "device": card.training["device"],
        "precision": card.training["precision"],
        "cudnn": TRAINING.label(check.on_gpu) + (", cudnn.benchmark" if check.on_gpu else ""),
    }
    if [r["epoch"] for r in records] != list(range(1, all_epochs + 1)) or missing:
        raise Failure(f"the resumed run is incomplete: epochs {section.results['epochs']}, missing {missing}")
    if card.training["epochs"] != all_epochs:
        raise Failure(f"model.json says {card.training['epochs']} epochs, not {all_epochs}")
    if card.training["device"] != check.device.type:
        raise Failure(f"trained on {card.training['device']}, not on {check.device.type}")
    return out


def check_resume_on_gpu(check: Check, section: Section) -> None:
    """A run started on the CPU (NCHW, float32), resumed on the GPU, where the loop turns channels_last on:
    the fused AdamW kernel needs its state in the parameters' memory format (pytorch/pytorch#106951)."""
    if not check.on_gpu:
        raise Skip(
            "no GPU: the CPU never turns channels_last on (tests/unit/test_training_parts.py resumes "
            "NCHW optimizer state into channels_last parameters on the CPU instead)"
        )
    from training.config import TrainConfig
    from training.loop import main

    data = check.scratch / "digits"
    if not data.is_dir():
        write_digits_folder(data, check.sizes.digits_file_size, (2, 1))
    out = check.scratch / "cpu-then-gpu"
    config = TrainConfig(
        data=str(data), out=str(out), epochs=1, batch_size=16, image_size=64, augmentation="shift",
        device="cpu", warmup_epochs=0.0, workers=2,
    )  # fmt: skip
    main(config)
    with backend(TRAINING):
        card = main(dataclasses.replace(config, epochs=2, device="cuda", resume=True))
    section.results = {"precision_after_resume": card.training["precision"] if card else None}
    if card is None or "channels_last" not in card.training["precision"]:
        raise Failure(f"the resumed run did not train with channels_last: {section.results}")


def check_ddp(check: Check, section: Section) -> None:
    """DistributedDataParallel at world size 1 (NCCL on the GPU, gloo on the CPU): one training step must
    give the same weights as the same step without DDP."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training.engine import train_step
    from training.model import build_model
    from training.precision import Precision

    backend_name = "nccl" if check.on_gpu else "gloo"
    extra = {"device_id": check.device} if check.on_gpu else {}
    dist.init_process_group(
        backend_name, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, **extra
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
        with backend(STRICT_FP32):  # the same kernels for both, deterministic enough to compare
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
    section.results = {"backend": backend_name, "all_reduce": total.item(), "max_weight_diff": difference}
    if total.item() != 1.0 or difference > 1e-4:
        raise Failure(f"DDP's step differs from the plain one by {difference:.2e}")


# --- agreement on logits ----------------------------------------------------------------------------------


@dataclass
class Agreement:
    """One side's logits against the reference's on the same images."""

    images: str
    count: int
    relative_error: float  # the largest |difference| of a logit, over the reference's spread of that image
    bound: float
    top1_disagreements: int  # beyond numerical ties
    ties: int  # top-1 differs, but the reference scores both classes within bound x spread of each other

    @property
    def passed(self) -> bool:
        return self.relative_error <= self.bound and self.top1_disagreements == 0

    def line(self) -> str:
        ties = f", {self.ties} ties" if self.ties else ""
        return (
            f"{self.images}: logits differ by {self.relative_error:.2e} of their spread "
            f"(bound {self.bound:.0e}), top-1 differs on {self.top1_disagreements} of {self.count}{ties}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "relative_error": float(f"{self.relative_error:.3g}"),
            "bound": self.bound,
            "top1_disagreements": self.top1_disagreements,
            "ties": self.ties,
            "images": self.count,
            "passed": self.passed,
        }


def compare_logits(images: str, reference: np.ndarray, candidate: np.ndarray, bound: float) -> Agreement:
    """Logits [N, classes] (or log-probabilities: both are centred per image first, which removes softmax's
    constant) against the reference's."""
    if reference.shape != candidate.shape:
        raise Failure(f"{images}: output shapes differ: {reference.shape} vs {candidate.shape}")
    reference = reference - reference.mean(axis=1, keepdims=True)
    candidate = candidate - candidate.mean(axis=1, keepdims=True)
    spread = np.maximum(reference.max(axis=1) - reference.min(axis=1), np.finfo(np.float32).tiny)
    relative = np.abs(candidate - reference).max(axis=1) / spread
    rows = np.arange(len(reference))
    reference_top1, candidate_top1 = reference.argmax(axis=1), candidate.argmax(axis=1)
    differ = reference_top1 != candidate_top1
    tie = (reference[rows, reference_top1] - reference[rows, candidate_top1]) <= bound * spread
    return Agreement(
        images=images,
        count=len(reference),
        relative_error=float(relative.max()) if len(relative) else 0.0,
        bound=bound,
        top1_disagreements=int(np.sum(differ & ~tie)),
        ties=int(np.sum(differ & tie)),
    )


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """What a probabilities output (the served graph's) says about the logits: log p = logit - constant."""
    return np.log(np.maximum(probabilities.astype(np.float64), 1e-37))


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(pixels[start : start + batch]) for start in range(0, len(pixels), batch)])


# --- the model compared, and its reference ------------------------------------------------------------------


class PixelsToLogits(nn.Module):
    """The exported graph's computation up to the logits: uint8 [N, S, S, 3] -> cast, normalise -> network."""

    def __init__(self, network: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        from training.model import NormalisedPixels

        self.network = network
        self.normalise = NormalisedPixels(mean, std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalise(pixels))


def load_compared(sizes: Sizes, model_dir: Path) -> Compared:
    """The trained model, its validation images and crops of two colour photographs, and CPU FP32 logits."""
    from training.data import validation_pixels
    from training.model_dir import load_model_dir

    network, card = load_model_dir(model_dir, device="cpu")
    images: dict[str, np.ndarray] = {}
    data = card.dataset
    if data in ("digits", "synthetic") or (data and Path(data).is_dir()):
        pixels, _labels = validation_pixels(card, data=data, limit=sizes.compared_digits)
        name = "digits" if data == "digits" or "digits" in Path(data).name else "validation images"
        images[name] = np.ascontiguousarray(pixels)
    images["photos"] = photo_crops(sizes.compared_photos, card.image_size)
    reference_model = PixelsToLogits(network, card.mean, card.std).eval()
    with torch.inference_mode():
        reference = {
            name: run_in_batches(lambda p: reference_model(torch.from_numpy(p)).numpy(), pixels, 64)
            for name, pixels in images.items()
        }
    return Compared(network, card, str(model_dir), images, reference)


def describe_confidence(compared: Compared) -> dict[str, Any]:
    """How sure the compared model is: where its top class stands out, top-1 cannot flip from noise."""
    description: dict[str, Any] = {"model": compared.source, "val_top1": compared.card.metrics.get("top1")}
    for name, logits in compared.reference.items():
        probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        description[f"median top probability, {name}"] = round(float(np.median(probabilities.max(1))), 3)
    return description


# --- inference: the exported network's PyTorch twin -----------------------------------------------------


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
        raise Failure("disagrees with CPU float32: " + "; ".join(failures[:4]) + _more(failures, 4))


def _more(items: list[str], shown: int) -> str:
    return f" (and {len(items) - shown} more)" if len(items) > shown else ""


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


# --- ONNX export of the trained model, ONNX Runtime against PyTorch -------------------------------------


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
        raise Failure("ONNX Runtime disagrees with PyTorch: " + "; ".join(failures[:4]) + _more(failures, 4))


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


# --- training throughput --------------------------------------------------------------------------------


def check_training_throughput(check: Check, section: Section) -> None:
    """Both architectures: FP32, bf16 autocast + channels_last, and that compiled (images/s, peak memory).
    cuDNN autotunes (fixed batch shapes, as in training); TF32 as PyTorch leaves it, and labelled so."""
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
        section.reason = "no GPU: the torchvision network in float32 only (the rest are GPU paths)"
        runs = [("torchvision", fp32, False)]
    blocker = compile_blocker()
    for architecture, precision, compiled in runs:
        label = TRAINING.label(check.on_gpu) if precision.dtype is None else precision.name
        name = f"{architecture}, {label}" + (" + torch.compile" if compiled else "")
        if compiled and blocker:
            section.results[name] = f"skipped: {blocker}"
            continue
        if check.left() < (90 if compiled else 15):
            section.results[name] = "not run: out of time"
            continue
        with backend(TRAINING):
            row = bench_one(
                architecture,
                check.device,
                precision,
                batch_size=check.sizes.train_batch,
                image_size=check.sizes.image_size,
                steps=check.sizes.train_steps,
                compile=compiled,
            )
        keys = ("images_per_s", "ms_per_step", "warm_up_seconds", "peak_memory_gib")
        section.results[name] = {key: row[key] for key in keys}
        _release(check.device)


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- what the bounds separate -------------------------------------------------------------------------------


def calibrate(
    model_dir: Path, digits: int = 360, photos: int = 64
) -> tuple[Compared, list[tuple[str, Agreement]]]:
    """On the CPU, with a trained model: how far bf16 autocast and each injectable fault move the logits,
    against the loosest bound (docs/gpu.md, "Agreement"): (case, agreement) per case and set of images."""
    compared = load_compared(
        dataclasses.replace(CPU_SIZES, compared_digits=digits, compared_photos=photos), model_dir
    )
    card = compared.card

    def logits(pixels: np.ndarray, mean: list[float], std: list[float], bf16: bool = False) -> np.ndarray:
        model = PixelsToLogits(compared.network, mean, std).eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return run_in_batches(lambda p: model(torch.from_numpy(p.copy())).float().numpy(), pixels, 64)

    results = []
    for name, pixels in compared.images.items():
        reference = compared.reference[name]
        cases = {
            "bf16 autocast": logits(pixels, card.mean, card.std, bf16=True),
            "swap-channels": logits(pixels[..., ::-1], card.mean, card.std),
            "wrong-mean": logits(pixels, WRONG_MEAN, WRONG_STD),
            # What a CUDA graph replaying a stale input returns: another batch's logits.
            "stale-graph-input": np.roll(reference, len(reference) // 2, axis=0),
        }
        results += [
            (case, compare_logits(name, reference, candidate, BF16_BOUND))
            for case, candidate in cases.items()
        ]
    return compared, results


# --- the whole check ------------------------------------------------------------------------------------


def run_check(
    out: Path,
    budget_s: float,
    device: torch.device,
    *,
    fault: str | None = None,
    model_dir: Path | None = None,
    parts: tuple[str, ...] = PARTS,
    hard_stop_s: float | None = None,
) -> bool:
    sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    check = Check(out, budget_s, device, sizes, fault)
    hard_stop_s = hard_stop_s if hard_stop_s is not None else budget_s + HARD_STOP_AFTER_BUDGET_S
    # A hard stop a little after the budget, whatever hangs: the watchdog thread fails the running part
    # and writes the report; faulthandler is the last resort should the main thread hold the interpreter.
    watchdog = threading.Timer(hard_stop_s, check.hard_stop, args=(hard_stop_s,))
    watchdog.daemon = True
    watchdog.start()
    faulthandler.dump_traceback_later(hard_stop_s + 15, exit=True, file=check.log_file)
    try:
        check.log(
            f"alexnet GPU check on {device} ({'GPU' if check.on_gpu else 'tiny CPU'} version)"
            + (f", with the fault {fault!r} injected: {FAULTS[fault]}" if fault else "")
        )
        # The model compared: the one given (--model), else the one the training loop part trains.
        trained: list[Path] = [model_dir] if model_dir else []
        compared: list[Compared] = []

        def comparing() -> Compared | None:
            if not compared and trained:
                compared.append(load_compared(check.sizes, trained[0]))
            return compared[0] if compared else None

        schedule: list[tuple[str, float, Callable[[Section], Any]]] = [
            ("machine", 10, lambda s: describe_machine(check, s)),
            ("jpeg decode", 30 if check.on_gpu else 10, lambda s: check_jpeg_decode(check, s)),
            ("training loop", 100, lambda s: trained.append(check_training_loop(check, s))),
            ("resume on the gpu", 30, lambda s: check_resume_on_gpu(check, s)),
            ("ddp", 30, lambda s: check_ddp(check, s)),
            ("inference", 90, lambda s: check_inference(check, s, comparing())),
            ("onnx export", 60, lambda s: check_onnx(check, s, comparing())),
            ("tensorrt", 120, lambda s: check_tensorrt(check, s, comparing())),
            ("training throughput", 150, lambda s: check_training_throughput(check, s)),
        ]
        for name, budget, part in schedule:
            if name in parts:
                check.run(name, budget, part)
        # Proof that none of what the GPU machine lacks was needed (where it is installed, as here).
        check.environment["imported"] = imported_optional_packages()
        check.write_report()
        passed = not any(section.status == "failed" for section in check.sections)
        verdicts = ", ".join(f"{s.name} {s.status}" for s in check.sections)
        check.log(
            f"{'PASSED' if passed else 'FAILED'} in {time.monotonic() - check.started:.0f} s: {verdicts}"
        )
        for section in check.sections:
            if section.status == "failed":
                check.log(f"   {section.name}: {section.reason}")
        check.log(f"report: {out / REPORT_FILE}, log: {out / LOG_FILE}")
        return passed
    finally:
        watchdog.cancel()
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
    parser.add_argument(
        "--inject-fault",
        choices=sorted(FAULTS),
        help="plant a known bug in the compared side; the check must then fail: "
        + "; ".join(f"{name}: {why}" for name, why in FAULTS.items()),
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="compare this trained model directory (model.safetensors + model.json, e.g. runs/digits from "
        "`alexnet train`) instead of the one the training loop part trains",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run (default: all; a hyphen may stand for a space): "
        + ", ".join(PARTS),
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="with --model: print how far bf16 and each fault move that model's logits on the CPU, and exit",
    )
    parser.add_argument(
        "--hard-stop-s",
        type=float,
        help=f"end the process this many seconds after the start, whatever runs (default: the budget + "
        f"{HARD_STOP_AFTER_BUDGET_S:.0f})",
    )
    args = parser.parse_args(argv)
    parts = tuple(part.strip().replace("-", " ") for part in args.parts.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: use some of {', '.join(PARTS)}")
    if args.model is not None and not (args.model / "model.json").is_file():
        parser.error(f"--model {args.model}: no model.json there; train one with `alexnet train --out DIR`")
    if args.calibrate:
        if args.model is None:
            parser.error("--calibrate needs --model DIR (a trained model, e.g. runs/digits)")
        compared, results = calibrate(args.model)
        confidence = {key: value for key, value in describe_confidence(compared).items() if key != "model"}
        print(f"{compared.source}: {json.dumps(confidence)}")
        print("\n".join(f"{case:18s} {agreement.line()}" for case, agreement in results))
        return 0
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if args.inject_fault == "stale-graph-input" and device.type != "cuda":
        parser.error("--inject-fault stale-graph-input needs a GPU: only the GPU version runs CUDA graphs")
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    passed = run_check(
        args.out,
        args.budget_s,
        device,
        fault=args.inject_fault,
        model_dir=args.model,
        parts=parts,
        hard_stop_s=args.hard_stop_s,
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
