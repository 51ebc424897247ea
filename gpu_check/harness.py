"""The check's frame: how big each part runs (GPU or tiny CPU sizes), the cuDNN/TF32 settings a part
states, and `Check`, which runs the parts within their budgets and rewrites the JSON report after each."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common.files import write_json

DEFAULT_OUT = Path("artifacts") / "gpu-check"
REPORT_FILE = "gpu_check.json"
LOG_FILE = "gpu_check.log"
# One call of the check must end within 8 minutes: the parts get 7, the hard stop comes 40 s later
# (with interpreter start-up, under 8 minutes).
DEFAULT_BUDGET_S = 420.0
HARD_STOP_AFTER_BUDGET_S = 40.0
# A section starts only if at least this much of the whole budget is left (compilation is slow).
MIN_SECONDS_TO_START = 20.0
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
            write_json(self.out / REPORT_FILE, report)

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


OPTIONAL = {
    "tensorrt": "TensorRT engines (`alexnet export tensorrt`)",
    "tritonclient": "the Triton client, repository writer and `alexnet serve`",
    "pytriton": "the Triton server binary (nvidia-pytriton)",
    "gradio": "the demo",
}


def imported_optional_packages() -> list[str]:
    """Which of what the GPU machine lacks this run imported (none unless a part needed it)."""
    return sorted(name for name in OPTIONAL if name in sys.modules)
