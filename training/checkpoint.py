"""The full resumable training state, written atomically, read back with clear errors.

A checkpoint holds the model, optimizer, schedule and gradient-scaler states, the epoch (and the
step within it, after a Ctrl-C), every rank's random number generator states and the run's
arguments. It is loaded with `weights_only=True`, so a checkpoint cannot run code: only tensors and
plain Python values go in (numpy's RNG state is stored as a tensor for that reason).
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.files import atomic_write
from training.errors import TrainingError

CHECKPOINT_FORMAT = "alexnet-e2e-training-checkpoint"
CHECKPOINT_VERSION = 1


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
            f"restore it from a copy, or copy {out / 'checkpoint_best.pt'} over it to resume from the best "
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
