"""Session fixtures for the serving stage: a real Triton on free ports serving the exported digits
repository, real image files of validation digits, and ONNX Runtime in-process as the reference."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class DigitFiles:
    """Validation digit scans written as image files (PNG, JPEG and WebP in turn), and their bytes."""

    paths: list[Path]
    contents: list[bytes]


def encode(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, format=image_format, **({"quality": 95} if image_format != "PNG" else {})
    )
    return buffer.getvalue()


def scan_as_rgb(scan: np.ndarray, side: int = 48) -> np.ndarray:
    """An 8x8 scan (255 = ink) as a dark-on-light RGB picture of `side` pixels, like a photographed digit."""
    enlarged = Image.fromarray(255 - scan, mode="L").resize((side, side), Image.BILINEAR)
    return np.asarray(enlarged.convert("RGB"))


@pytest.fixture(scope="session")
def digit_files(tmp_path_factory) -> DigitFiles:
    """12 real validation digits as image files, in three formats."""
    from training.digits import load_digits_split

    split = load_digits_split()
    folder = tmp_path_factory.mktemp("digit_files")
    paths, contents = [], []
    for index in range(12):
        image_format = IMAGE_FORMATS[index % len(IMAGE_FORMATS)]
        data = encode(scan_as_rgb(split.val_images[index]), image_format)
        path = folder / f"digit_{index:02d}_label_{split.val_labels[index]}.{image_format.lower()}"
        path.write_bytes(data)
        paths.append(path)
        contents.append(data)
    return DigitFiles(paths, contents)


@pytest.fixture(scope="session")
def served_onnx_session(digits_repository):
    """The repository's alexnet ONNX file in ONNX Runtime, in this process: the reference answers."""
    from serving.bench import inprocess_session, served_onnx_file

    return inprocess_session(served_onnx_file(digits_repository, "alexnet"))


@pytest.fixture(scope="session")
def digits_server(digits_repository, tmp_path_factory) -> Iterator:
    """A real tritonserver on free ports, serving the exported digits repository, for the session."""
    from serving.server import TritonServer, free_port

    log_file = tmp_path_factory.mktemp("triton") / "triton.log"
    server = TritonServer(
        digits_repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=log_file,
    )
    with server:
        yield server
