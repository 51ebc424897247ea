"""Decode an image and bring it to the model's input, exactly as training evaluated it.

One home for this arithmetic: the `alexnet classify` client and the demo page use it before sending
pixels, and export copies this file beside the server-side preprocessing model (`alexnet_preprocess`,
preprocess_model.py), which uses it on encoded bytes. Two steps:

1. The model's input conversion (model.json's `input_conversion`): `none` for photos; `digit-scan` for
   the digits model, which turns a person's picture of a digit into one of the 8x8 scans it learned from
   (`digit_scan`, below).
2. torchvision.transforms.v2 `Resize(resize_size)` followed by `CenterCrop(image_size)` on PIL images,
   which is the training package's evaluation transform (the tests compare the two pixel for pixel).

numpy and Pillow only: no torch on the serving side.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # how files of the accepted formats are named
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # larger uploads are refused before decoding
MAX_IMAGE_PIXELS = 36_000_000  # width x height, read from the header before decoding (6000 x 6000)


class ImageError(ValueError):
    """The bytes are not an image we accept; the message says what to send instead."""


def decode_image(
    data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode JPEG, PNG or WebP bytes into an RGB image (RGBA where it has transparency, which the digit-scan
    conversion reads as white paper), checking the limits before decoding."""
    if not data:
        raise ImageError("empty image: send the bytes of a JPEG, PNG or WebP file")
    if len(data) > max_bytes:
        raise ImageError(
            f"image is {len(data):,} bytes, above the limit of {max_bytes:,}: send a smaller file"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ACCEPTED_FORMATS:
                raise ImageError(f"{image.format} images are not accepted: send JPEG, PNG or WebP")
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} pixels, above the limit of {max_pixels:,} pixels: "
                    "resize it before sending"
                )
            return image.convert("RGBA" if _has_transparency(image) else "RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own header check, for the most extreme sizes
        raise ImageError(
            f"image is far above the limit of {max_pixels:,} pixels ({error}): resize it before sending"
        ) from error
    except UnidentifiedImageError:
        # Pillow's own message names only its BytesIO object: say what the bytes are instead.
        raise ImageError(f"not a readable JPEG, PNG or WebP image: {_what_the_bytes_are(data)}") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt image data
        raise ImageError(f"corrupt or truncated image ({error})") from error


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _what_the_bytes_are(data: bytes) -> str:
    head = data[:512]
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return "the file holds text, not a picture"
    return "its first bytes match no image format (a different file type, or a damaged image)"


def resize_and_crop(image: Image.Image, *, resize_size: int, image_size: int) -> np.ndarray:
    """Resize the shorter side to `resize_size` (bilinear), centre-crop `image_size`: uint8 [S, S, 3]."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short != resize_size:
        new_short, new_long = resize_size, int(resize_size * long / short)  # torchvision truncates too
        new_size = (new_short, new_long) if width <= height else (new_long, new_short)
        image = image.resize(new_size, Image.BILINEAR)
    width, height = image.size
    left = int(round((width - image_size) / 2.0))
    top = int(round((height - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def prepare_decoded(
    image: Image.Image, *, resize_size: int, image_size: int, input_conversion: str = "none"
) -> np.ndarray:
    """A decoded image in, the model's uint8 [S, S, 3] RGB pixels out: its input conversion, then the
    evaluation resize and crop."""
    converted = convert_image(image, input_conversion)
    return resize_and_crop(converted, resize_size=resize_size, image_size=image_size)


def prepare_image(
    data: bytes, *, resize_size: int, image_size: int, input_conversion: str = "none", **limits: int
) -> np.ndarray:
    """Encoded bytes in, the model's uint8 [S, S, 3] RGB pixels out."""
    return prepare_decoded(
        decode_image(data, **limits),
        resize_size=resize_size,
        image_size=image_size,
        input_conversion=input_conversion,
    )


# --- digit scans: a person's picture of a digit, made to look like the scans the digits model learned ----
#
# The digits model learned from the UCI scans (scikit-learn's copy): each handwritten digit was scaled
# into a 32x32 bitmap and every 4x4 block counted into one of 8x8 values, 0..16. In all 1,797 of them the
# ink spans the full height, and mostly the middle six of the eight columns whatever the digit (a "1" too:
# its width was stretched, and its stroke with it); the strokes cover 30% of the bitmap for every digit
# (29.6% for 7s to 32.2% for 8s), so the pen's width follows the digit's length of stroke, not the pen.
# `digit_scan` makes the same of a photo or a drawing: ink from either polarity on unevenly lit paper,
# cropped to the ink, stretched into that box, its strokes redrawn with a pen that covers 30%, counted.

CONVERSIONS = ("none", "digit-scan")  # model.json's `input_conversion`: what the image endpoint does first
SCAN_SIDE = 8  # the UCI scans: 8x8 counts ...
SCAN_BITMAP = 32  # ... of a 32x32 bitmap, each count a 4x4 block (0..16)
FINE = 4  # strokes are redrawn on a bitmap this many times finer (128x128): a pen step is 1/8 of a block
WORK_SIDE = 192  # the picture is first scaled to this longer side (small scans up, photos down)
BACKGROUND_SIDE = 48  # uneven light is measured on a copy this small: it varies slowly
INK_COVERAGE = 0.30  # of the 32x32 bitmap, as in the UCI scans
MIN_CONTRAST = 0.08  # of the full grey range: fainter than this, there is no ink to find


def convert_image(image: Image.Image, conversion: str) -> Image.Image:
    """The model's input conversion (model.json's `input_conversion`) of a decoded RGB image."""
    if conversion == "none":
        return image.convert("RGB")
    if conversion == "digit-scan":
        return Image.fromarray(digit_scan(image), mode="L").convert("RGB")
    raise ImageError(f"unknown input conversion {conversion!r}: use one of {', '.join(CONVERSIONS)}")


def on_white(image: Image.Image) -> Image.Image:
    """A transparent background (a sketchpad's canvas, a PNG with alpha) as white paper, in RGB."""
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return image.convert("RGB")


def digit_scan(image: Image.Image) -> np.ndarray:
    """A picture of one digit (any polarity, pen, size, place or lighting) -> uint8 [8, 8], ink bright on
    dark in the UCI scans' 17 grey levels (count x 255 / 16). An 8x8 picture already is a scan: it is only
    turned ink bright on dark."""
    if image.size == (SCAN_SIDE, SCAN_SIDE):
        grey = np.asarray(on_white(image).convert("L"), dtype=np.uint8)
        return 255 - grey if _ink_is_dark(grey.astype(np.float32) / 255.0) else grey
    ink = ink_strength(working_grey(on_white(image)))
    mask = ink >= _otsu_threshold(ink)
    mask &= sum(_neighbours(mask.astype(np.uint8))) >= 2  # specks go; a one-pixel line has two neighbours
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ImageError(
            "no digit found in the image: send a picture of one digit, dark on light or light on dark"
        )
    mask = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    fine = SCAN_BITMAP * FINE
    strokes = redraw_strokes(_thin(_into_scan_box(mask, fine)), INK_COVERAGE)
    bitmap = strokes.reshape(SCAN_BITMAP, FINE, SCAN_BITMAP, FINE).mean(axis=(1, 3)) >= 0.5
    block = SCAN_BITMAP // SCAN_SIDE
    counts = bitmap.reshape(SCAN_SIDE, block, SCAN_SIDE, block).sum(axis=(1, 3))
    return np.rint(counts * (255.0 / (block * block))).astype(np.uint8)


def working_grey(image: Image.Image) -> np.ndarray:
    """Float grey in [0, 1], scaled (aspect kept) to WORK_SIDE on its longer side."""
    width, height = image.size
    scale = WORK_SIDE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = image.convert("L").resize(size, Image.BILINEAR)
    return np.asarray(grey, dtype=np.float32) / 255.0


def ink_strength(grey: np.ndarray) -> np.ndarray:
    """How much ink each pixel holds, in [0, 1]: the paper's colour (read from the picture's border) says
    which polarity the ink has, and the paper's slowly varying light (uneven lighting, shadows, vignettes)
    is measured with a grey opening (wider than any stroke) and taken away."""
    ink = 1.0 - grey if _ink_is_dark(grey) else grey
    ink = np.clip(ink - _paper_light(ink), 0.0, None)
    strongest = float(_mean_of_3x3(ink).max())
    if strongest < MIN_CONTRAST:
        return np.zeros_like(ink)
    return np.clip(ink / strongest, 0.0, 1.0)


def _ink_is_dark(grey: np.ndarray) -> bool:
    """Whether the ink is darker than the paper, whose colour is the median of the picture's border: the
    ink is the extreme farther from it (extremes over 3x3 neighbourhoods: one noisy pixel does not count)."""
    border = np.concatenate([grey[:2].ravel(), grey[-2:].ravel(), grey[:, :2].ravel(), grey[:, -2:].ravel()])
    paper = float(np.median(border))
    smoothed = _mean_of_3x3(grey)
    return paper - smoothed.min() > smoothed.max() - paper


def _mean_of_3x3(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1, mode="edge")
    height, width = image.shape
    return sum(padded[i : i + height, j : j + width] for i in range(3) for j in range(3)) / 9.0


def _paper_light(ink: np.ndarray) -> np.ndarray:
    """The background under the strokes: a grey opening (min then max) much wider than a stroke, smoothed."""
    height, width = ink.shape
    scale = BACKGROUND_SIDE / max(height, width)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.rint(255 * ink).astype(np.uint8), mode="L").resize(small_size, Image.BILINEAR)
    reach = 2 * (BACKGROUND_SIDE // 8) + 1  # a quarter of the picture: wider than a marker's stroke
    opened = small.filter(ImageFilter.MinFilter(reach)).filter(ImageFilter.MaxFilter(reach))
    smooth = opened.filter(ImageFilter.BoxBlur(2)).resize((width, height), Image.BILINEAR)
    return np.asarray(smooth, dtype=np.float32) / 255.0


def _otsu_threshold(ink: np.ndarray) -> float:
    """Otsu's threshold between paper and ink (1979): the split of the histogram with the largest
    between-class variance. An inkless picture gets 1.01: nothing counts as ink."""
    if ink.max() <= 0.0:
        return 1.01
    counts, edges = np.histogram(ink, bins=64, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    behind = total - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight / total - mass) ** 2 / (weight * behind)
    between[~np.isfinite(between)] = 0.0
    return float(edges[int(np.argmax(between)) + 1])


def scan_box_width(aspect: float) -> float:
    """The width, as a fraction of the height, that a digit of this width/height ratio gets in the box: the
    UCI scans stretch narrow digits (a "1" spans five of eight columns, a "0" six)."""
    return float(np.clip(0.375 + 0.5 * aspect, 0.375, 0.875))


def _into_scan_box(mask: np.ndarray, side: int) -> np.ndarray:
    """The cropped ink stretched to the full height of a side x side bitmap, its width by scan_box_width,
    centred."""
    height, width = mask.shape
    box_width = max(1, round(side * scan_box_width(width / height)))
    coverage = Image.fromarray(mask.astype(np.float32), mode="F").resize((box_width, side), Image.BILINEAR)
    box = np.zeros((side, side), dtype=bool)
    left = (side - box_width) // 2
    box[:, left : left + box_width] = np.asarray(coverage) >= 0.5
    return box


def _neighbours(image: np.ndarray) -> list[np.ndarray]:
    """The 8 neighbours of every pixel, clockwise from the one above (P2..P9 in Zhang and Suen's paper)."""
    p = np.pad(image, 1)
    return [
        p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]
    ]  # fmt: skip


