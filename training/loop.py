"""The training run, after pytorch/vision references/classification/train.py's `main`: `prepare` builds
the data, model, optimizer and schedule (restored from the checkpoint on --resume), `train` runs the epochs
(training/engine.py) and hands off to export. One process, or every rank of `torchrun` DDP.

Per epoch: train (one optimizer step per batch), evaluate top-1/top-5 on the validation split
(summed over ranks), then rank 0 appends a line to metrics.jsonl, writes TensorBoard scalars and
the full checkpoint (training/checkpointing.py; checkpoint_best.pt is the best epoch's). At the end, the
hand-off to export: the best epoch's model.safetensors + model.json. Ctrl-C (or SIGTERM) stops at the next
step boundary, saves a checkpoint that `--resume` continues from that very batch (and the hand-off),
and exits with status 130.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.model_card import (
    ARCHITECTURES,
    CHECKPOINT_FILE,
    MIN_IMAGE_SIZE,
    ModelCard,
)
from common.signals import StopRequest
from training import distributed
from training.checkpointing import CheckpointSaver, RunState, carried_over, load_checkpoint
from training.config import TrainConfig, merge_for_resume
from training.data import DataSource, default_workers, load_data, make_loaders
from training.distributed import Runtime
from training.engine import Interrupted, evaluate, train_one_epoch
from training.errors import TrainingError
from training.metrics_log import MetricsLog
from training.model import build_model, first_layer_weights, initialise
from training.model_dir import save_model_dir, unwrap
from training.optim import LRSchedule, build_optimizer, build_schedule
from training.precision import Precision
from training.recipes import describe, recipe_record
from training.recipes import recipe_settings as settings_of_new_run

WHY_ADAMW = (
    "AdamW (lr 3e-4 at batch 64, cosine) rather than the paper's SGD: with He initialisation it passes 95% "
    "validation top-1 on digits in 3-4 epochs; SGD (momentum 0.9, lr 0.01-0.05) had not started learning "
    "after 4 epochs in our trials"
)


@dataclass
class Run:
    """Everything one training run works with, built once by `prepare`."""

    config: TrainConfig
    runtime: Runtime
    source: DataSource
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    precision: Precision
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    state: RunState
    saver: CheckpointSaver
    best_weights: dict[str, torch.Tensor] | None = None  # rank 0: a CPU copy of the best epoch's weights
    metrics: MetricsLog | None = None  # rank 0

    def log(self, *args: Any, **kwargs: Any) -> None:
        if self.runtime.is_main:
            print(*args, **kwargs)


def main(config: TrainConfig, checkpoint: dict[str, Any] | None = None) -> ModelCard | None:
    """Train as `config` says; returns the model card of the best epoch (on rank 0). Every rank runs this.

    With `config.resume`, continue from `checkpoint` (or from checkpoint.pt in `config.out`).
    """
    runtime = distributed.start(config.device)
    try:
        run = prepare(config, runtime, checkpoint)
        return train(run)
    finally:
        distributed.stop()


def run_command(given: dict[str, Any], *, resume: bool) -> ModelCard | None:
    """The `train` command: the options given (None: not given), merged with the checkpoint's on --resume."""
    if not resume:
        return main(TrainConfig(**settings_of_new_run(given)))
    settings = {name: value for name, value in given.items() if value is not None}
    path = Path(settings.get("out", TrainConfig.out)) / CHECKPOINT_FILE
    checkpoint = load_checkpoint(path)
    return main(merge_for_resume(settings, checkpoint["args"], path), checkpoint)


