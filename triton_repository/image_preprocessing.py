"""Decode an image and bring it to the model's input, exactly as training evaluated it.

One home for this arithmetic: the `alexnet classify` client uses it before sending pixels, and
export copies this file beside the server-side preprocessing model (`alexnet_preprocess`,
preprocess_model.py), which uses it on encoded bytes. It matches torchvision.transforms.v2
`Resize(resize_size)` followed by `CenterCrop(image_size)` on PIL images, which is the training
package's evaluation transform (the tests compare the two pixel for pixel). numpy and Pillow only:
no torch on the serving side.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # how files of the accepted formats are named
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # larger uploads are refused before decoding
MAX_IMAGE_PIXELS = 36_000_000  # width x height, read from the header before decoding (6000 x 6000)


class ImageError(ValueError):
    """The bytes are not an image we accept; the message says what to send instead."""


def decode_image(
    data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode JPEG, PNG or WebP bytes into an RGB image, checking the limits before decoding."""
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
            return image.convert("RGB")
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


def prepare_image(data: bytes, *, resize_size: int, image_size: int, **limits: int) -> np.ndarray:
    """Encoded bytes in, the model's uint8 [S, S, 3] RGB pixels out."""
    return resize_and_crop(decode_image(data, **limits), resize_size=resize_size, image_size=image_size)
