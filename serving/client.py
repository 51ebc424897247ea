"""The Python client of the served AlexNet: `alexnet classify`, the demo and the tests all use it.

    classifier = TritonClassifier("127.0.0.1:8001")          # gRPC; protocol="http" for 127.0.0.1:8000
    classifier.wait_until_ready(timeout=60)
    for prediction in classifier.classify_files(["cat.jpg"], top_k=5)[0]:
        print(prediction.label, prediction.score)

Labels come from the server (Triton's classification extension answers "score:index:label"), and the input
size from the served config's parameters, so the client never restates what the model card says.

Every call has a timeout; a call that fails retryably (UNAVAILABLE: the server is overloaded and refused it,
or is restarting; or a refused connection) is tried again with capped, jittered exponential backoff until
the policy's deadline. A rejected request (INVALID_ARG and the like) and a timeout are never retried: the
server may still be computing the answer, and resending would add to its work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tenacity

from serving.errors import ServingError
from triton_repository.image_preprocessing import IMAGE_SUFFIXES, ImageError, prepare_image
from triton_repository.layout import (
    EMBEDDING_OUTPUT_NAME,
    IMAGE_INPUT_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    ModelNames,
    base_model,
    companion_model,
)

PROTOCOLS = ("grpc", "http")
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
PIXELS, IMAGE, PROBABILITIES, EMBEDDING = INPUT_NAME, IMAGE_INPUT_NAME, OUTPUT_NAME, EMBEDDING_OUTPUT_NAME
SEND_MODES = ("pixels", "bytes")
RETRYABLE_STATUSES = ("UNAVAILABLE",)  # overloaded, restarting or reloading the model: try again later
# What Triton says when it sheds load: the model's queue is full, or a request waited too long in it.
OVERLOAD_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a retryable failure is tried again: full-jitter exponential backoff, capped, to a deadline."""

    deadline: float = 30.0  # seconds for all attempts of one call together
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_backoff, max=self.max_backoff),
            stop=tenacity.stop_before_delay(self.deadline),
            reraise=True,
        )


NO_RETRY = RetryPolicy(deadline=0.0)


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class ServedModel:
    """What a client needs to know about the served model, read from the live server."""

    name: str
    version: str
    image_size: int
    resize_size: int
    labels: list[str]
    max_batch_size: int
    architecture: str
    dataset: str
    input_conversion: str = "none"  # what an image goes through before the resize (model.json's)


class InferenceRejected(ServingError):
    """The server refused or failed one request; `status` is Triton's code (INVALID_ARG, INTERNAL, ...)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(ServingError):
    """Nothing answers at the URL (refused, reset): the server is down or restarting."""


def is_retryable(error: BaseException) -> bool:
    """Worth trying again: the server is (re)starting or the model reloading; never a rejected request."""
    if isinstance(error, InferenceRejected):
        return error.status in RETRYABLE_STATUSES
    return isinstance(error, ServerUnreachable)


def list_image_files(paths: Iterable[str | Path], *, recursive: bool = False) -> list[Path]:
    """The files to classify: each file as given; a folder stands for its JPEG/PNG/WebP files, sorted by
    name (with `recursive`, those of its subfolders too), as Triton's example image client reads folders."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        candidates = path.rglob("*") if recursive else path.iterdir()
        found = sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            subfolders = not recursive and any(p.is_dir() for p in path.iterdir())
            hint = ": add --recursive to read its subfolders" if subfolders else ""
            raise ServingError(f"no JPEG, PNG or WebP files in the folder {path}{hint}")
        files.extend(found)
    return files


def parse_classification(entry: bytes | str) -> Prediction:
    """One "score:index:label" string of Triton's classification extension."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    score, index, label = text.split(":", 2)
    return Prediction(label=label, index=int(index), score=float(score))


def _status_name(error: Exception) -> str:
    """Triton's status code of a tritonclient error, the same name over gRPC and HTTP."""
    status = str(error.status() or "") if hasattr(error, "status") else ""
    by_status = {
        "StatusCode.INVALID_ARGUMENT": "INVALID_ARG",
        "400": "INVALID_ARG",
        "StatusCode.INTERNAL": "INTERNAL",
        "500": "INTERNAL",
        "StatusCode.UNAVAILABLE": "UNAVAILABLE",
        "503": "UNAVAILABLE",
        "StatusCode.NOT_FOUND": "NOT_FOUND",
        "404": "NOT_FOUND",
        "StatusCode.UNIMPLEMENTED": "UNSUPPORTED",
        "StatusCode.DEADLINE_EXCEEDED": "TIMEOUT",
    }
    return by_status.get(status, status or "UNKNOWN")


def _error_message(error: Exception) -> str:
    return error.message() if hasattr(error, "message") and callable(error.message) else str(error)