def _thin(image: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning (CACM 1984): the strokes' one-pixel-wide centre lines, whatever the pen."""
    image = image.astype(np.uint8)
    while True:
        removed = False
        for step in (0, 1):
            p2, p3, p4, p5, p6, p7, p8, p9 = _neighbours(image)
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            neighbours = p2 + p3 + p4 + p5 + p6 + p7 + p8 + p9
            transitions = sum(
                ((a == 0) & (b == 1)).astype(np.uint8) for a, b in zip(ring, ring[1:], strict=False)
            )
            if step == 0:
                side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (image == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & side
            if remove.any():
                image[remove] = 0
                removed = True
        if not removed:
            return image.astype(bool)


def redraw_strokes(centre_lines: np.ndarray, coverage: float) -> np.ndarray:
    """Widen one-pixel centre lines, a pixel at a time (alternating a cross and a square, a round pen),
    until they cover `coverage` of the bitmap; of the last two widths, the closer one."""
    target = coverage * centre_lines.size
    strokes = centre_lines
    for step in range(centre_lines.shape[0]):
        p = np.pad(strokes, 1)
        cross = p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:] | strokes
        wider = cross if step % 2 == 0 else cross | p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:]
        if wider.sum() >= target:
            return wider if wider.sum() - target < target - strokes.sum() else strokes
        strokes = wider
    return strokes
