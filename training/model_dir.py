"""The hand-off to export: `model.safetensors` (weights only) beside `model.json`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from common.files import atomic_write
from common.model_card import WEIGHTS_FILE, ModelCard
from training.errors import TrainingError
from training.model import build_model


def save_model_dir(model: nn.Module, card: ModelCard, model_dir: str | Path) -> Path:
    """Write the weights and then model.json (with the weights' hash), each atomically."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in unwrap(model).state_dict().items()}
    # Serialised in memory (240 MB for AlexNet) and written by atomic_write, whose file has the usual
    # permissions and whose errors say what to do; safetensors' own save_file gives neither.
    data = safetensors.torch.save(state, metadata={"architecture": card.architecture})
    with atomic_write(model_dir / WEIGHTS_FILE) as f:
        f.write(data)
    card.weights_sha256 = hashlib.sha256(data).hexdigest()
    card.save(model_dir)
    return model_dir


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """The trained network in eval mode, and its card. Errors say which file to fix and how."""
    model_dir = Path(model_dir)
    card = ModelCard.load(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise TrainingError(
            f"no {WEIGHTS_FILE} in {model_dir}: train first with `alexnet train --out {model_dir}`"
        )
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as error:
        raise TrainingError(
            f"{weights} cannot be read ({error}): train again or copy the file again"
        ) from error
    model = build_model(card.architecture, card.num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise TrainingError(
            f"{weights} does not match {model_dir}/model.json "
            f"({card.architecture}, {card.num_classes} classes): the weights come from another model; "
            f"train again with `alexnet train --out {model_dir}`\n{error}"
        ) from error
    return model.to(device).eval(), card


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
