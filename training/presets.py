"""The image transforms, defined once (after pytorch/vision references/classification/presets.py).

Every transform takes a PIL image. Sizes are parameters: the paper trains at 224 from images
resized to 256; the quickstart trains at 64 from digits resized to 64.

- `paper`: the paper's 256x256 image (section 2: the shorter side resized to `resize_size`, the central
  square cropped), a random `image_size` patch of it, a horizontal flip and the PCA colour lighting of
  Krizhevsky et al. 2012, section 4.1.
- `torchvision`: RandomResizedCrop + horizontal flip, as torchvision trained its AlexNet weights.
- `shift`: resize to `resize_size`, a random `image_size` crop out of a few pixels of padding, no
  flip and no colour change: for digits, where a mirrored 2 is not a 2.
- `people`: `shift`, for the digits, to which training/data.py adds digits drawn as people write and type
  them, read by the digit-scan conversion the served model applies (training/people_digits.py).
- `shift-flip`: `shift` and a horizontal flip (Fashion-MNIST's first recipe: shifts cost it accuracy in
  5 epochs, docs/training.md).
- `flip`: resize to `image_size` and a horizontal flip, nothing else: Fashion-MNIST's, whose mirrored
  shirts and shoes are still shirts and shoes.
- `none`: the evaluation transform, for throughput runs.

Evaluation is resize + centre crop; `ten_crop_transform` is the paper's ten-patch test (of the same
256x256 square).
The uint8 pixels after `eval_pixels` are what export, the Triton preprocessing model and
triton_repository.image_preprocessing.resize_and_crop produce for the same image (a test checks it).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("paper", "torchvision", "shift", "people", "shift-flip", "flip", "none")

# The principal components of ImageNet's RGB pixel values (in [0, 1] units) that the paper's
# lighting augmentation moves along. The paper does not publish them; these are the values every
# reimplementation uses, from facebookarchive/fb.resnet.torch, datasets/imagenet.lua (`pca`).
# Columns of IMAGENET_EIGENVECTORS are the eigenvectors p1, p2, p3.
IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class PCALighting(v2.Transform):
    """Add [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T to every pixel, a_i ~ N(0, std), once per image.

    Krizhevsky et al. 2012, section 4.1 ("altering the intensities of the RGB channels"). Works on
    float images in [0, 1]; std 0.1 as in the paper.
    """

    def __init__(
        self,
        std: float = 0.1,
        eigenvalues: tuple[float, ...] = IMAGENET_EIGENVALUES,
        eigenvectors: tuple[tuple[float, ...], ...] = IMAGENET_EIGENVECTORS,
    ) -> None:
        super().__init__()
        self.std = std
        self.eigenvalues = torch.tensor(eigenvalues)
        self.eigenvectors = torch.tensor(eigenvectors)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = torch.randn(3) * self.std
        return {"shift": self.eigenvectors @ (alpha * self.eigenvalues)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor) or not inpt.is_floating_point():
            return inpt  # labels and the like pass through
        shift = params["shift"].to(inpt.device, inpt.dtype).view(3, 1, 1)
        return inpt + shift


def _to_normalised_tensor(mean: tuple[float, ...], std: tuple[float, ...]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]


def normalise_transform(*, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """uint8 image (PIL or tensor) -> float tensor in [0, 1] -> (x - mean) / std."""
    return v2.Compose(_to_normalised_tensor(mean, std))


class _NormaliseEachCrop:
    """TenCrop gives a tuple of crops; the network wants one [10, 3, S, S] tensor."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.normalise = normalise_transform(mean=mean, std=std)

    def __call__(self, crops: tuple) -> torch.Tensor:
        return torch.stack([self.normalise(crop) for crop in crops])


def eval_pixels(*, image_size: int, resize_size: int) -> v2.Compose:
    """PIL image -> PIL image of the model's size: resize the shorter side, centre crop."""
    return v2.Compose(
        [
            v2.Resize(resize_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(image_size),
        ]
    )


def eval_transform(
    *, image_size: int, resize_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> v2.Compose:
    """PIL image -> normalised float tensor [3, S, S], the way validation and serving see it."""
    return v2.Compose(
        [eval_pixels(image_size=image_size, resize_size=resize_size), *_to_normalised_tensor(mean, std)]
    )


def paper_square(resize_size: int) -> list[v2.Transform]:
    """Section 2: rescale the shorter side to 256 (`resize_size`), then crop out the central 256x256 patch."""
    return [
        v2.Resize(resize_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
        v2.CenterCrop(resize_size),
    ]


def ten_crop_transform(
    *, image_size: int, resize_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> v2.Compose:
    """PIL image -> [10, 3, S, S]: four corners and the centre of the paper's square image, and their
    mirror images (the paper's test, section 4.1)."""
    return v2.Compose(
        [
            *paper_square(resize_size),
            v2.TenCrop(image_size),
            _NormaliseEachCrop(mean, std),
        ]
    )


def train_transform(
    augmentation: str,
    *,
    image_size: int,
    resize_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> v2.Compose:
    """PIL image -> normalised, augmented float tensor [3, S, S]."""
    bilinear = v2.InterpolationMode.BILINEAR
    if augmentation == "paper":
        steps = [
            *paper_square(resize_size),
            v2.RandomCrop(image_size),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            PCALighting(std=0.1),
            v2.Normalize(mean=mean, std=std),
        ]
        return v2.Compose(steps)
    if augmentation == "torchvision":
        steps = [
            v2.RandomResizedCrop(image_size, interpolation=bilinear, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    elif augmentation in ("shift", "people", "shift-flip"):
        steps = [
            v2.Resize(resize_size, interpolation=bilinear, antialias=True),
            v2.RandomCrop(image_size, padding=max(1, image_size // 16)),
        ]
        if augmentation == "shift-flip":
            steps.append(v2.RandomHorizontalFlip())
    elif augmentation == "flip":
        steps = [eval_pixels(image_size=image_size, resize_size=resize_size), v2.RandomHorizontalFlip()]
    elif augmentation == "none":
        steps = [eval_pixels(image_size=image_size, resize_size=resize_size)]
    else:
        raise ValueError(f"unknown augmentation {augmentation!r}: use one of {', '.join(AUGMENTATIONS)}")
    return v2.Compose([*steps, *_to_normalised_tensor(mean, std)])
