"""`alexnet pretrained`: torchvision's ImageNet AlexNet as a model directory export can take.

Everything the model card says comes from torchvision's own record of those weights
(`AlexNet_Weights.IMAGENET1K_V1`): the 1,000 class names, the evaluation sizes, mean and std, and
the published validation accuracy.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

from training.errors import TrainingError
from training.model import build_model
from training.model_card import ModelCard
from training.model_dir import save_model_dir
from training.weights import load_torchvision_state, read_state_dict

DATASET = "torchvision:AlexNet_Weights.IMAGENET1K_V1"


def download_state_dict(url: str) -> dict:
    """torchvision's weights file, from torch.hub's cache or the internet."""
    import torch

    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as error:
        file_name = url.rsplit("/", 1)[-1]
        raise TrainingError(
            f"could not download {url} ({error}): no internet? pass --weights PATH with a copy of "
            f"{file_name} (torchvision's AlexNet IMAGENET1K_V1 weights), or put it in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}"
        ) from error


def write_pretrained(out: Path, weights: Path | None = None) -> ModelCard:
    """Write model.safetensors + model.json for torchvision's IMAGENET1K_V1 AlexNet into `out`."""
    from torchvision.models import AlexNet_Weights

    record = AlexNet_Weights.IMAGENET1K_V1
    if weights is not None:
        state, source = read_state_dict(weights, "--weights"), f"--weights {weights}"
    else:
        state, source = download_state_dict(record.url), record.url
    labels = list(record.meta["categories"])
    model = build_model("torchvision", len(labels))
    load_torchvision_state(model, "torchvision", state, source)
    preset = record.transforms()
    accuracy = record.meta["_metrics"]["ImageNet-1K"]
    card = ModelCard(
        architecture="torchvision",
        labels=labels,
        image_size=preset.crop_size[0],
        resize_size=preset.resize_size[0],
        mean=list(preset.mean),
        std=list(preset.std),
        dataset=DATASET,
        # torchvision's published ImageNet-1K validation accuracy (single centre crop), as fractions.
        metrics={"top1": accuracy["acc@1"] / 100, "top5": accuracy["acc@5"] / 100},
        training={
            "source": str(weights) if weights is not None else record.url,
            "recipe": record.meta["recipe"],
            "note": "trained by torchvision on ImageNet-1K; not trained here",
        },
    )
    save_model_dir(model, card, out)
    return card
