"""Real images for parity and INT8 calibration, at the model's own size, as uint8 [N, S, S, 3] RGB.

Either the validation split of the data set the model was trained on (the embedded digits, Fashion-MNIST's
test split, the synthetic set, or its image folder's val/ split), through the training package, or a folder of
JPEG/PNG/WebP files (`--calibration-data DIR`), decoded and resized by
triton_repository/image_preprocessing.py, the same code the server runs on uploaded images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.model_card import ModelCard
from export.errors import ExportError
from triton_repository.image_preprocessing import IMAGE_SUFFIXES

DEFAULT_LIMIT = 512  # enough to catch a real mismatch, small enough to run in seconds


def real_images(
    card: ModelCard, calibration_data: Path | None, limit: int = DEFAULT_LIMIT
) -> tuple[np.ndarray, str]:
    """(pixels, a description for reports) from `calibration_data` or the model's own validation split."""
    if calibration_data is not None:
        return folder_images(calibration_data, card, limit), f"{calibration_data} images"
    from training.data import NAMED_DATA, validation_pixels

    if card.dataset in NAMED_DATA or (card.dataset and Path(card.dataset).is_dir()):
        pixels, _labels = validation_pixels(card, data=card.dataset, limit=limit)
        if len(pixels) == 0:
            raise ExportError(f"no validation images in {card.dataset}: pass --calibration-data DIR")
        return np.ascontiguousarray(pixels, dtype=np.uint8), f"{card.dataset} validation images"
    raise ExportError(
        f"this model was trained on {card.dataset or 'an unknown data set'}: pass --calibration-data DIR "
        "with a few hundred of its images (JPEG/PNG/WebP, subfolders allowed) for the parity check"
    )


def folder_images(folder: Path, card: ModelCard, limit: int) -> np.ndarray:
    from triton_repository.image_preprocessing import ImageError, prepare_image

    if not folder.is_dir():
        raise ExportError(
            f"--calibration-data {folder} is not a folder: pass a folder of JPEG/PNG/WebP images"
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    if not files:
        raise ExportError(f"no JPEG/PNG/WebP images in {folder}: pass a folder of the model's kind of images")
    pixels = []
    for path in files:
        try:
            pixels.append(
                prepare_image(
                    path.read_bytes(),
                    resize_size=card.resize_size,
                    image_size=card.image_size,
                    input_conversion=card.input_conversion,
                )
            )
        except ImageError as error:
            raise ExportError(f"{path}: {error}; remove it from --calibration-data") from error
    return np.stack(pixels)
