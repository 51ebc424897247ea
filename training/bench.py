"""`alexnet bench-train`: training throughput (images/s) of both architectures on synthetic batches.

It times the loop's own `train_step` (forward, backward, one SGD step) on a batch that already
sits on the device, so the figure is the network's and the optimizer's, not the data pipeline's.
On CUDA each architecture runs twice: float32, and bf16 autocast + channels_last.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from common.machine import cpu_name, load_average, versions
from common.timing import timed_loop
from training.distributed import resolve_device
from training.engine import synchronize, train_step
from training.model import build_model
from training.precision import Precision

NUM_CLASSES = 1000  # ImageNet's


def bench_one(
    architecture: str,
    device: torch.device,
    precision: Precision,
    *,
    batch_size: int,
    image_size: int,
    steps: int,
    compile: bool = False,
) -> dict[str, Any]:
    """Images/s of `steps` training steps after the warm-up (which includes torch.compile's compilation
    with `compile`); on CUDA also the peak memory allocated."""
    torch.manual_seed(0)
    model = build_model(architecture, NUM_CLASSES).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, fused=True)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if precision.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup = 2 if device.type == "cpu" else 10  # cuDNN picks its algorithms in the first steps

    def step() -> None:
        train_step(model, images, labels, optimizer, precision)

    def wait() -> None:
        synchronize(device)

    # The warm-up's time is measured too: it includes torch.compile's compilation.
    warm_up_seconds = timed_loop(step, 0.0, min_calls=warmup, warm_up=0, wait=wait).seconds
    seconds = timed_loop(step, 0.0, min_calls=steps, warm_up=0, wait=wait).seconds
    return {
        "architecture": architecture,
        "device": device.type,
        "precision": precision.name + (" + torch.compile" if compile else ""),
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": steps,
        "seconds": round(seconds, 3),
        "ms_per_step": round(1000 * seconds / steps, 1),
        "images_per_s": round(steps * batch_size / seconds, 1),
        "warm_up_seconds": round(warm_up_seconds, 1),  # includes compilation
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }


def bench_train(
    architectures: list[str],
    *,
    device: str = "auto",
    batch_size: int | None = None,
    image_size: int = 224,
    steps: int | None = None,
) -> dict[str, Any]:
    """Images/s per architecture (and, on CUDA, per precision), with the machine they ran on."""
    resolved = resolve_device(device)
    load_before = load_average()
    on_gpu = resolved.type == "cuda"
    batch_size = batch_size or (256 if on_gpu else 32)
    steps = steps or (50 if on_gpu else 5)
    precisions = [Precision()]
    if on_gpu:
        precisions = [Precision(device_type="cuda"), Precision.choose(resolved, amp=True, channels_last=True)]
    results = [
        bench_one(arch, resolved, precision, batch_size=batch_size, image_size=image_size, steps=steps)
        for arch in architectures
        for precision in precisions
    ]
    machine = machine_description(resolved)
    machine["load_average_1min_before"] = load_before
    return {"machine": machine, "results": results}


def machine_description(device: torch.device) -> dict[str, Any]:
    """What the figures depend on, including how busy the CPU was (these machines are shared)."""
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **versions("torch"),
        "load_average_1min": load_average(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_table(report: dict[str, Any]) -> str:
    header = ("architecture", "device", "precision", "batch", "size", "ms/step", "img/s")
    lines = ["{:<12} {:<6} {:<32} {:>5} {:>4} {:>8} {:>8}".format(*header)]
    for row in report["results"]:
        lines.append(
            f"{row['architecture']:<12} {row['device']:<6} {row['precision']:<32} {row['batch_size']:>5} "
            f"{row['image_size']:>4} {row['ms_per_step']:>8.1f} {row['images_per_s']:>8.1f}"
        )
    machine = report["machine"]
    lines.append(
        f"({machine.get('gpu') or machine['cpu']}, {machine['torch_threads']} threads, "
        f"1-minute load average {machine['load_average_1min_before']} before, "
        f"{machine['load_average_1min']} after, on {machine['cpu_count']} CPUs)"
    )
    return "\n".join(lines)
