"""Triton Python-backend model `<name>_preprocess`: encoded JPEG/PNG/WebP bytes -> uint8 [S, S, 3] RGB pixels.

`alexnet export onnx` copies this file to REPO/<name>_preprocess/<version>/model.py and
image_preprocessing.py beside it (triton_repository.layout.write_preprocess_model): that module is the
one implementation of decode + input conversion + resize + centre crop, shared with the `alexnet
classify` client and the demo page. Triton's Python backend puts the version folder on sys.path, so it
imports as a top-level module. The sizes, the input conversion and the limits come from this model's
config parameters, which export wrote from model.json.

Every request of a batch is answered on its own: an image that is empty, corrupt, too large or of
another format fails its own request with INVALID_ARG and a message saying what to send; the other
requests of the batch are answered normally.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# The model repository is the server's input, never its scratch space (and read-only in production):
# no __pycache__ beside the model.
sys.dont_write_bytecode = True
from image_preprocessing import ImageError, prepare_image  # noqa: E402  (beside this file)

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

    def _prepare(self, data: bytes) -> np.ndarray:
        return prepare_image(
            data,
            resize_size=self.resize_size,
            image_size=self.image_size,
            input_conversion=self.input_conversion,
            **self.limits,
        )

    def _respond(self, request) -> object:
        images = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
        try:
            pixels = np.stack([self._prepare(bytes(item)) for item in images.reshape(-1)])
        except ImageError as error:
            return _error(str(error), pb_utils.TritonError.INVALID_ARG)
        except Exception as error:  # noqa: BLE001  (whatever it is, it fails this request only)
            return _error(f"could not prepare the image: {error}", pb_utils.TritonError.INTERNAL)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, pixels)])

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]


def _error(message: str, code: int) -> object:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
