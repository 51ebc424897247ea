"""The training loop, after pytorch/vision references/classification/train.py: `train_one_epoch`,
`evaluate` and `main(config)`, for one process or for `torchrun` DDP.

Per epoch: train (one optimizer step per batch), evaluate top-1/top-5 on the validation split
(summed over ranks), then rank 0 appends a line to metrics.jsonl, writes TensorBoard scalars and
the full checkpoint (atomically; checkpoint_best.pt is the best epoch's). At the end, the hand-off
to export: the best epoch's model.safetensors + model.json. Ctrl-C (or SIGTERM) stops at the next
step boundary, saves a checkpoint that `--resume` continues from that very batch (and the hand-off),
and exits with status 130.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.model_card import (
    BEST_CHECKPOINT_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    MIN_IMAGE_SIZE,
    ModelCard,
)
from training import distributed
from training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    link_atomically,
    load_checkpoint,
    rng_state,
    save_atomically,
    set_rng_state,
)
from training.data import DataSource, default_workers, load_data, make_loaders
from training.distributed import Runtime
from training.errors import TrainingError
from training.model import build_model, init_as_in_paper
from training.model_dir import save_model_dir, unwrap
from training.recipes import DEFAULT_RECIPE, LR_REFERENCE_BATCH, default_lr, describe, recipe_record
from training.recipes import recipe_settings as settings_of_new_run
from training.weights import load_torchvision_weights

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "plateau")
TENSORBOARD_SCALARS = {
    "train/loss": "train_loss",
    "train/lr": "lr",
    "train/images_per_s": "images_per_s",
    "val/loss": "val_loss",
    "val/top1": "top1",
    "val/top5": "top5",
}
WHY_ADAMW = (
    "AdamW (lr 3e-4 at batch 64, cosine) rather than the paper's SGD: with He initialisation it passes 95% "
    "validation top-1 on digits in 3-4 epochs; SGD (momentum 0.9, lr 0.01-0.05) had not started learning "
    "after 4 epochs in our trials"
)


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint so `--resume` can continue it.

    The defaults are the quickstart recipe's (training/recipes.py, which cites each value): the full-width
    torchvision AlexNet on the embedded digits at 64 pixels, He-initialised, AdamW and a cosine schedule.
    """

    recipe: str = DEFAULT_RECIPE  # the named recipe the other values came from, unless given as flags
    data: str = "digits"  # "digits", "synthetic" or an ImageNet-style folder
    out: str = "runs/digits"  # the model directory this run writes
    arch: str = "torchvision"  # "torchvision" (one weird trick) or "paper" (NeurIPS 2012)
    epochs: int = 5
    batch_size: int = 64  # per process; the global batch is batch_size x world size
    image_size: int = 64
    lr: float | None = None  # for a global batch of 256, scaled linearly; None: the optimizer's default
    optimizer: str = "adamw"  # "adamw" or "sgd"
    momentum: float = 0.9  # SGD's
    weight_decay: float | None = None  # None: 5e-4 for SGD (the paper's), 0.05 for AdamW
    schedule: str = "cosine"  # or "step" (x0.1 every third of the run), "plateau" (x0.1 when top-1 stalls)
    warmup_epochs: float = 1.0  # linear warm-up from 0, per step
    augmentation: str | None = None  # None: shift for digits, paper for --arch paper, torchvision otherwise
    ten_crop: bool = False  # evaluate on the paper's ten patches instead of the centre crop
    workers: int | None = None  # DataLoader processes per rank; None: 0 for in-memory data, else up to 8
    device: str = "auto"
    amp: bool = True  # on CUDA: bf16 autocast (fp16 + GradScaler where bf16 is missing)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model
    init: str | None = None  # a torchvision-format AlexNet state dict to start from
    init_scheme: str = "he"  # without --init: "he", "paper" (N(0, 0.01), biases 1) or "pytorch" (its default)
    seed: int = 0
    synthetic_size: int = 1280  # images per epoch with --data synthetic
    resume: bool = False

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def effective_lr(self) -> float:
        """Per 256 images: the one given, else the optimizer's default (training/recipes.py)."""
        return self.lr if self.lr is not None else default_lr(self.optimizer)

    def effective_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05


