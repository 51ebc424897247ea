"""`alexnet pretrained`: torchvision's ImageNet AlexNet, or another file in its format, as a model directory.

Where the weights came from is checked, not assumed. torchvision publishes the start of each weights
file's SHA-256 in its name (alexnet-owt-7be5be79.pth; torch.hub checks the same on download). A file
whose SHA-256 matches is recorded as `AlexNet_Weights.IMAGENET1K_V1`, with torchvision's record of it:
the class names, the evaluation sizes, mean and std, and the published validation accuracy. Any other
file of the right shape is recorded as of unknown origin, with no accuracy (the demo and the exported
model say so), unless the user names the data set it was trained on with `--dataset`.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

from common.hashing import sha256_of
from common.model_card import UNKNOWN_ORIGIN, ModelCard
from training.errors import TrainingError
from training.model import build_model
from training.model_dir import save_model_dir
from training.weights import load_torchvision_state, read_state_dict

DATASET = "torchvision:AlexNet_Weights.IMAGENET1K_V1"


def published_hash(url: str) -> str:
    """The SHA-256 prefix torchvision publishes in a weights file's name (torch.hub's own rule)."""
    from torch.hub import HASH_REGEX

    match = HASH_REGEX.search(url.rsplit("/", 1)[-1])
    if match is None:
        raise ValueError(f"{url} names no hash")
    return match.group(1)


def published_weights() -> dict[str, Any]:
    """torchvision's AlexNet weights, by their published SHA-256 prefix."""
    from torchvision.models import AlexNet_Weights

    record = AlexNet_Weights.IMAGENET1K_V1
    return {published_hash(record.url): record}


def identify(digest: str, published: dict[str, Any]) -> Any | None:
    """The published weights whose hash `digest` (a file's SHA-256, hex) matches, or None."""
    return next((record for prefix, record in published.items() if digest.startswith(prefix)), None)


def download(url: str) -> Path:
    """torchvision's weights file, from torch.hub's cache or the internet (checked against its hash)."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=published_hash(url), progress=False)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as error:
        raise TrainingError(
            f"could not download {url} ({error}): no internet? pass --weights PATH with a copy of "
            f"{path.name} (torchvision's AlexNet IMAGENET1K_V1 weights), or put it in {path.parent}"
        ) from error
    return path


def write_pretrained(
    out: Path,
    weights: Path | None = None,
    *,
    dataset: str | None = None,
    published: dict[str, Any] | None = None,
) -> ModelCard:
    """Write model.safetensors + model.json into `out` for a torchvision-format AlexNet file (torchvision's
    IMAGENET1K_V1, downloaded, without `weights`). `dataset` names what the weights were trained on when
    they are not a published file; `published` maps SHA-256 prefixes to torchvision weight records
    (default: `published_weights()`)."""
    from torchvision.models import AlexNet_Weights

    imagenet = AlexNet_Weights.IMAGENET1K_V1
    path = weights if weights is not None else download(imagenet.url)
    state = read_state_dict(path, "--weights")
    labels = list(imagenet.meta["categories"])
    model = build_model("torchvision", len(labels))
    load_torchvision_state(model, "torchvision", state, f"--weights {path}")
    digest = sha256_of(path)
    record = identify(digest, published_weights() if published is None else published)
    preset = imagenet.transforms()
    card = ModelCard(
        architecture="torchvision",
        labels=labels,
        image_size=preset.crop_size[0],
        resize_size=preset.resize_size[0],
        mean=list(preset.mean),
        std=list(preset.std),
        dataset=DATASET if record is not None else dataset or unknown_origin(digest),
        metrics=published_accuracy(record) if record is not None else {},
        training={
            "source": str(path),
            "sha256": digest,
            "provenance": provenance(record, digest, dataset),
            "recipe": record.meta["recipe"] if record is not None else None,
        },
    )
    save_model_dir(model, card, out)
    return card


def unknown_origin(digest: str) -> str:
    return f"{UNKNOWN_ORIGIN} (imported weights, SHA-256 {digest[:12]}..., matching no published AlexNet)"


def published_accuracy(record: Any) -> dict[str, float]:
    """torchvision's published ImageNet-1K validation accuracy (single centre crop), as fractions."""
    accuracy = record.meta["_metrics"]["ImageNet-1K"]
    return {"top1": accuracy["acc@1"] / 100, "top5": accuracy["acc@5"] / 100}


def provenance(record: Any | None, digest: str, dataset: str | None) -> str:
    if record is not None:
        return (
            f"SHA-256 matches torchvision's published {record.url.rsplit('/', 1)[-1]}: trained by "
            "torchvision on ImageNet-1K, not here"
        )
    named = f"trained on {dataset}, as the user says (--dataset)" if dataset else "origin unknown"
    return (
        f"SHA-256 {digest} matches no published AlexNet weights: {named}; the labels are ImageNet-1K's "
        "because the file has 1,000 outputs; no accuracy is known"
    )
