"""Real images for the parity check and INT8 calibration, at the model's own size, as uint8 [N, S, S, 3] RGB.

In order of preference: a folder of JPEG/PNG/WebP files (`--calibration-data DIR`), decoded and resized
by triton_repository/image_preprocessing.py, the same code the server runs on uploads; the validation
split of the data set model.json names, where it is on this machine (the embedded digits, Fashion-MNIST's
test split, the synthetic set, or its image folder's val/ split), through the training package; else, for
the parity check only, photographs the project has: crops of scikit-learn's two sample photos. Parity
compares two implementations of the same network, so any real photo exercises it; INT8 calibration sets
the quantisation ranges from the images, so it needs the model's own kind and refuses the stand-ins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.model_card import ModelCard
from export.errors import ExportError
from triton_repository.image_preprocessing import IMAGE_SUFFIXES

DEFAULT_LIMIT = 512  # enough to catch a real mismatch, small enough to run in seconds
# Sample photo crops: the whole photo, then 2x2, 3x3 and 4x4 grids of crops at these fractions of its
# size, each also mirrored: 60 crops of each of the two photos.
CROP_GRID = ((1.0, 1), (0.7, 2), (0.5, 3), (0.35, 4))


def real_images(
    card: ModelCard, calibration_data: Path | None, limit: int = DEFAULT_LIMIT
) -> tuple[np.ndarray, str]:
    """(pixels, a description for reports) for the parity check: the model's own images where they are
    here, else crops of scikit-learn's sample photos."""
    found = model_images(card, calibration_data, limit)
    if found is not None:
        return found
    return sample_photo_crops(
        card, limit
    ), "crops of scikit-learn's sample photos (the model's data is not here)"


def calibration_images(
    card: ModelCard, calibration_data: Path | None, limit: int = DEFAULT_LIMIT
) -> tuple[np.ndarray, str]:
    """(pixels, description) of the model's own kind of images, for INT8 calibration; refuses stand-ins."""
    found = model_images(card, calibration_data, limit)
    if found is None:
        raise ExportError(
            f"--int8 calibrates on the model's own kind of images, and this model was trained on "
            f"{card.dataset or 'an unknown data set'}, which is not here: pass --calibration-data DIR with a "
            "few hundred of its images (JPEG/PNG/WebP, subfolders allowed), or export without --int8"
        )
    return found


def model_images(card: ModelCard, calibration_data: Path | None, limit: int) -> tuple[np.ndarray, str] | None:
    """`calibration_data`'s images, else the validation split of the model's data set if it is here."""
    if calibration_data is not None:
        return folder_images(calibration_data, card, limit), f"{calibration_data} images"
    from training.data import NAMED_DATA, validation_pixels

    if card.dataset in NAMED_DATA or (card.dataset and Path(card.dataset).is_dir()):
        pixels, _labels = validation_pixels(card, data=card.dataset, limit=limit)
        if len(pixels) == 0:
            raise ExportError(f"no validation images in {card.dataset}: pass --calibration-data DIR")
        return np.ascontiguousarray(pixels, dtype=np.uint8), f"{card.dataset} validation images"
    return None


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


def sample_photo_crops(card: ModelCard, limit: int = DEFAULT_LIMIT) -> np.ndarray:
    """Crops of scikit-learn's two sample photographs (a temple in China, a flower), whole and on finer
    grids, each also mirrored, resized and centre-cropped as the server does: 120 real photographs."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from triton_repository.image_preprocessing import resize_and_crop

    crops = []
    for photo in load_sample_images().images:
        image = Image.fromarray(photo)
        for box in crop_boxes(image.size):
            crop = image.crop(box)
            for view in (crop, crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
                crops.append(resize_and_crop(view, resize_size=card.resize_size, image_size=card.image_size))
    return np.stack(crops[:limit])


def crop_boxes(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes: for each CROP_GRID row, an n x n grid of crops of that fraction."""
    width, height = size
    boxes = []
    for fraction, per_side in CROP_GRID:
        crop_width, crop_height = round(width * fraction), round(height * fraction)
        for row in range(per_side):
            for column in range(per_side):
                left = round(column * (width - crop_width) / max(1, per_side - 1))
                top = round(row * (height - crop_height) / max(1, per_side - 1))
                boxes.append((left, top, left + crop_width, top + crop_height))
    return boxes
