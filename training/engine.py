"""One epoch of training and one evaluation, after pytorch/vision references/classification/train.py:
`train_one_epoch` and `evaluate`, for one process or one rank of DDP (totals summed over the ranks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.signals import StopRequest
from training import distributed
from training.distributed import Runtime
from training.errors import TrainingError
from training.optim import LRSchedule
from training.precision import Precision, to_device


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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """Train on one epoch's batches (from `first_step` on, adding to `so_far`, after an interrupted run).
    Raises Interrupted at the first step boundary after any rank's `stop.requested`."""
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
            synchronize(runtime.device)
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
    synchronize(runtime.device)
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