def _is_refused(error: Exception) -> bool:
    text = _error_message(error).lower()
    return isinstance(error, ConnectionError) or any(
        marker in text for marker in ("failed to connect", "connection refused", "connect failed")
    )


class TritonClassifier:
    """Classify images with the AlexNet a Triton server serves (gRPC or HTTP). Thread-safe."""

    def __init__(
        self,
        url: str | None = None,
        *,
        protocol: str = "grpc",
        model: str = "alexnet",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        """`timeout`: seconds one attempt of a call may take; `retry`: how retryable failures are retried."""
        if protocol not in PROTOCOLS:
            raise ServingError(f"unknown protocol {protocol!r}: use grpc or http")
        if timeout <= 0:
            raise ServingError(f"timeout {timeout}: give a positive number of seconds")
        self.protocol = protocol
        self.url = _strip_scheme(url or DEFAULT_URLS[protocol])
        self.model = model
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._local = threading.local()  # the HTTP client is not thread-safe: one per thread
        self._clients: list = []
        self._lock = threading.Lock()
        self._info: ServedModel | None = None
        self._max_batch: dict[str, int] = {}

    # -- transport ---------------------------------------------------------------------------------------

    @property
    def _module(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                with self._lock:  # the gRPC client is thread-safe: share one channel
                    if not self._clients:
                        self._clients.append(
                            self._module.InferenceServerClient(self.url, channel_args=grpc_channel_args())
                        )
                    client = self._clients[0]
            else:
                client = self._module.InferenceServerClient(
                    self.url, connection_timeout=self.timeout, network_timeout=self.timeout
                )
                with self._lock:
                    self._clients.append(client)
            self._local.client = client
        return client

    def _refused(self) -> ServerUnreachable:
        port_hint = "8001 for gRPC" if self.protocol == "grpc" else "8000 for HTTP"
        return ServerUnreachable(
            f"no Triton server answers at {self.url} ({self.protocol}): start one with "
            f"`alexnet serve --repository model_repository`, or point --url at yours "
            f"(default port {port_hint})"
        )

    def _call(self, what: str, function, *args, **kwargs):
        """Run a tritonclient call with a timeout per attempt, retrying retryable failures (RetryPolicy)."""
        started = time.monotonic()
        for attempt in self.retry.retrying():
            with attempt:
                return self._attempt(what, function, *args, **kwargs, **self._timeout_argument(started))
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _timeout_argument(self, started: float) -> dict[str, float]:
        """gRPC takes a timeout per call, cut to what is left of the deadline; HTTP's is set per client."""
        if self.protocol != "grpc":
            return {}
        left = self.retry.deadline - (time.monotonic() - started)
        return {"client_timeout": max(0.1, min(self.timeout, left)) if self.retry.deadline else self.timeout}

    def _attempt(self, what: str, function, *args, **kwargs):
        """One tritonclient call, turning its errors into ServingError that say what to do."""
        from tritonclient.utils import InferenceServerException

        try:
            return function(*args, **kwargs)
        except InferenceServerException as error:
            if _is_refused(error) and _status_name(error) in ("UNAVAILABLE", "UNKNOWN"):
                raise self._refused() from error
            status, message = _status_name(error), _error_message(error)
            if status == "UNAVAILABLE" and any(text in message for text in OVERLOAD_MESSAGES):
                message += " (the server is overloaded and sheds load: try again later)"
            raise InferenceRejected(f"{what} failed ({status}): {message}", status) from error
        except TimeoutError as error:  # HTTP: the server took the request and did not answer in time
            raise InferenceRejected(
                f"{what} failed (TIMEOUT): the server at {self.url} did not answer within {self.timeout:g} s "
                "(it may be overloaded): try again later, or pass a longer timeout",
                "TIMEOUT",
            ) from error
        except (ConnectionError, OSError) as error:
            raise self._refused() from error

    # -- health and metadata -----------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Server live and the model ready; False (no exception) when nothing answers."""
        try:
            client = self._client()
            timeout = self._timeout_argument(time.monotonic())
            return bool(client.is_server_live(**timeout) and client.is_model_ready(self.model, **timeout))
        except Exception:  # refused, reset, timed out: all mean "not ready"
            return False

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Poll until the model is ready; ServingError that says why not after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        live = False
        while True:
            try:
                client = self._client()
                call_timeout = self._timeout_argument(time.monotonic())
                live = bool(client.is_server_live(**call_timeout))
                if live and client.is_model_ready(self.model, **call_timeout):
                    return
            except Exception:
                live = False
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if not live:
            raise self._refused()
        raise ServingError(
            f"the server at {self.url} answers, but model {self.model!r} is not ready after {timeout:.0f}s: "
            f"check the server's log, or pick a served model with --model"
        )

    def _config(self, model: str) -> dict:
        client = self._client()
        if self.protocol == "grpc":
            response = self._call(f"reading {model}'s config", client.get_model_config, model, as_json=True)
            return response["config"]
        return self._call(f"reading {model}'s config", client.get_model_config, model)

    def model_config(self, model: str | None = None) -> dict:
        """The live config of `model` (default: this classifier's), as Triton's JSON."""
        return self._config(model or self.model)

    def max_batch_size(self, model: str) -> int:
        if model not in self._max_batch:
            self._max_batch[model] = int(self._config(model).get("max_batch_size", 0))
        return self._max_batch[model]

    def model_info(self) -> ServedModel:
        """Input size, labels and batch limit of the served model (read once, then cached)."""
        if self._info is None:
            config = self._config(self.model)
            parameters = {
                key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()
            }
            missing = [key for key in ("image_size", "resize_size") if not parameters.get(key)]
            if missing:
                raise ServingError(
                    f"model {self.model!r} has no {', '.join(missing)} parameter in its config: re-export it "
                    "with `alexnet export onnx`"
                )
            image_size = int(parameters["image_size"])
            (output,) = config["output"]
            num_classes = int(output["dims"][-1])
            self._max_batch[self.model] = int(config.get("max_batch_size", 0))
            self._info = ServedModel(
                name=self.model,
                version=self._ready_version(),
                image_size=image_size,
                resize_size=int(parameters["resize_size"]),
                labels=self._labels(image_size, num_classes),
                max_batch_size=int(config.get("max_batch_size", 0)),
                architecture=parameters.get("architecture", ""),
                dataset=parameters.get("dataset", ""),
                input_conversion=parameters.get("input_conversion") or "none",
            )
        return self._info

    def _ready_version(self) -> str:
        metadata = self._call("reading model metadata", self._client().get_model_metadata, self.model)
        versions = metadata["versions"] if isinstance(metadata, dict) else list(metadata.versions)
        return str(max(versions, key=int)) if versions else ""

    def _labels(self, image_size: int, num_classes: int) -> list[str]:
        """Every label, in index order: one classification request with class_count = number of classes."""
        blank = np.zeros((1, image_size, image_size, 3), dtype=np.uint8)
        (ranked,) = self._infer(self.model, PIXELS, blank, top_k=num_classes)
        labels = [""] * num_classes
        for prediction in ranked:
            labels[prediction.index] = prediction.label
        return labels

    # -- inference ---------------------------------------------------------------------------------------

    def _request(self, model: str, input_name: str, batch: np.ndarray, output):
        datatype = "BYTES" if batch.dtype == np.object_ else _triton_dtype(batch.dtype)
        infer_input = self._module.InferInput(input_name, list(batch.shape), datatype)
        infer_input.set_data_from_numpy(batch)
        return self._call(
            f"{model} inference", self._client().infer, model, [infer_input], outputs=[output]
        )

    def _infer(self, model: str, input_name: str, batch: np.ndarray, top_k: int) -> list[list[Prediction]]:
        output = self._module.InferRequestedOutput(PROBABILITIES, class_count=top_k)
        result = self._request(model, input_name, batch, output)
        ranked = result.as_numpy(PROBABILITIES)
        return [
            [parse_classification(entry) for entry in np.atleast_1d(row)]
            for row in ranked.reshape(len(batch), -1)
        ]

    def _infer_chunked(
        self, model: str, input_name: str, batch: np.ndarray, top_k: int
    ) -> list[list[Prediction]]:
        limit = self.max_batch_size(model) or len(batch)
        results: list[list[Prediction]] = []
        for start in range(0, len(batch), max(1, limit)):
            results.extend(self._infer(model, input_name, batch[start : start + limit], top_k))
        return results

    def classify_pixels(self, pixels: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """Top-k predictions for uint8 [N, S, S, 3] RGB pixels at the model's size, chunked by max batch."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[np.newaxis]
        if len(pixels) == 0:
            return []
        return self._infer_chunked(self.model, PIXELS, np.ascontiguousarray(pixels), top_k)

    def classify_bytes(self, images: Sequence[bytes], top_k: int = 5) -> list[list[Prediction]]:
        """Top-k predictions for encoded JPEG/PNG/WebP files, decoded and resized by the server."""
        if not images:
            return []
        return self._infer_chunked(self._companion("image"), IMAGE, _bytes_batch(images), top_k)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """fc7 features FP32 [N, 4096] of uint8 [N, S, S, 3] RGB pixels, from <model>_embedding."""
        pixels = np.asarray(pixels)
        batch = pixels[np.newaxis] if pixels.ndim == 3 else pixels
        return self._embed(self._companion("embedding"), PIXELS, batch)

    def embed_bytes(self, images: Sequence[bytes]) -> np.ndarray:
        """fc7 features of encoded JPEG/PNG/WebP files, decoded by the server (<model>_embedding_image)."""
        return self._embed(self._companion("embedding_image"), IMAGE, _bytes_batch(images))

    def _companion(self, kind: str) -> str:
        """The model export wrote beside this one for `kind` (triton_repository.layout.companion_model)."""
        name = companion_model(self.model, kind)
        if name is None:
            base = base_model(self.model)
            wanted, there = getattr(ModelNames(self.model), kind), getattr(ModelNames(base), kind)
            raise ServingError(
                f"export writes no {wanted}: {self.model} takes pixels and gives probabilities only; {there} "
                f"does this for the model {base}"
            )
        return name

    def _embed(self, model: str, input_name: str, batch: np.ndarray) -> np.ndarray:
        output = self._module.InferRequestedOutput(EMBEDDING)
        limit = max(1, self.max_batch_size(model) or len(batch))
        chunks = []
        for start in range(0, len(batch), limit):
            chunk = np.ascontiguousarray(batch[start : start + limit])
            chunks.append(self._request(model, input_name, chunk, output).as_numpy(EMBEDDING))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def embed_files(self, paths: Sequence[str | Path], send: str = "pixels") -> np.ndarray:
        """fc7 features FP32 [N, 4096] per file, row i for paths[i]; `send` as in classify_files."""
        return self._send_files(paths, send, self.embed_pixels, self.embed_bytes)

    def prepare_files(self, paths: Iterable[str | Path]) -> np.ndarray:
        """Decode, convert and resize files here, exactly as the server would: uint8 [N, S, S, 3]."""
        info = self.model_info()
        arrays = []
        for path in paths:
            try:
                data = Path(path).read_bytes()
                arrays.append(
                    prepare_image(
                        data,
                        resize_size=info.resize_size,
                        image_size=info.image_size,
                        input_conversion=info.input_conversion,
                    )
                )
            except OSError as error:
                raise ServingError(f"cannot read {path}: {error.strerror or error}") from error
            except ImageError as error:
                raise ServingError(f"{path}: {error}") from error
        return np.stack(arrays) if arrays else np.zeros((0, info.image_size, info.image_size, 3), np.uint8)

    def classify_files(
        self, paths: Sequence[str | Path], top_k: int = 5, send: str = "pixels"
    ) -> list[list[Prediction]]:
        """Top-k predictions per file. send="pixels" resizes here; send="bytes" lets the server decode."""
        return self._send_files(
            paths,
            send,
            lambda pixels: self.classify_pixels(pixels, top_k),
            lambda contents: self.classify_bytes(contents, top_k),
        )

    def _send_files(self, paths, send: str, for_pixels, for_bytes):
        """Resize here and call `for_pixels`, or send the files to `for_bytes`; errors name the file."""
        if send not in SEND_MODES:
            raise ServingError(f"unknown send mode {send!r}: use pixels or bytes")
        if send == "pixels":
            return for_pixels(self.prepare_files(paths))
        contents = []
        for path in paths:
            try:
                contents.append(Path(path).read_bytes())
            except OSError as error:
                raise ServingError(f"cannot read {path}: {error.strerror or error}") from error
        try:
            return for_bytes(contents)
        except InferenceRejected as error:
            if error.status != "INVALID_ARG":
                raise
            if len(contents) == 1:
                raise InferenceRejected(f"{paths[0]}: {error}", error.status) from error
            self._blame_file(paths, contents, for_bytes)
            raise

    @staticmethod
    def _blame_file(paths, contents, for_bytes) -> None:
        """A batch failed: resend one by one to name the file the server rejected."""
        for path, data in zip(paths, contents, strict=True):
            try:
                for_bytes([data])
            except InferenceRejected as error:
                raise InferenceRejected(f"{path}: {error}", error.status) from error

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing a broken connection must not hide the real error
                pass
        self._local = threading.local()

    def __enter__(self) -> TritonClassifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def grpc_channel_args() -> list[tuple[str, int]]:
    """tritonclient's channel settings, plus a short reconnect backoff: gRPC's default grows to tens of
    seconds while a server starts, and wait_until_ready would notice readiness that much later."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def _bytes_batch(images: Sequence[bytes]) -> np.ndarray:
    """Encoded files as Triton's BYTES tensor [N, 1]."""
    batch = np.empty((len(images), 1), dtype=np.object_)
    for row, data in enumerate(images):
        batch[row, 0] = bytes(data)
    return batch


def _strip_scheme(url: str) -> str:
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            return url[len(scheme) :]
    return url


def _triton_dtype(dtype: np.dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(np.dtype(dtype))
