"""The training parts: the JPEG decode of the data path, the real training loop with a resume, a CPU run
resumed on the GPU, DDP at world size 1, and training throughput."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from common.model_card import ARCHITECTURES
from common.ports import free_port
from gpu_check.agreement import photo_crops
from gpu_check.harness import STRICT_FP32, TRAINING, Check, Failure, Section, Skip, backend
from gpu_check.machine import compile_blocker

# nvJPEG and libjpeg-turbo (Pillow) differ in their IDCT and chroma upsampling by a level or two; a wrong
# colour space or channel order shows up as tens.
JPEG_MEAN_ABS_DIFF_LIMIT = 3.0


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


def check_training_throughput(check: Check, section: Section) -> None:
    """Both architectures: FP32, bf16 autocast + channels_last, and that compiled (images/s, peak memory).
    cuDNN autotunes (fixed batch shapes, as in training); TF32 as PyTorch leaves it, and labelled so."""
    from training.bench import bench_one
    from training.precision import Precision

    fp32 = Precision(device_type=check.device.type)
    if check.on_gpu:
        fast = Precision.choose(check.device, amp=True, channels_last=True)
        architectures = ARCHITECTURES
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
