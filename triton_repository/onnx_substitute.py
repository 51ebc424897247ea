"""Triton Python-backend model: the local stand-in for Triton's `onnxruntime` (and `tensorrt_plan`) backend.

`serving/server.py` copies this file as `<model>/<version>/model.py` into the scratch repository, beside
`substitute.json` (which ONNX file, device, threads). It opens its session with the project's own factory
(common/onnx_session.py), imported from the environment `alexnet serve` runs in, as numpy is. The config
around it is the exported one: same names, dims, labels, max_batch_size and dynamic batching. All requests
of a dynamic batch go through ONE ONNX Runtime run; a request with the wrong dtype or shape fails alone
with INVALID_ARG while the others are answered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from common.onnx_session import open_session

SETTINGS_FILE = "substitute.json"


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        settings = json.loads((version_dir / SETTINGS_FILE).read_text())
        self.model_name = config["name"]
        self.max_batch_size = int(config.get("max_batch_size", 0))
        (input_config,) = config["input"]
        (output_config,) = config["output"]
        self.input_name = input_config["name"]
        self.output_name = output_config["name"]
        self.input_dtype = np.dtype(pb_utils.triton_string_to_numpy(input_config["data_type"]))
        self.item_shape = tuple(int(dim) for dim in input_config["dims"])

        gpu = settings["device"] == "gpu"
        self.session, providers = open_session(
            version_dir / settings["onnx_file"],
            device="gpu" if gpu else "cpu",
            device_id=int(args.get("model_instance_device_id") or 0) if gpu else 0,
            threads=settings["intra_op_threads"],
            allow_spinning=settings["allow_spinning"],
            tensorrt=settings["tensorrt"],
            fp16=settings["fp16"],
            tensorrt_cache_dir=settings.get("tensorrt_cache_dir"),
        )
        session_inputs = [node.name for node in self.session.get_inputs()]
        session_outputs = [node.name for node in self.session.get_outputs()]
        self.onnx_input = self.input_name if self.input_name in session_inputs else session_inputs[0]
        self.onnx_output = self.output_name if self.output_name in session_outputs else session_outputs[0]
        # Readiness must mean warm: the exported config warms up through Triton; without it, do it here.
        if config.get("model_warmup"):
            warm_up = "warm-up by the config's model_warmup"
        else:
            warm_up = f"warmed up in {self._warm_up():.2f}s"
        pb_utils.Logger.log_info(
            f"{self.model_name}: ONNX Runtime {providers.running} on {settings['onnx_file']}, "
            f"{settings['intra_op_threads']} intra-op thread(s), {warm_up} "
            f"(local substitute for the {settings['source_backend']} backend)"
        )
        if not providers.as_asked:
            pb_utils.Logger.log_warn(providers.line(self.model_name))
        # What the session runs on, read back; the server announces it. Written outside the model's folder:
        # Triton polls that folder and would reload the model for every file written into it.
        instance = args.get("model_instance_name") or self.model_name
        records = Path(settings["provider_record_dir"])
        records.mkdir(parents=True, exist_ok=True)
        record = records / f"{instance}.json"
        record.write_text(json.dumps({"asked": providers.asked, "running": providers.running}))

    def _warm_up(self) -> float:
        """Run batch 1 and the largest batch once so the first requests pay no allocation or tuning cost."""
        start = time.perf_counter()
        for batch in sorted({1, max(1, self.max_batch_size)}):
            self._run(np.zeros((batch, *self.item_shape), dtype=self.input_dtype))
        return time.perf_counter() - start

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.onnx_output], {self.onnx_input: batch})[0]

    def _check(self, array: np.ndarray) -> str | None:
        """Why this request's tensor cannot run, or None. (Triton checks too; this keeps the model honest.)"""
        if array.dtype != self.input_dtype:
            return f"input '{self.input_name}' has dtype {array.dtype}, expected {self.input_dtype}"
        expected = ("N", *self.item_shape) if self.max_batch_size > 0 else self.item_shape
        shape_ok = (
            array.shape[1:] == self.item_shape if self.max_batch_size > 0 else array.shape == self.item_shape
        )
        if not shape_ok:
            return f"input '{self.input_name}' has shape {list(array.shape)}, expected {list(expected)}"
        if self.max_batch_size > 0 and not 1 <= array.shape[0] <= self.max_batch_size:
            return f"batch of {array.shape[0]} items: send 1 to {self.max_batch_size} per request"
        return None

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        accepted: list[int] = []
        arrays: list[np.ndarray] = []
        for index, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            array = None if tensor is None else tensor.as_numpy()
            problem = f"no input named '{self.input_name}'" if array is None else self._check(array)
            if problem is None:
                accepted.append(index)
                arrays.append(array if self.max_batch_size > 0 else array[np.newaxis])
            else:
                responses[index] = _error_response(problem, pb_utils.TritonError.INVALID_ARG)
        if not arrays:
            return responses
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        try:
            outputs = self._run(batch)
        except Exception as error:  # an ONNX Runtime failure fails this batch, never the server
            for index in accepted:
                responses[index] = _error_response(
                    f"ONNX Runtime failed: {error}", pb_utils.TritonError.INTERNAL
                )
            return responses
        offset = 0
        for index, array in zip(accepted, arrays, strict=True):
            count = len(array)
            result = outputs[offset : offset + count] if self.max_batch_size > 0 else outputs[0]
            offset += count
            responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, result)])
        return responses

    def finalize(self) -> None:
        self.session = None


def _error_response(message: str, code: int):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
