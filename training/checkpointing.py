"""The run's checkpoints, in the manner of timm's CheckpointSaver: checkpoint.pt, the full resumable state,
written atomically after every epoch and on Ctrl-C mid-epoch; checkpoint_best.pt, a hard link to the best
epoch's; and `restore`, which puts a checkpoint's state back, so that a resumed run continues from the
very step where it stopped (the interrupted epoch's tallies carried over).

A checkpoint holds the model, optimizer, schedule and gradient-scaler states, the epoch (and the step
within it, after a Ctrl-C), the run's progress (`RunState`), every rank's random number generator
states, the run's settings and the labels. It is loaded with `weights_only=True`, so a checkpoint cannot
run code: only tensors and plain Python values go in (numpy's RNG state is stored as a tensor for that
reason).
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.files import atomic_write
from common.model_card import BEST_CHECKPOINT_FILE, CHECKPOINT_FILE
from training import distributed
from training.config import TrainConfig
from training.distributed import Runtime
from training.engine import EpochTally, Interrupted
from training.errors import TrainingError
from training.model_dir import unwrap
from training.optim import LRSchedule, match_parameter_layout
from training.precision import Precision

CHECKPOINT_FORMAT = "alexnet-e2e-training-checkpoint"
CHECKPOINT_VERSION = 1


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
    initial_kernels: torch.Tensor | None = None  # conv1's weights before training (`alexnet figures`)


class CheckpointSaver:
    """Writes and restores one run's checkpoints. Every rank calls `save_*` (they gather the RNG states);
    rank 0 writes."""

    def __init__(
        self,
        config: TrainConfig,
        runtime: Runtime,
        labels: list[str],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        precision: Precision,
    ) -> None:
        self.config, self.runtime, self.labels = config, runtime, labels
        self.model, self.optimizer, self.schedule, self.precision = model, optimizer, schedule, precision
        self.path = config.out_dir / CHECKPOINT_FILE
        self.best_path = config.out_dir / BEST_CHECKPOINT_FILE

    def save_epoch(self, state: RunState) -> None:
        """After an epoch: checkpoint.pt, and checkpoint_best.pt if this epoch is the best so far."""
        self.save(state, epoch=state.epoch, step_in_epoch=0)
        if self.runtime.is_main and state.best_epoch == state.epoch:
            link_atomically(self.path, self.best_path)

    def save_interrupted(self, state: RunState, interrupted: Interrupted) -> None:
        """Mid-epoch (Ctrl-C): the step to continue from, and every rank's tally of the epoch so far."""
        state.epoch_so_far = [asdict(t) for t in distributed.all_gather(interrupted.so_far, self.runtime)]
        self.save(state, epoch=interrupted.epoch, step_in_epoch=interrupted.step)

    def save(self, state: RunState, *, epoch: int, step_in_epoch: int) -> None:
        """The full resumable state, written atomically by rank 0 (with every rank's RNG states)."""
        rng = distributed.all_gather(rng_state(self.runtime.device), self.runtime)
        if not self.runtime.is_main:
            return
        scaler = self.precision.scaler
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "run": asdict(state),
            "rng": rng,
            "args": asdict(self.config),
            "labels": self.labels,
        }
        save_atomically(checkpoint, self.path)

    def restore(self, checkpoint: dict[str, Any]) -> RunState:
        """Put `checkpoint`'s states back into the model, optimizer, schedule, scaler and RNGs, for a run with
        epochs left to train; returns how far it got."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        match_parameter_layout(self.optimizer)  # a CPU run's NCHW state, resumed channels_last on a GPU
        self.schedule.load_state_dict(checkpoint["schedule"])
        if self.precision.scaler is not None and checkpoint.get("scaler"):
            self.precision.scaler.load_state_dict(checkpoint["scaler"])
        rng, runtime = checkpoint["rng"], self.runtime
        # Each rank continues its own random streams when the world size is unchanged.
        set_rng_state(rng[runtime.rank] if len(rng) == runtime.world_size else rng[0], runtime.device)
        state = RunState(**checkpoint["run"])
        state.epoch, state.step_in_epoch = checkpoint["epoch"], checkpoint["step_in_epoch"]
        if state.epoch >= self.config.epochs:
            raise TrainingError(
                f"{self.config.out_dir} already finished {state.epoch} epochs: to train longer, resume with "
                f"--epochs N above {state.epoch}"
            )
        if runtime.is_main:
            self._link_best_if_killed_before(state)
        return state

    def _link_best_if_killed_before(self, state: RunState) -> None:
        """A run killed between writing its best epoch's checkpoint.pt and linking it as checkpoint_best.pt
        left that epoch's weights in checkpoint.pt only: link them now, before the next epoch replaces it."""
        if state.best_epoch == state.epoch and state.step_in_epoch == 0 and not self.best_path.exists():
            link_atomically(self.path, self.best_path)

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The best epoch's model weights, from checkpoint_best.pt."""
        return torch.load(self.best_path, map_location="cpu", weights_only=True)["model"]


def carried_over(state: RunState, runtime: Runtime) -> EpochTally:
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by this package, or a TrainingError that says what to do."""
    out = path.parent
    if not path.is_file():
        raise TrainingError(
            f"no {path.name} in {out} to resume from: start a new run without --resume, "
            f"or pass the --out folder of the run you want to continue"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise TrainingError(
            f"{path} is truncated or not a training checkpoint ({str(error).splitlines()[0]}): "
            f"restore it from a copy, or copy {out / BEST_CHECKPOINT_FILE} over it to resume from the best "
            "epoch, "
            "or start over without --resume"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        hint = (
            " (it looks like a bare state dict: start from weights with --init PATH instead)"
            if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())
            else ""
        )
        raise TrainingError(
            f"{path} was not written by `alexnet train`{hint}: "
            "move it away and start a new run without --resume"
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"{path} has checkpoint version {state.get('version')}, this code reads {CHECKPOINT_VERSION}: "
            "resume with the version of the code that wrote it, or start over without --resume"
        )
    return state


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """torch.save to `path`, whole or not at all (a full disk leaves the previous checkpoint in place)."""
    with atomic_write(path) as f:
        torch.save(state, f)


def link_atomically(source: Path, target: Path) -> None:
    """Make `target` another name for `source`'s current content (no copy of a large file)."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's random number generator states, in a form `weights_only` loading accepts.

    On CUDA only `device`'s state (this rank's GPU): a run resumed on fewer GPUs has no state to set for
    the others, and each rank draws from its own device alone."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(position),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda_state = own_cuda_rng_state(state, device)
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)


def own_cuda_rng_state(state: dict[str, Any], device: torch.device | None) -> torch.Tensor | None:
    """The CUDA generator state for `device` in a saved `state`, or None (CPU run, or none saved).

    Checkpoints before this kept every visible GPU's state (a list); from those, the device's own entry
    where there is one, else the first: resuming an 8-GPU run on one GPU must not fail."""
    saved = state.get("cuda")
    if saved is None or device is None or device.type != "cuda":
        return None
    if isinstance(saved, list | tuple):
        index = device.index or 0
        return saved[index] if index < len(saved) else saved[0]
    return saved


def _as_tuples(value: Any) -> Any:
    # random.setstate wants tuples; a round trip through some serialisers gives lists.
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(item) for item in value)
    return value
