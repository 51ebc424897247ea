"""Serving that heals itself and tells the truth: a generic client, retries, dead workers, the health script.

Each test that breaks something starts its own real Triton on free ports (the session's server stays
whole). Workers are killed with SIGKILL, as the kernel's OOM killer does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.client import NO_RETRY, InferenceRejected, RetryPolicy, ServerUnreachable, TritonClassifier
from serving.server import TritonServer, free_port

pytestmark = pytest.mark.slow

HEALTH_SCRIPT = Path(__file__).resolve().parent.parent / "serving" / "health.py"
RECOVERY_LIMIT_SECONDS = 30  # the bound from a worker's death to correct answers again
CALL_TIMEOUT = 10.0


def new_server(repository: Path, log_file: Path) -> TritonServer:
    return TritonServer(
        repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), log_file=log_file
    )


@pytest.fixture()
def own_server(digits_repository, tmp_path) -> Iterator[TritonServer]:
    """A real Triton for one test, which may break it."""
    with new_server(digits_repository, tmp_path / "triton.log") as server:
        yield server


def reference_top1(session, pixels: np.ndarray) -> list[int]:
    return list(session.run(None, {session.get_inputs()[0].name: pixels})[0].argmax(axis=1))


# ---- the input's declared layout ----


def test_a_generic_client_builds_the_request_from_metadata_and_config(
    digits_server, digit_files, served_onnx_session
):
    """Generic Triton image tooling reads only the input's datatype, shape and format: knowing nothing of
    this project, it lays a real digit out as the model wants and gets the reference's answer."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import model_config_pb2 as mc

    client = grpcclient.InferenceServerClient(digits_server.grpc_url)
    metadata = client.get_model_metadata("alexnet")
    config = client.get_model_config("alexnet").config
    (input_metadata,) = metadata.inputs
    (input_config,) = config.input
    assert input_config.format == mc.ModelInput.FORMAT_NHWC, "the pixels input must declare its layout"

    # What a generic client does (Triton's image_client): the layout decides where channels go.
    if input_config.format == mc.ModelInput.FORMAT_NHWC:
        height, width, channels = input_metadata.shape[-3:]
    else:
        channels, height, width = input_metadata.shape[-3:]
    image = Image.open(digit_files.paths[0]).convert("RGB" if channels == 3 else "L").resize((width, height))
    array = np.asarray(image, dtype=np.uint8)  # HWC
    if input_config.format != mc.ModelInput.FORMAT_NHWC:
        array = array.transpose(2, 0, 1)
    batch = array[np.newaxis]
    request_input = grpcclient.InferInput(input_metadata.name, list(batch.shape), input_metadata.datatype)
    request_input.set_data_from_numpy(batch)
    (output_metadata,) = metadata.outputs
    result = client.infer(
        "alexnet", [request_input], outputs=[grpcclient.InferRequestedOutput(output_metadata.name)]
    )
    served = result.as_numpy(output_metadata.name)
    assert served.argmax(axis=1).tolist() == reference_top1(served_onnx_session, batch)
    client.close()


# ---- the client's retries and timeouts ----


class CountingClient:
    """The classifier's real tritonclient, counting the inference calls made through it."""

    def __init__(self, classifier: TritonClassifier) -> None:
        self.calls = 0
        self.real = classifier._client()
        real_infer = self.real.infer

        def counted_infer(*args, **kwargs):
            self.calls += 1
            return real_infer(*args, **kwargs)

        self.real.infer = counted_infer


def test_invalid_arg_is_never_retried(digits_server):
    classifier = TritonClassifier(digits_server.grpc_url, retry=RetryPolicy(deadline=60))
    counter = CountingClient(classifier)
    with pytest.raises(InferenceRejected) as rejected:
        classifier.classify_pixels(np.zeros((1, 7, 7, 3), np.uint8))
    assert rejected.value.status == "INVALID_ARG"
    assert counter.calls == 1
    classifier.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_call_made_while_the_server_starts_is_retried_until_it_answers(
    digits_repository, digit_files, served_onnx_session, tmp_path, protocol
):
    server = new_server(digits_repository, tmp_path / "triton.log")
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with TritonClassifier(url, protocol=protocol, retry=NO_RETRY) as impatient:
        with pytest.raises(ServerUnreachable, match="no Triton server answers"):
            impatient.classify_pixels(np.zeros((1, 8, 8, 3), np.uint8))
    classifier = TritonClassifier(url, protocol=protocol, retry=RetryPolicy(deadline=120))
    pixels = np.zeros((1, 64, 64, 3), np.uint8)
    answers: list = []
    call = threading.Thread(target=lambda: answers.append(classifier.classify_pixels(pixels, top_k=1)))
    call.start()  # nothing listens yet: refused, then retried with backoff
    try:
        server.start()
        call.join(timeout=150)
        assert not call.is_alive() and answers, f"the call never came back; server log:\n{server.log_tail()}"
        assert answers[0][0][0].index == reference_top1(served_onnx_session, pixels)[0]
    finally:
        server.stop()
        classifier.close()


def test_a_server_that_never_answers_times_out_instead_of_hanging():
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        with TritonClassifier(url, timeout=1.0, retry=NO_RETRY) as classifier:
            with pytest.raises((InferenceRejected, ServerUnreachable)) as failed:
                classifier.classify_pixels(np.zeros((1, 8, 8, 3), np.uint8))
    assert getattr(failed.value, "status", "UNAVAILABLE") in ("TIMEOUT", "UNAVAILABLE")