def prepare(config: TrainConfig, runtime: Runtime, checkpoint: dict[str, Any] | None) -> Run:
    """Data, model, optimizer and schedule, restored from `checkpoint` if any. Everything that can fail on
    bad input fails here, before anything is written."""
    if config.image_size < MIN_IMAGE_SIZE:
        raise TrainingError(
            f"--image-size {config.image_size} is too small for AlexNet: use at least {MIN_IMAGE_SIZE}"
        )
    if config.arch not in ARCHITECTURES:
        raise TrainingError(f"--arch {config.arch}: use {' or '.join(ARCHITECTURES)}")
    if config.epochs < 1 or config.batch_size < 1:
        raise TrainingError("--epochs and --batch-size must be at least 1")
    if config.resume and checkpoint is None:
        checkpoint = load_checkpoint(config.out_dir / CHECKPOINT_FILE)
    torch.manual_seed(config.seed + runtime.rank)
    source = load_data(
        config.data,
        image_size=config.image_size,
        architecture=config.arch,
        augmentation=config.augmentation,
        ten_crop=config.ten_crop,
        synthetic_size=config.synthetic_size,
        data_dir=config.data_dir,
    )
    if checkpoint is not None and checkpoint["labels"] != source.labels:
        raise TrainingError(
            f"{config.out_dir / CHECKPOINT_FILE} was trained on other classes than {config.data} has now: "
            "resume with the data it was trained on, or start a new run in another --out folder"
        )
    workers = (
        config.workers if config.workers is not None else default_workers(config.data, runtime.world_size)
    )
    train_loader, val_loader = make_loaders(
        source,
        batch_size=config.batch_size,
        workers=workers,
        rank=runtime.rank,
        world_size=runtime.world_size,
        seed=config.seed,
        pin_memory=runtime.device.type == "cuda",
    )
    precision = Precision.choose(runtime.device, amp=config.amp, channels_last=config.channels_last)
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: cuDNN times its algorithms once per shape
    model = build_model(config.arch, len(source.labels))
    state = RunState()
    if checkpoint is None:
        state.initialisation = initialise(model, config.arch, scheme=config.init_scheme, weights=config.init)
        state.initial_kernels = first_layer_weights(model).clone()
    memory_format = torch.channels_last if precision.channels_last else torch.preserve_format
    model.to(runtime.device, memory_format=memory_format)
    optimizer = build_optimizer(config, model)
    schedule = build_schedule(config, steps_per_epoch=len(train_loader), world_size=runtime.world_size)
    saver = CheckpointSaver(config, runtime, source.labels, model, optimizer, schedule, precision)
    if checkpoint is not None:
        state = saver.restore(checkpoint)
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)
        precision.compiled = True
    return Run(
        config, runtime, source, model, optimizer, schedule, precision, train_loader, val_loader, state, saver
    )


def train(run: Run) -> ModelCard | None:
    """The epochs, then the hand-off to export (rank 0): the best epoch's model.safetensors + model.json."""
    config, state, source, runtime = run.config, run.state, run.source, run.runtime
    run.log(describe(asdict(config)))
    run.log(
        f"training {config.arch} AlexNet on {source.name}: "
        f"{len(source.train)} train / {len(source.val)} val images, {len(source.labels)} classes, "
        f"{config.image_size} px, {runtime.device.type} x {runtime.world_size} ({run.precision.name}), "
        f"{config.optimizer} lr {run.schedule.base_lr:.3g} "
        f"(global batch {config.batch_size * runtime.world_size}), "
        f"{config.epochs} epochs"
        + (f", from epoch {state.epoch + 1}" if config.resume else f"; {state.initialisation}")
    )
    run.metrics = _open_metrics(run)
    try:
        with StopRequest(second_ctrl_c_stops=not runtime.distributed) as stop:
            for epoch in range(state.epoch, config.epochs):
                _one_epoch(run, epoch, stop)
    except Interrupted as interrupted:
        run.saver.save_interrupted(state, interrupted)
        if state.best_epoch:
            _write_hand_off(run)
        run.log(
            f"\ninterrupted in epoch {interrupted.epoch + 1}, "
            f"step {interrupted.step}/{run.schedule.steps_per_epoch}: "
            f"saved {config.out_dir / CHECKPOINT_FILE}; continue with "
            f"`alexnet train --out {config.out} --resume`",
            file=sys.stderr,
        )
        raise KeyboardInterrupt from None
    finally:
        if run.metrics is not None:
            run.metrics.close()
    card = _write_hand_off(run)
    run.log(
        f"done: best validation top-1 {state.best_top1:.2%} (epoch {state.best_epoch}) "
        f"in {state.seconds:.0f} s; "
        f"model in {config.out_dir} (model.safetensors + model.json)"
    )
    return card


