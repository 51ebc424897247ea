"""`alexnet people-digits`: how the served digits model reads digits as people bring them.

The people-style set (training/people_digits.py: pens, a marker, chalk, photos, typed digits, the
sketchpad) goes to Triton twice, as a visitor's picture would: as its file to the image endpoint
(`alexnet_image`, which decodes and converts it on the server) and through the demo page's own functions
(its upload reader or its sketchpad canvas, then the pixels the page sends). Printed: top-1 per style by
either path, and how many answers the two paths share (they run the same conversion, so all).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from demo.errors import DemoError
from serving.client import TritonClassifier
from training.people_digits import STYLES, PeopleDigit, people_digits


@dataclass(frozen=True)
class StyleResult:
    style: str
    pictures: int
    endpoint_top1: float  # alexnet_image on the picture's file
    page_top1: float  # the demo page's functions, then alexnet on the pixels they prepare
    same_answers: int  # pictures both paths answered alike


def page_pixels(picture: PeopleDigit, model) -> np.ndarray:
    """The pixels the demo page sends for this picture: an upload goes through its file reader, a drawing
    arrives as the sketchpad's canvas."""
    from demo.app import picture_pixels
    from demo.drawing import drawing_image
    from triton_repository.image_preprocessing import decode_image

    if picture.style == "sketchpad":
        image = drawing_image(np.asarray(picture.image))
    else:
        image = decode_image(picture.encoded())  # what the page's upload reader does with the file
    return picture_pixels(image, model)


def measure(client: TritonClassifier, *, split: str = "test", per_digit: int = 10) -> list[StyleResult]:
    model = client.model_info()
    if model.input_conversion != "digit-scan":
        raise DemoError(
            f"the served model {model.name!r} does not read digit scans (its input conversion is "
            f"{model.input_conversion!r}): serve a digits model trained by `alexnet train --data digits`"
        )
    results = []
    for style in STYLES:
        pictures = people_digits(style, split, per_digit=per_digit)
        truth = [model.labels[picture.label] for picture in pictures]
        served = [top[0].label for top in client.classify_bytes([p.encoded() for p in pictures], top_k=1)]
        pixels = np.stack([page_pixels(picture, model) for picture in pictures])
        page = [top[0].label for top in client.classify_pixels(pixels, top_k=1)]
        results.append(
            StyleResult(
                style,
                len(pictures),
                float(np.mean([a == b for a, b in zip(served, truth, strict=True)])),
                float(np.mean([a == b for a, b in zip(page, truth, strict=True)])),
                sum(a == b for a, b in zip(served, page, strict=True)),
            )
        )
    return results


def format_table(results: list[StyleResult], seconds: float) -> str:
    lines = [f"{'style':<14} {'pictures':>8} {'image endpoint':>15} {'demo page':>10} {'same answer':>12}"]
    for r in results:
        lines.append(
            f"{r.style:<14} {r.pictures:>8} {r.endpoint_top1:>15.1%} {r.page_top1:>10.1%} "
            f"{r.same_answers:>7}/{r.pictures}"
        )
    worst = min(results, key=lambda r: r.endpoint_top1)
    lines.append(f"lowest: {worst.style} at {worst.endpoint_top1:.1%}; {seconds:.0f} s")
    return "\n".join(lines)


def run(url: str | None, *, split: str, per_digit: int) -> tuple[list[StyleResult], str]:
    started = time.perf_counter()
    with TritonClassifier(url, protocol="grpc") as client:
        client.wait_until_ready(timeout=30)
        results = measure(client, split=split, per_digit=per_digit)
    return results, format_table(results, time.perf_counter() - started)


def as_json(results: list[StyleResult]) -> list[dict]:
    return [asdict(result) for result in results]
