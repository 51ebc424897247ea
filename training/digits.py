"""The embedded data set: scikit-learn's 1,797 handwritten digit scans (8x8, grey), no download.

Torch-free on purpose (numpy and scikit-learn only): the demo imports it to show real digits.
The split is fixed (stratified, seeded), so every run, every rank and every stage sees the same
validation images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DIGIT_LABELS = [str(digit) for digit in range(10)]
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0
# sklearn stores the scans as counts 0..16 (how many of a 4x4 block's pixels were inked).
_SKLEARN_MAX_INK = 16


@dataclass(frozen=True)
class DigitsSplit:
    """uint8 images [N, 8, 8] (0 = paper, 255 = ink) and int64 labels [N], for train and val."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


@lru_cache(maxsize=1)
def load_digits_split() -> DigitsSplit:
    """The fixed stratified 80/20 train/validation split of sklearn's digits, as uint8 images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / _SKLEARN_MAX_INK)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train_images, val_images, train_labels, val_labels = train_test_split(
        images, labels, test_size=VALIDATION_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    for array in (train_images, val_images, train_labels, val_labels):
        array.setflags(write=False)  # cached and shared: nobody may change it in place
    return DigitsSplit(train_images, train_labels, val_images, val_labels)
