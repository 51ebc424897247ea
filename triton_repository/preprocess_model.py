"""Triton Python-backend model `<name>_preprocess`: encoded JPEG/PNG/WebP bytes -> uint8 [S, S, 3] RGB pixels.

`alexnet export onnx` copies this file to REPO/<name>_preprocess/<version>/model.py and
image_preprocessing.py beside it (triton_repository.layout.write_preprocess_model): that module is the
one implementation of decode + input conversion + resize + centre crop, shared with the `alexnet
classify` client and the demo page. Triton's Python backend puts the version folder on sys.path, so it
imports as a top-level module. The sizes, the input conversion and the limits come from this model's
config parameters, which export wrote from model.json.

Every request of a batch is answered on its own: an image that is empty, corrupt, too large or of
another format fails its own request with INVALID_ARG and a message saying what to send; the other
requests of the batch are answered normally. A request's images together are held to a byte and a pixel
limit too (the pixels read from each header, before anything is decoded): a request of many huge but
well-compressed images would otherwise keep this model busy for tens of seconds.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# The model repository is the server's input, never its scratch space (and read-only in production):
# no __pycache__ beside the model.
sys.dont_write_bytecode = True
from image_preprocessing import ImageError, prepare_image  # noqa: E402  (beside this file)
from PIL import Image  # noqa: E402

INPUT_NAME = "image"
OUTPUT_NAME = "pixels"


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        parameters = json.loads(args["model_config"])["parameters"]

        def parameter(key: str) -> int:
            return int(parameters[key]["string_value"])

        self.image_size = parameter("image_size")
        self.resize_size = parameter("resize_size")
        # Repositories exported before input conversions existed have none.
        self.input_conversion = parameters.get("input_conversion", {}).get("string_value", "none")
        self.limits = {"max_bytes": parameter("max_image_bytes"), "max_pixels": parameter("max_image_pixels")}
        # Per request, all its images together (configs exported before these existed: 4 images' worth).
        self.request_bytes = int(parameters.get("max_request_bytes", {}).get("string_value", 0)) or (
            4 * self.limits["max_bytes"]
        )
        self.request_pixels = int(parameters.get("max_request_pixels", {}).get("string_value", 0)) or (
            4 * self.limits["max_pixels"]
        )

    def _prepare(self, data: bytes) -> np.ndarray:
        return prepare_image(
            data,
            resize_size=self.resize_size,
            image_size=self.image_size,
            input_conversion=self.input_conversion,
            **self.limits,
        )

    def _request_too_large(self, items: list[bytes]) -> str | None:
        """Why this request's images together are over the limits, or None."""
        total_bytes = sum(len(item) for item in items)
        if total_bytes > self.request_bytes:
            return (
                f"this request's {len(items)} images hold {total_bytes:,} bytes together, above the limit of "
                f"{self.request_bytes:,} per request: send fewer images per request"
            )
        total_pixels = sum(_header_pixels(item) for item in items)
        if total_pixels > self.request_pixels:
            return (
                f"this request's {len(items)} images hold {total_pixels:,} pixels together, above the limit "
                f"of {self.request_pixels:,} per request: send fewer or smaller images per request"
            )
        return None

    def _respond(self, request) -> object:
        images = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
        items = [bytes(item) for item in images.reshape(-1)]
        too_large = self._request_too_large(items)
        if too_large:
            return _error(too_large, pb_utils.TritonError.INVALID_ARG)
        try:
            pixels = np.stack([self._prepare(item) for item in items])
        except ImageError as error:
            return _error(str(error), pb_utils.TritonError.INVALID_ARG)
        except Exception as error:  # noqa: BLE001  (whatever it is, it fails this request only)
            return _error(f"could not prepare the image: {error}", pb_utils.TritonError.INTERNAL)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, pixels)])

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]


def _header_pixels(data: bytes) -> int:
    """Width x height from an image's header, without decoding it; 0 for what does not open (the decoding
    step says what is wrong with it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return width * height
    except Exception:  # noqa: BLE001  (corrupt, truncated, not an image, a decompression bomb)
        return 0


def _error(message: str, code: int) -> object:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
