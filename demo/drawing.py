"""Turn a sketchpad drawing into a digit scan like the ones the digits model was trained on.

The embedded digits (scikit-learn's copy of the UCI set) were made like this: the handwritten digit
was size-normalised into a 32x32 bitmap (full height, aspect kept, centred), then each 4x4 block was
counted into one of 8x8 grey levels; the training package shows them ink bright on dark, 0..255.
A drawing goes through the same steps, so what the model sees looks like what it learned from:
greyscale, ink bright on dark, cropped to the ink, fitted into a square, strokes thickened to the
scans' pen width, block-averaged down to the scan size and stretched so the darkest ink is 255.
numpy and Pillow only: the demo never imports torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from demo.errors import DemoError

BLOCK = 4  # the UCI scans count 4x4 blocks of a 32x32 bitmap into one 8x8 pixel
SUPERSAMPLE = 4  # work on a 4x finer bitmap (128x128) so a fine pen survives the scaling
PEN_WIDTH = 4  # the scans' strokes are about one block (4 of 32 pixels) wide
INK_THRESHOLD = 0.25  # of full ink: fainter pixels (anti-aliasing, smudges) do not count as ink


def ink_from_drawing(drawing: np.ndarray) -> np.ndarray:
    """Float ink in [0, 1] (1 = darkest stroke) from an RGB(A) or greyscale drawing on a light canvas."""
    image = Image.fromarray(np.asarray(drawing, dtype=np.uint8))
    if image.mode in ("RGBA", "LA"):  # transparent canvas: flatten onto white paper first
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return 1.0 - grey


def drawing_to_digit_scan(drawing: np.ndarray, scan_size: int = 8) -> np.ndarray:
    """A drawing (dark ink on a light canvas) -> uint8 [scan_size, scan_size] scan, ink bright on dark."""
    ink = ink_from_drawing(drawing) >= INK_THRESHOLD
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        raise DemoError("the sketchpad is empty: draw a digit first")
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    cell = BLOCK * SUPERSAMPLE
    bitmap = _fit_into_square(ink, scan_size * cell)
    bitmap = _thicken_strokes(bitmap, target_width=PEN_WIDTH * SUPERSAMPLE)
    counts = bitmap.reshape(scan_size, cell, scan_size, cell).mean(axis=(1, 3))
    return np.round(255.0 * counts / counts.max()).astype(np.uint8)


def _fit_into_square(ink: np.ndarray, box: int) -> np.ndarray:
    """Scale the ink's bounding box to fill `box` along its longer side (aspect kept), centre it: a bitmap."""
    height, width = ink.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    coverage = Image.fromarray(ink.astype(np.float32), mode="F").resize(new_size, Image.BOX)
    square = np.zeros((box, box), dtype=bool)
    top, left = (box - new_size[1]) // 2, (box - new_size[0]) // 2
    square[top : top + new_size[1], left : left + new_size[0]] = np.asarray(coverage) >= INK_THRESHOLD
    return square


def _thicken_strokes(bitmap: np.ndarray, *, target_width: float) -> np.ndarray:
    """Dilate thin strokes (a fine pen on a big canvas) to the scans' pen width; thick ones stay."""
    image = Image.fromarray(bitmap.astype(np.uint8) * 255, mode="L")
    for _ in range(int(target_width)):  # each pass widens a stroke by 2 pixels; bounded either way
        if _stroke_width(np.asarray(image) > 0) + 1 >= target_width:
            break
        image = image.filter(ImageFilter.MaxFilter(3))
    return np.asarray(image) > 0


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: ink area over half the outline (a stroke of length L has 2L of edge)."""
    area = int(ink.sum())
    padded = np.pad(ink, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & ink
    edge = area - int(interior.sum())
    return 2.0 * area / max(edge, 1)