# Settings a resumed run must share with the checkpoint: the network and what it learns from.
STRUCTURAL = ("recipe", "arch", "image_size", "data")


def merge_for_resume(given: dict[str, Any], saved: dict[str, Any], checkpoint: Path) -> TrainConfig:
    """The saved run's settings, overridden by those given now; structural ones must not change."""
    names = {f.name for f in fields(TrainConfig)}
    merged = {name: value for name, value in saved.items() if name in names}
    for name, value in given.items():
        if name not in names:
            raise TypeError(f"unknown training setting {name!r}")
        if value is None:
            continue
        if (
            name in STRUCTURAL
            and name in merged
            and _normalise(name, value) != _normalise(name, merged[name])
        ):
            flag = "--" + name.replace("_", "-")
            raise TrainingError(
                f"{checkpoint} was trained with {flag} {merged[name]}, not {value}: resume with "
                f"{flag} {merged[name]}, or start a new run in another --out folder"
            )
        merged[name] = value
    merged["resume"] = True
    return TrainConfig(**merged)


def _normalise(name: str, value: Any) -> Any:
    if name == "data" and value not in ("digits", "synthetic"):
        return str(Path(value).expanduser().resolve())
    return value


# --- the learning-rate schedule -------------------------------------------------------------------


class LRSchedule:
    """Linear warm-up, then cosine, step or plateau decay. The rate is a function of the step count
    (plus, for plateau, a little state), so a resumed run gets exactly the rates it would have had."""

    def __init__(self, kind: str, base_lr: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: float):
        if kind not in SCHEDULES:
            raise TrainingError(f"--schedule {kind}: use one of {', '.join(SCHEDULES)}")
        self.kind, self.base_lr, self.steps_per_epoch, self.epochs = kind, base_lr, steps_per_epoch, epochs
        self.warmup_steps = round(warmup_epochs * steps_per_epoch)
        self.plateau_scale, self.best, self.bad_epochs = 1.0, -math.inf, 0
        self.patience = 2  # epochs without a better top-1 before the rate drops

    def lr_at(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "cosine":
            total = max(1, self.epochs * self.steps_per_epoch - self.warmup_steps)
            progress = min(1.0, max(0, step - self.warmup_steps) / total)
            return self.base_lr * warmup * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            every = max(1, math.ceil(self.epochs / 3))
            return self.base_lr * warmup * 0.1 ** (step // self.steps_per_epoch // every)
        return self.base_lr * warmup * self.plateau_scale

    def end_of_epoch(self, top1: float) -> None:
        """The paper's rule: divide by 10 when validation accuracy stops improving."""
        if top1 > self.best:
            self.best, self.bad_epochs = top1, 0
            return
        self.bad_epochs += 1
        if self.kind == "plateau" and self.bad_epochs >= self.patience:
            self.plateau_scale *= 0.1
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale, self.best, self.bad_epochs = (
            state["plateau_scale"],
            state["best"],
            state["bad_epochs"],
        )


# --- model, optimizer, precision ------------------------------------------------------------------


INIT_SCHEMES = ("he", "paper", "pytorch")


def initialise(model: nn.Module, config: TrainConfig) -> str:
    """Set the starting weights; returns how, for the log and model.json.

    "he" (He et al. 2015, as torchvision initialises its VGGs and ResNets) is the quickstart's: from
    scratch on digits, PyTorch's default (which shrinks the signal about sixfold per layer) stalls for
    several epochs and the paper's N(0, 0.01) stays at chance; He gets 90% validation top-1 in two.
    """
    if config.init:
        return load_torchvision_weights(model, config.arch, Path(config.init))
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if config.init_scheme == "paper":
        init_as_in_paper(model)
        return "the paper's initialisation: weights N(0, 0.01), biases 1 in conv2/4/5 and fc6/7, else 0"
    if config.init_scheme == "pytorch":
        for layer in layers:
            layer.reset_parameters()
        return "PyTorch's default initialisation (as torchvision's AlexNet)"
    if config.init_scheme != "he":
        raise TrainingError(f"init scheme {config.init_scheme!r}: use one of {', '.join(INIT_SCHEMES)}")
    for layer in layers[:-1]:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    nn.init.normal_(layers[-1].weight, mean=0.0, std=0.01)  # small logits: start near uniform predictions
    nn.init.zeros_(layers[-1].bias)
    return "He initialisation (kaiming_normal, fan_in, ReLU gain; last layer N(0, 0.01))"


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay = config.effective_weight_decay()
    # Fused kernels exist for CPU and CUDA: AdamW's step over 57M parameters is ~5x faster on a CPU.
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=0.0, momentum=config.momentum, weight_decay=decay, fused=True
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=decay, fused=True)
    raise TrainingError(f"--optimizer {config.optimizer}: use one of {', '.join(OPTIMIZERS)}")


@dataclass
class Precision:
    """How the forward pass runs: float32 on the CPU; bf16 autocast on CUDA (fp16 + scaler on old GPUs)."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False
    device_type: str = "cpu"

    @classmethod
    def choose(cls, device: torch.device, *, amp: bool, channels_last: bool) -> Precision:
        if device.type != "cuda":
            return cls()
        dtype = None
        scaler = None
        if amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return cls(dtype, scaler, channels_last, "cuda")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        precision = {
            None: "float32",
            torch.bfloat16: "bf16 autocast",
            torch.float16: "fp16 autocast + GradScaler",
        }
        return precision[self.dtype] + (" + channels_last" if self.channels_last else "")


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, precision: Precision):
    memory_format = (
        torch.channels_last if precision.channels_last and images.dim() == 4 else torch.contiguous_format
    )
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and exactly one optimizer step. Returns (logits, loss), not synchronised."""
    with precision.autocast():
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return logits, loss


# --- stopping on Ctrl-C ---------------------------------------------------------------------------


class StopRequest:
    """Ctrl-C or SIGTERM asks the loop to stop after the current step; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# --- one epoch of training, one evaluation --------------------------------------------------------


@dataclass
class EpochTally:
    """One rank's running totals over the epoch being trained. An interrupted epoch's tallies go into its
    checkpoint, so the resumed epoch reports the loss, images and time of the whole epoch."""

    loss_sum: float = 0.0
    images: int = 0
    skipped: int = 0
    seconds: float = 0.0


class Interrupted(Exception):
    def __init__(self, epoch: int, step: int, so_far: EpochTally) -> None:
        self.epoch, self.step, self.so_far = epoch, step, so_far


@dataclass
class EpochResult:
    loss: float = 0.0
    images: int = 0  # trained on, all ranks together
    images_by_rank: list[int] = field(default_factory=list)
    seconds: float = 0.0
    skipped: int = 0  # unreadable files met, all ranks together
    # The first step's images and time: torch.compile, cuDNN's autotuning and the loader's start-up happen
    # there, so images/s leaves it out (where the epoch has more steps).
    warm_up_images: int = 0
    warm_up_seconds: float = 0.0

    def timed(self) -> tuple[int, float]:
        """(images, seconds) after the warm-up step, or of the whole epoch if it had only that step."""
        if self.images > self.warm_up_images and self.seconds > self.warm_up_seconds:
            return self.images - self.warm_up_images, self.seconds - self.warm_up_seconds
        return self.images, self.seconds

    @property
    def images_per_second(self) -> float:
        images, seconds = self.timed()
        return images / seconds if seconds else 0.0


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    loader: torch.utils.data.DataLoader,
    *,
    epoch: int,
    first_step: int,
    runtime: Runtime,
    precision: Precision,
    stop: StopRequest,
    progress: Any,
    so_far: EpochTally,
) -> EpochResult:
    """Train on one epoch's batches (from `first_step` on, adding to `so_far`, after an interrupted run)."""
    model.train()
    loss_sum = torch.tensor(so_far.loss_sum, dtype=torch.float64, device=runtime.device)
    images_seen, skipped = so_far.images, so_far.skipped
    step = first_step
    warm_up_images, warm_up_seconds = 0, 0.0
    started = time.perf_counter()
    for images, labels, batch_skipped in loader:
        lr = schedule.lr_at(epoch * schedule.steps_per_epoch + step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = to_device(images, labels, runtime.device, precision)
        _logits, loss = train_step(model, images, labels, optimizer, precision)
        loss_sum += loss.detach().double() * labels.shape[0]
        images_seen += labels.shape[0]
        skipped += batch_skipped
        step += 1
        if step == first_step + 1:
            _synchronize(runtime.device)
            warm_up_images, warm_up_seconds = labels.shape[0], time.perf_counter() - started
        if progress is not None:
            progress.update(1)
            if step % 5 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2g}", refresh=False)
        # Every rank must agree on where to stop, or the others would wait for it forever. Asking all
        # of them costs a collective, so every 10 steps, and at the epoch's end for short epochs.
        check = not runtime.distributed or step % 10 == 0 or step == schedule.steps_per_epoch
        if check and distributed.any_rank(stop.requested, runtime):
            seconds = so_far.seconds + time.perf_counter() - started
            raise Interrupted(epoch, step, EpochTally(loss_sum.item(), images_seen, skipped, seconds))
    _synchronize(runtime.device)
    seconds = so_far.seconds + time.perf_counter() - started
    total_loss, total_images, total_skipped, total_seconds, total_warm_up_images, total_warm_up_seconds = (
        distributed.all_reduce_sum(
            [loss_sum.item(), images_seen, skipped, seconds, warm_up_images, warm_up_seconds], runtime
        )
    )
    return EpochResult(
        loss=total_loss / max(1, total_images),
        images=int(total_images),
        images_by_rank=[int(n) for n in distributed.all_gather(images_seen, runtime)],
        seconds=total_seconds / runtime.world_size,
        skipped=int(total_skipped),
        warm_up_images=int(total_warm_up_images),
        warm_up_seconds=total_warm_up_seconds / runtime.world_size,
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: torch.utils.data.DataLoader, runtime: Runtime, precision: Precision
) -> dict[str, float]:
    """Validation loss, top-1 and top-5 (fractions), over every validation image across all ranks.

    Ten-crop batches [B, 10, 3, S, S] are scored by averaging the ten softmax outputs, as the paper did.
    """
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64)  # loss sum, top-1 hits, top-5 hits, images, unreadable
    for images, labels, skipped in loader:
        totals[4] += skipped
        if labels.numel() == 0:
            continue
        images, labels = to_device(images, labels, runtime.device, precision)
        with precision.autocast():
            if images.dim() == 5:
                batch, crops = images.shape[:2]
                probabilities = model(images.flatten(0, 1)).float().softmax(-1).view(batch, crops, -1).mean(1)
                log_probabilities = probabilities.clamp_min(1e-12).log()
            else:
                log_probabilities = model(images).float().log_softmax(-1)
        loss = F.nll_loss(log_probabilities, labels, reduction="sum")
        k = min(5, log_probabilities.shape[-1])
        top = log_probabilities.topk(k, dim=-1).indices
        hits = top.eq(labels.unsqueeze(-1))
        totals[0] += loss.item()
        totals[1] += hits[:, 0].sum().item()
        totals[2] += hits.any(-1).sum().item()
        totals[3] += labels.numel()
    loss_sum, top1, top5, count, skipped = distributed.all_reduce_sum(totals.tolist(), runtime)
    if count == 0:
        raise TrainingError(
            "no validation image could be read: add readable JPEG or PNG files to the val/ folder"
        )
    return {
        "val_loss": loss_sum / count,
        "top1": top1 / count,
        "top5": top5 / count,
        "val_images": int(count),
        "val_skipped": int(skipped),
    }