def _one_epoch(run: Run, epoch: int, stop: StopRequest) -> None:
    from tqdm import tqdm

    config, state = run.config, run.state
    first_step = state.step_in_epoch if epoch == state.epoch else 0
    run.train_loader.sampler.set_epoch(epoch, skip=first_step * config.batch_size)
    run.train_loader.generator.manual_seed(config.seed * 100_003 + epoch)
    progress = None
    if run.runtime.is_main:
        progress = tqdm(
            total=run.schedule.steps_per_epoch,
            initial=first_step,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            mininterval=1.0,
            file=sys.stderr,
            disable=None,  # only on a terminal: piped into a log (CI, the quickstart) the epoch lines suffice
        )
    try:
        result = train_one_epoch(
            run.model,
            run.optimizer,
            run.schedule,
            run.train_loader,
            epoch=epoch,
            first_step=first_step,
            runtime=run.runtime,
            precision=run.precision,
            stop=stop,
            progress=progress,
            so_far=carried_over(state, run.runtime),
        )
    finally:
        if progress is not None:
            progress.close()
    eval_started = time.perf_counter()
    metrics = evaluate(run.model, run.val_loader, run.runtime, run.precision)
    run.schedule.end_of_epoch(metrics["top1"])
    state.epoch, state.step_in_epoch, state.epoch_so_far = epoch + 1, 0, []
    state.seconds += result.seconds + time.perf_counter() - eval_started
    timed_images, timed_seconds = result.timed()
    state.train_seconds += timed_seconds
    state.train_images += timed_images
    if metrics["top1"] > state.best_top1:
        state.best_top1, state.best_epoch = metrics["top1"], epoch + 1
        state.best_metrics = {"top1": metrics["top1"], "top5": metrics["top5"], "epoch": epoch + 1}
        if run.runtime.is_main:
            run.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in unwrap(run.model).state_dict().items()
            }
    if result.skipped or metrics["val_skipped"]:
        run.log(f"skipped {result.skipped} unreadable training and {metrics['val_skipped']} validation files")
    run.log(
        f"epoch {epoch + 1}/{config.epochs}  loss {result.loss:.4f}  val top-1 {metrics['top1']:.2%}  "
        f"top-5 {metrics['top5']:.2%}  {result.images_per_second:.0f} img/s  {result.seconds:.1f} s"
    )
    record = {
        "epoch": epoch + 1,
        "train_loss": round(result.loss, 5),
        **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()},
        "lr": float(f"{run.schedule.lr_at((epoch + 1) * run.schedule.steps_per_epoch - 1):.6g}"),
        "images_per_s": round(result.images_per_second, 1),
        "train_images": result.images,
        "train_images_by_rank": result.images_by_rank,
        "train_skipped": result.skipped,
        "seconds": round(result.seconds, 2),
        "warm_up_seconds": round(result.warm_up_seconds, 3),  # the first step's, left out of images_per_s
    }
    if run.metrics is not None:
        run.metrics.write(record)
    run.saver.save_epoch(state)


def _open_metrics(run: Run) -> MetricsLog | None:
    """Rank 0 only: metrics.jsonl and TensorBoard, trimmed to the checkpoint's epochs on --resume."""
    if not run.runtime.is_main:
        return None
    config, out = run.config, run.config.out_dir
    if not config.resume and (out / CHECKPOINT_FILE).is_file():
        print(
            f"note: starting a new run in {out}; the earlier run's files there are replaced as this one "
            "writes (Ctrl-C now and add --resume to continue that run instead)",
            file=sys.stderr,
        )
    resumed_after = run.state.epoch if config.resume else None
    return MetricsLog(out, resumed_after=resumed_after, steps_per_epoch=run.schedule.steps_per_epoch)


def _write_hand_off(run: Run) -> ModelCard | None:
    """Rank 0: model.safetensors (the best epoch's weights) + model.json, for export. Written once at the
    end (and on Ctrl-C) rather than every epoch: the weights are 240 MB, the quickstart's epochs seconds."""
    if not run.runtime.is_main:
        return None
    weights = run.best_weights
    if weights is None:  # the best epoch was before a resume: its weights are in checkpoint_best.pt
        weights = run.saver.best_weights()
    model = unwrap(run.model)
    model.load_state_dict(weights)  # training is over: the live model may become the best one
    card = _card(run)
    save_model_dir(model, card, run.config.out_dir)
    return card


def _card(run: Run) -> ModelCard:
    config, runtime, source, state = run.config, run.runtime, run.source, run.state
    return ModelCard(
        architecture=config.arch,
        labels=list(source.labels),
        image_size=source.image_size,
        resize_size=source.resize_size,
        mean=list(source.mean),
        std=list(source.std),
        dataset=source.name,
        input_conversion=source.input_conversion,
        metrics=dict(state.best_metrics),
        training={
            "optimizer": config.optimizer,
            **recipe_record(asdict(config)),
            "momentum": config.momentum if config.optimizer == "sgd" else None,
            "weight_decay": config.effective_weight_decay(),
            "lr": run.schedule.base_lr,
            "lr_per_256_images": config.effective_lr(),
            "schedule": f"{config.schedule} after {config.warmup_epochs:g} warm-up epoch(s)",
            "batch_size": config.batch_size * runtime.world_size,
            "batch_size_per_process": config.batch_size,
            "epochs": state.epoch,
            "epochs_planned": config.epochs,
            "augmentation": source.augmentation,
            **({"data_dir": source.data_dir} if source.data_dir else {}),
            "initialisation": state.initialisation,
            "world_size": runtime.world_size,
            "device": runtime.device.type,
            "precision": run.precision.name,
            "seconds": round(state.seconds, 1),
            "images_per_s": round(state.train_images / state.train_seconds, 1)
            if state.train_seconds
            else None,
            "note": WHY_ADAMW if config.optimizer == "adamw" else f"SGD with momentum {config.momentum:g}",
        },
    )
