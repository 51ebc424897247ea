"""Agreement on logits: the bounds, the faults --inject-fault plants, the model compared and its CPU float32
reference on real images (digits and two colour photographs), and `calibrate` (docs/gpu.md, "Agreement")."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gpu_check.harness import CPU_SIZES, Failure, Sizes

# Agreement is measured on logits, relative to their spread (the largest minus the smallest logit of the
# image, as the reference computes them): a bound that means the same for a confident model (logits apart
# by tens) as for a hesitant one. Each bound sits between the noise of the precision it is for and what
# a real bug does, an order of magnitude or more from each (docs/gpu.md has the measurements: a swapped
# channel order or a wrong mean moves the logits by about half their spread, bf16 by under 1%).
FP32_BOUND = 1e-4  # two float32 implementations on the CPU (PyTorch's kernels, ONNX Runtime's)
GPU_FP32_BOUND = 1e-3  # the GPU with TF32 off: autotuned cuDNN may pick Winograd or FFT convolutions
TF32_BOUND = 1e-2  # TF32 rounds inputs to a 10-bit mantissa (relative error ~5e-4 per product)
BF16_BOUND = 5e-2  # bf16 keeps 8 bits of significand (relative error ~4e-3 per value)
# The bugs --inject-fault plants in the compared side (never in the reference).
FAULTS = {
    "swap-channels": "the compared side gets BGR pixels (a decoder or client that hands over BGR)",
    "wrong-mean": "the compared side normalises with mean 0.5 and std 0.5 (the Normalize(0.5, 0.5) habit)",
    "stale-graph-input": "the CUDA graph replays without copying the new batch into its input buffer",
}
WRONG_MEAN, WRONG_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


@dataclass
class Compared:
    """The model the inference and ONNX parts compare, and the real images they compare it on."""

    network: nn.Module  # on the CPU, eval mode
    card: Any  # common.model_card.ModelCard
    source: str  # where it came from
    images: dict[str, np.ndarray]  # name -> uint8 [N, S, S, 3]
    reference: dict[str, np.ndarray]  # name -> CPU FP32 logits [N, classes]


def photo_crops(count: int, size: int, seed: int = 0) -> np.ndarray:
    """`count` square crops of scikit-learn's two colour photographs (a temple, a flower), resized to `size`:
    real colour images, where a swapped channel order shows (on the grey digits it cannot)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 4, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        crops.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8))
    return np.stack(crops)


@dataclass
class Agreement:
    """One side's logits against the reference's on the same images."""

    images: str
    count: int
    relative_error: float  # the largest |difference| of a logit, over the reference's spread of that image
    bound: float
    top1_disagreements: int  # beyond numerical ties
    ties: int  # top-1 differs, but the reference scores both classes within bound x spread of each other

    @property
    def passed(self) -> bool:
        return self.relative_error <= self.bound and self.top1_disagreements == 0

    def line(self) -> str:
        ties = f", {self.ties} ties" if self.ties else ""
        return (
            f"{self.images}: logits differ by {self.relative_error:.2e} of their spread "
            f"(bound {self.bound:.0e}), top-1 differs on {self.top1_disagreements} of {self.count}{ties}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "relative_error": float(f"{self.relative_error:.3g}"),
            "bound": self.bound,
            "top1_disagreements": self.top1_disagreements,
            "ties": self.ties,
            "images": self.count,
            "passed": self.passed,
        }


def compare_logits(images: str, reference: np.ndarray, candidate: np.ndarray, bound: float) -> Agreement:
    """Logits [N, classes] (or log-probabilities: both are centred per image first, which removes softmax's
    constant) against the reference's."""
    if reference.shape != candidate.shape:
        raise Failure(f"{images}: output shapes differ: {reference.shape} vs {candidate.shape}")
    reference = reference - reference.mean(axis=1, keepdims=True)
    candidate = candidate - candidate.mean(axis=1, keepdims=True)
    spread = np.maximum(reference.max(axis=1) - reference.min(axis=1), np.finfo(np.float32).tiny)
    relative = np.abs(candidate - reference).max(axis=1) / spread
    rows = np.arange(len(reference))
    reference_top1, candidate_top1 = reference.argmax(axis=1), candidate.argmax(axis=1)
    differ = reference_top1 != candidate_top1
    tie = (reference[rows, reference_top1] - reference[rows, candidate_top1]) <= bound * spread
    return Agreement(
        images=images,
        count=len(reference),
        relative_error=float(relative.max()) if len(relative) else 0.0,
        bound=bound,
        top1_disagreements=int(np.sum(differ & ~tie)),
        ties=int(np.sum(differ & tie)),
    )


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """What a probabilities output (the served graph's) says about the logits: log p = logit - constant."""
    return np.log(np.maximum(probabilities.astype(np.float64), 1e-37))


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(pixels[start : start + batch]) for start in range(0, len(pixels), batch)])


