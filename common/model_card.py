"""`model.json`: the one record that travels with the weights.

Export, serving, the client and the demo read the input size, the mean/std and the labels from here
(or from what export derived from here); none of them restates them. This module imports only the
standard library so that torch-free code (serving, the demo) may read it too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import UserError
from common.files import write_json

MODEL_JSON = "model.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_CHECKPOINT_FILE = "checkpoint_best.pt"
METRICS_FILE = "metrics.jsonl"
# `alexnet figures` writes these beside the weights; export puts the kernels beside the served ONNX file too.
KERNELS_FILE = "figure3_kernels.png"
NEIGHBOURS_FILE = "figure4_neighbours.png"
FORMAT_VERSION = 1
ARCHITECTURES = ("torchvision", "paper")
# `dataset` starts with this for imported weights whose training data is not known (`alexnet pretrained`).
UNKNOWN_ORIGIN = "unknown"
# What the image endpoint does to a decoded picture before the resize and crop (`input_conversion`; the
# implementations are in triton_repository/image_preprocessing.py, which a unit test keeps in step):
# "none" for photos, "digit-scan" to make a person's picture of a digit look like the 8x8 scans the
# digits model learned from.
INPUT_CONVERSIONS = ("none", "digit-scan")
# Below 63 pixels the third max-pool of either architecture has nothing left to pool.
MIN_IMAGE_SIZE = 63


@dataclass
class ModelCard:
    """What a model directory holds, beside its weights."""

    architecture: str  # "torchvision" (torchvision.models.alexnet) or "paper" (NIPS 2012)
    labels: list[str]  # class names, index i is output i
    image_size: int  # side of the square RGB image the network sees
    resize_size: int  # evaluation: resize the shorter side to this, then centre-crop image_size
    mean: list[float]  # per-channel RGB mean, in [0, 1] units
    std: list[float]  # per-channel RGB standard deviation, in [0, 1] units
    dataset: str = ""  # what it was trained on ("digits", "synthetic", a folder, "torchvision:...")
    metrics: dict = field(default_factory=dict)  # validation: {"top1": 0.97, "top5": 1.0, "epoch": 12}
    training: dict = field(default_factory=dict)  # how it was trained: optimizer, lr, epochs, seconds...
    weights_sha256: str = ""  # of model.safetensors, so exports can name their source
    input_conversion: str = "none"  # see INPUT_CONVERSIONS: what a picture goes through before the resize
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise UserError(
                f"unknown architecture {self.architecture!r} in model.json: "
                f"use one of {', '.join(ARCHITECTURES)}"
            )
        if self.image_size < MIN_IMAGE_SIZE:
            raise UserError(
                f"image size {self.image_size} is too small for AlexNet: use at least {MIN_IMAGE_SIZE}"
            )
        if self.resize_size < self.image_size:
            raise UserError(
                f"resize size {self.resize_size} is smaller than the image size {self.image_size}: "
                "the centre crop needs resize_size >= image_size"
            )
        if self.input_conversion not in INPUT_CONVERSIONS:
            raise UserError(
                f"unknown input conversion {self.input_conversion!r} in model.json: "
                f"use one of {', '.join(INPUT_CONVERSIONS)}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("model.json needs three mean and three std values (R, G, B)")
        if not self.labels:
            raise UserError("model.json has no labels: a classifier needs at least one class")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def save(self, model_dir: str | Path) -> Path:
        """Write model.json atomically into `model_dir`."""
        path = Path(model_dir) / MODEL_JSON
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelCard:
        path = Path(model_dir) / MODEL_JSON
        if not path.is_file():
            raise UserError(
                f"no {MODEL_JSON} in {model_dir}: train first with `alexnet train --out {model_dir}` "
                f"or write ImageNet weights with `alexnet pretrained --out {model_dir}`"
            )
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as error:
            raise UserError(
                f"{path} is not a valid model card ({error}): "
                f"train again with `alexnet train --out {model_dir}`"
            ) from error


def repository_beside(model_dir: str | Path) -> Path:
    """A Triton model repository of its own for a model, beside its folder: runs/imagenet-repository for
    runs/imagenet. What `alexnet pretrained` suggests, and export when the repository asked for cannot
    take the model."""
    model_dir = Path(model_dir)
    return model_dir.parent / f"{model_dir.name}-repository"


def of_unknown_origin(dataset: str) -> bool:
    """Whether a card's `dataset` says nobody here knows what the weights were trained on."""
    return not dataset or dataset.startswith(UNKNOWN_ORIGIN)
