"""torchvision-format AlexNet weights: `--init PATH` for training, and `alexnet pretrained`.

The `torchvision` architecture has torchvision's state-dict keys, so torchvision's IMAGENET1K_V1
file (alexnet-owt-7be5be79.pth) loads as it is. The `paper` architecture has other layer shapes
and refuses such a file with a message that says why.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.errors import TrainingError

HEAD = "classifier.6."  # the last layer: its width is the number of classes


def read_state_dict(path: Path, option: str = "--init") -> dict[str, torch.Tensor]:
    """A state dict from a .pth file (tensors only: `weights_only`, so the file cannot run code)."""
    if not path.is_file():
        raise TrainingError(f"{option} {path}: no such file; pass torchvision's alexnet state dict (.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever is wrong with the file, the advice is the same
        raise TrainingError(
            f"{option} {path} cannot be read as a PyTorch state dict ({str(error).splitlines()[0]}): "
            "pass the .pth file of torchvision's alexnet (torch.save(model.state_dict(), PATH))"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # one of our training checkpoints: take its weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainingError(
            f"{option} {path} holds no state dict: pass the weights of torchvision.models.alexnet"
        )
    return state


def load_torchvision_state(
    model: nn.Module, architecture: str, state: dict[str, torch.Tensor], source: str
) -> str:
    """Copy a torchvision AlexNet state dict into `model`. With another number of classes, every layer but
    the last is loaded (fine-tuning) and the last starts fresh. Returns a note on what was loaded."""
    if architecture == "paper":
        raise TrainingError(
            f"{source}: torchvision's AlexNet weights have the single-column 64-192-384-256-256 shapes and "
            "cannot initialise the paper's two-column 96-256-384-384-256 network: use --arch torchvision "
            "to start from them, or train the paper network from scratch"
        )
    own = model.state_dict()
    if set(state) != set(own):
        missing = sorted(set(own) - set(state))[:3]
        raise TrainingError(
            f"{source} is not a torchvision AlexNet state dict (it lacks {', '.join(missing) or 'nothing'}"
            f" and has {len(set(state) - set(own))} other keys): "
            "pass the weights of torchvision.models.alexnet, "
            "e.g. alexnet-owt-7be5be79.pth"
        )
    fresh_head = []
    for name, tensor in own.items():
        if state[name].shape != tensor.shape:
            if not name.startswith(HEAD):
                raise TrainingError(
                    f"{source}: {name} has shape {tuple(state[name].shape)}, "
                    f"AlexNet's is {tuple(tensor.shape)}"
                )
            fresh_head.append(name)
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh_head}, strict=not fresh_head)
    if fresh_head:
        return (
            f"{source} (all but the last layer, which starts fresh for {own[HEAD + 'bias'].numel()} classes)"
        )
    return source


def load_torchvision_weights(model: nn.Module, architecture: str, path: Path) -> str:
    """`--init PATH`: refuse for the paper network before reading the file, then load it."""
    if architecture == "paper":
        load_torchvision_state(model, architecture, {}, f"--init {path}")
    return load_torchvision_state(model, architecture, read_state_dict(path), f"--init {path}")