class PixelsToLogits(nn.Module):
    """The exported graph's computation up to the logits: uint8 [N, S, S, 3] -> cast, normalise -> network."""

    def __init__(self, network: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        from training.model import NormalisedPixels

        self.network = network
        self.normalise = NormalisedPixels(mean, std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalise(pixels))


def load_compared(sizes: Sizes, model_dir: Path) -> Compared:
    """The trained model, its validation images and crops of two colour photographs, and CPU FP32 logits."""
    from training.data import validation_pixels
    from training.model_dir import load_model_dir

    network, card = load_model_dir(model_dir, device="cpu")
    images: dict[str, np.ndarray] = {}
    data = card.dataset
    if data in ("digits", "synthetic") or (data and Path(data).is_dir()):
        pixels, _labels = validation_pixels(card, data=data, limit=sizes.compared_digits)
        name = "digits" if data == "digits" or "digits" in Path(data).name else "validation images"
        images[name] = np.ascontiguousarray(pixels)
    images["photos"] = photo_crops(sizes.compared_photos, card.image_size)
    reference_model = PixelsToLogits(network, card.mean, card.std).eval()
    with torch.inference_mode():
        reference = {
            name: run_in_batches(lambda p: reference_model(torch.from_numpy(p)).numpy(), pixels, 64)
            for name, pixels in images.items()
        }
    return Compared(network, card, str(model_dir), images, reference)


def describe_confidence(compared: Compared) -> dict[str, Any]:
    """How sure the compared model is: where its top class stands out, top-1 cannot flip from noise."""
    description: dict[str, Any] = {"model": compared.source, "val_top1": compared.card.metrics.get("top1")}
    for name, logits in compared.reference.items():
        probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        description[f"median top probability, {name}"] = round(float(np.median(probabilities.max(1))), 3)
    return description


def and_more(items: list[str], shown: int) -> str:
    return f" (and {len(items) - shown} more)" if len(items) > shown else ""


def calibrate(
    model_dir: Path, digits: int = 360, photos: int = 64
) -> tuple[Compared, list[tuple[str, Agreement]]]:
    """On the CPU, with a trained model: how far bf16 autocast and each injectable fault move the logits,
    against the loosest bound (docs/gpu.md, "Agreement"): (case, agreement) per case and set of images."""
    compared = load_compared(
        dataclasses.replace(CPU_SIZES, compared_digits=digits, compared_photos=photos), model_dir
    )
    card = compared.card

    def logits(pixels: np.ndarray, mean: list[float], std: list[float], bf16: bool = False) -> np.ndarray:
        model = PixelsToLogits(compared.network, mean, std).eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return run_in_batches(lambda p: model(torch.from_numpy(p.copy())).float().numpy(), pixels, 64)

    results = []
    for name, pixels in compared.images.items():
        reference = compared.reference[name]
        cases = {
            "bf16 autocast": logits(pixels, card.mean, card.std, bf16=True),
            "swap-channels": logits(pixels[..., ::-1], card.mean, card.std),
            "wrong-mean": logits(pixels, WRONG_MEAN, WRONG_STD),
            # What a CUDA graph replaying a stale input returns: another batch's logits.
            "stale-graph-input": np.roll(reference, len(reference) // 2, axis=0),
        }
        results += [
            (case, compare_logits(name, reference, candidate, BF16_BOUND))
            for case, candidate in cases.items()
        ]
    return compared, results
