"""The sketchpad's drawing as the digits model sees it.

The drawing is classified exactly like an upload of the same picture: the served model's input
conversion (`digit-scan`, triton_repository/image_preprocessing.py) turns it into one of the 8x8 scans the
model learned from, the same function the server runs on uploaded images. This module only reads the
sketchpad's canvas and shows that scan. numpy and Pillow only: the demo never imports torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from demo.errors import DemoError
from triton_repository.image_preprocessing import ImageError, digit_scan


def drawing_image(drawing: np.ndarray) -> Image.Image:
    """The sketchpad's composite (RGBA on a transparent canvas, or RGB/grey) as a PIL image."""
    return Image.fromarray(np.asarray(drawing, dtype=np.uint8))


def drawing_to_digit_scan(drawing: np.ndarray) -> np.ndarray:
    """A drawing -> uint8 [8, 8] scan, ink bright on dark: what the digits model sees of it."""
    try:
        return digit_scan(drawing_image(drawing))
    except ImageError as error:
        raise DemoError("the sketchpad is empty: draw a digit first") from error