# --- the run --------------------------------------------------------------------------------------


@dataclass
class RunState:
    """How far the run got; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # >0 only after an interrupted epoch
    epoch_so_far: list[dict[str, float]] = field(default_factory=list)  # its EpochTally, one per rank
    best_top1: float = -1.0
    best_epoch: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # training and evaluation time so far, over all sessions of this run
    train_seconds: float = 0.0  # of which training steps, each epoch's warm-up step left out
    train_images: int = 0  # images those steps trained on, all ranks together (for images/s)
    initialisation: str = ""  # how the weights started


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
    lr: float
    best_weights: dict[str, torch.Tensor] | None = None  # rank 0: a CPU copy of the best epoch's weights
    writer: Any = None  # rank 0: TensorBoard

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
    if config.arch not in ("torchvision", "paper"):
        raise TrainingError(f"--arch {config.arch}: use torchvision or paper")
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
    state = RunState(initialisation=initialise(model, config) if checkpoint is None else "")
    memory_format = torch.channels_last if precision.channels_last else torch.preserve_format
    model.to(runtime.device, memory_format=memory_format)
    optimizer = build_optimizer(config, model)
    lr = config.effective_lr() * config.batch_size * runtime.world_size / LR_REFERENCE_BATCH
    schedule = LRSchedule(
        config.schedule,
        lr,
        steps_per_epoch=len(train_loader),
        epochs=config.epochs,
        warmup_epochs=config.warmup_epochs,
    )
    if checkpoint is not None:
        state = _restore(checkpoint, model, optimizer, schedule, precision, runtime)
        if state.epoch >= config.epochs:
            raise TrainingError(
                f"{config.out_dir} already finished {state.epoch} epochs: to train longer, resume with "
                f"--epochs N above {state.epoch}"
            )
        if runtime.is_main:
            _link_best_if_killed_before(config.out_dir, state)
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)
    return Run(
        config, runtime, source, model, optimizer, schedule, precision, train_loader, val_loader, state, lr
    )


def train(run: Run) -> ModelCard | None:
    """The epochs, then the hand-off to export (rank 0): the best epoch's model.safetensors + model.json."""
    config, state, source, runtime = run.config, run.state, run.source, run.runtime
    run.log(describe(asdict(config)))
    run.log(
        f"training {config.arch} AlexNet on {source.name}: "
        f"{len(source.train)} train / {len(source.val)} val images, {len(source.labels)} classes, "
        f"{config.image_size} px, {runtime.device.type} x {runtime.world_size} ({run.precision.name}), "
        f"{config.optimizer} lr {run.lr:.3g} (global batch {config.batch_size * runtime.world_size}), "
        f"{config.epochs} epochs"
        + (f", from epoch {state.epoch + 1}" if config.resume else f"; {state.initialisation}")
    )
    run.writer = _open_outputs(run)
    try:
        with StopRequest() as stop:
            for epoch in range(state.epoch, config.epochs):
                _one_epoch(run, epoch, stop)
    except Interrupted as interrupted:
        state.epoch_so_far = [asdict(t) for t in distributed.all_gather(interrupted.so_far, run.runtime)]
        _save_checkpoint(run, epoch=interrupted.epoch, step_in_epoch=interrupted.step)
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
        if run.writer is not None:
            run.writer.close()
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
            so_far=_carried_over(state, run.runtime),
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
    if run.runtime.is_main:
        with open(config.out_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        if run.writer is not None:
            for tag, name in TENSORBOARD_SCALARS.items():
                run.writer.add_scalar(tag, record[name], (epoch + 1) * run.schedule.steps_per_epoch)
            run.writer.flush()
    _save_checkpoint(run, epoch=state.epoch, step_in_epoch=0)
    if run.runtime.is_main and state.best_epoch == epoch + 1:
        link_atomically(config.out_dir / CHECKPOINT_FILE, config.out_dir / BEST_CHECKPOINT_FILE)


def _carried_over(state: RunState, runtime: Runtime) -> EpochTally:
    """This rank's tally of the interrupted epoch being resumed (none for a fresh epoch, or in checkpoints
    from before it was kept). Resumed with another number of processes, rank 0 carries the totals and
    each rank the time."""
    tallies = [EpochTally(**tally) for tally in state.epoch_so_far]
    if not tallies:
        return EpochTally()
    if len(tallies) == runtime.world_size:
        return tallies[runtime.rank]
    seconds = sum(t.seconds for t in tallies) / len(tallies)
    if runtime.rank != 0:
        return EpochTally(seconds=seconds)
    return EpochTally(
        loss_sum=sum(t.loss_sum for t in tallies),
        images=sum(t.images for t in tallies),
        skipped=sum(t.skipped for t in tallies),
        seconds=seconds,
    )


def _open_outputs(run: Run):
    """Rank 0 only: the output folder, metrics.jsonl trimmed to the checkpoint's epochs, TensorBoard."""
    if not run.runtime.is_main:
        return None
    config, out = run.config, run.config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / METRICS_FILE
    kept = []
    if config.resume and metrics.is_file():
        # Lines written after the checkpoint (a crash between the two writes) will be written again.
        lines = [line for line in metrics.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["epoch"] <= run.state.epoch]
    if not config.resume and (out / CHECKPOINT_FILE).is_file():
        print(
            f"note: starting a new run in {out}; the earlier run's files there are replaced as this one "
            "writes (Ctrl-C now and add --resume to continue that run instead)",
            file=sys.stderr,
        )
    metrics.write_text("".join(line + "\n" for line in kept))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional at run time
        return None
    # A new run hides the events of any earlier one in tb/; a resumed one those after its checkpoint.
    purge = run.state.epoch * run.schedule.steps_per_epoch + 1 if config.resume else 0
    return SummaryWriter(log_dir=str(out / "tb"), purge_step=purge)


def _save_checkpoint(run: Run, *, epoch: int, step_in_epoch: int) -> None:
    """The full resumable state, written atomically by rank 0 (with every rank's RNG states)."""
    rng = distributed.all_gather(rng_state(run.runtime.device), run.runtime)
    if not run.runtime.is_main:
        return
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {k: v.detach().cpu() for k, v in unwrap(run.model).state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "scaler": run.precision.scaler.state_dict() if run.precision.scaler is not None else None,
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "run": asdict(run.state),
        "rng": rng,
        "args": asdict(run.config),
        "labels": run.source.labels,
    }
    save_atomically(state, run.config.out_dir / CHECKPOINT_FILE)


def _link_best_if_killed_before(out_dir: Path, state: RunState) -> None:
    """A run killed between writing its best epoch's checkpoint.pt and linking it as checkpoint_best.pt
    left that epoch's weights in checkpoint.pt only: link them now, before the next epoch replaces it."""
    best = out_dir / BEST_CHECKPOINT_FILE
    if state.best_epoch == state.epoch and state.step_in_epoch == 0 and not best.exists():
        link_atomically(out_dir / CHECKPOINT_FILE, best)


def _write_hand_off(run: Run) -> ModelCard | None:
    """Rank 0: model.safetensors (the best epoch's weights) + model.json, for export. Written once at the
    end (and on Ctrl-C) rather than every epoch: the weights are 240 MB, the quickstart's epochs seconds."""
    if not run.runtime.is_main:
        return None
    weights = run.best_weights
    if weights is None:  # the best epoch was before a resume: its weights are in checkpoint_best.pt
        best = run.config.out_dir / BEST_CHECKPOINT_FILE
        weights = torch.load(best, map_location="cpu", weights_only=True)["model"]
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
        metrics=dict(state.best_metrics),
        training={
            "optimizer": config.optimizer,
            **recipe_record(asdict(config)),
            "momentum": config.momentum if config.optimizer == "sgd" else None,
            "weight_decay": config.effective_weight_decay(),
            "lr": run.lr,
            "lr_per_256_images": config.effective_lr(),
            "schedule": f"{config.schedule} after {config.warmup_epochs:g} warm-up epoch(s)",
            "batch_size": config.batch_size * runtime.world_size,
            "batch_size_per_process": config.batch_size,
            "epochs": state.epoch,
            "epochs_planned": config.epochs,
            "augmentation": source.augmentation,
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


def _restore(checkpoint, model, optimizer, schedule, precision, runtime: Runtime) -> RunState:
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["schedule"])
    if precision.scaler is not None and checkpoint.get("scaler"):
        precision.scaler.load_state_dict(checkpoint["scaler"])
    rng = checkpoint["rng"]
    # Each rank continues its own random streams when the world size is unchanged.
    set_rng_state(rng[runtime.rank] if len(rng) == runtime.world_size else rng[0], runtime.device)
    state = RunState(**checkpoint["run"])
    state.epoch, state.step_in_epoch = checkpoint["epoch"], checkpoint["step_in_epoch"]
    return state
