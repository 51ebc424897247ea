"""Overload is not death, and nobody else on the machine can make the server run code.

The shedding tests serve a copy of the digits repository whose queues hold two requests, and send more
work than that at once: the excess is refused at once with UNAVAILABLE (HTTP 503), the rest answered
correctly, the supervisor restarts nothing, and the project's client gets every answer by backing off.
No test here depends on how fast the host is: a 6000x6000 PNG takes the preprocessing model a visible
fraction of a second on any host, and only counts (refused or not, restarted or not) are asserted.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from serving import health
from serving.client import NO_RETRY, OVERLOAD_MESSAGES, InferenceRejected, RetryPolicy, TritonClassifier
from serving.server import TritonServer, free_port
from serving.supervisor import Supervisor
from triton_repository.configs import read_config, write_config
from triton_repository.server_flags import CLOSED_APIS, CLOSED_HEADER, CLOSED_VALUE

pytestmark = pytest.mark.slow

QUEUE_LIMIT = 2  # one place for a user even while a health probe holds the other
BURST = 10


def big_flat_png() -> bytes:
    """6000x6000 pixels (the per-image limit) of paper with one dark stroke, a "1" for the digits model's
    conversion: a small file to send, a visible time to decode."""
    image = Image.new("RGB", (6000, 6000), (200, 200, 200))
    ImageDraw.Draw(image).rectangle((2800, 1000, 3200, 5000), fill=(20, 20, 20))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_queue_server(digits_repository, tmp_path_factory) -> Iterator[TritonServer]:
    """The digits repository with every queue limited to QUEUE_LIMIT waiting requests."""
    repository = tmp_path_factory.mktemp("small_queue") / "model_repository"
    shutil.copytree(digits_repository, repository, copy_function=os.symlink)
    for name in ("alexnet", "alexnet_preprocess"):
        config = read_config(repository / name)
        config.dynamic_batching.default_queue_policy.max_queue_size = QUEUE_LIMIT
        (repository / name / "config.pbtxt").unlink()  # a symlink into the shared repository
        write_config(repository / name, config)
    server = TritonServer(
        repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=repository.parent / "triton.log",
    )
    with server:
        yield server


@pytest.fixture()
def supervised(small_queue_server) -> Iterator[Supervisor]:
    """The supervisor `alexnet serve` runs, checking health every half second while a test overloads."""
    lines: list[str] = []
    supervisor = Supervisor(small_queue_server, log=lines.append, probe_every=0.5)
    stop = threading.Event()
    watcher = threading.Thread(target=supervisor.run, kwargs={"stop": stop}, daemon=True)
    watcher.start()
    yield supervisor
    stop.set()
    watcher.join(timeout=60)
    assert not supervisor.recoveries, f"an overloaded server must not be restarted: {lines}"


def shed(detail: str) -> bool:
    """Triton's refusal of what it cannot queue: a full queue, or (on a slow host) too long in it."""
    return any(message in detail for message in OVERLOAD_MESSAGES)


def burst(send, count: int = BURST) -> list[tuple[str, str]]:
    """Call `send()` from `count` threads at once: (outcome, detail) per call."""
    outcomes: list[tuple[str, str]] = []
    start = threading.Barrier(count)

    def one() -> None:
        start.wait()
        try:
            outcomes.append(("answered", str(send())))
        except Exception as error:  # noqa: BLE001  (what failed, and how, is the result)
            outcomes.append((type(error).__name__, str(error)))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def test_excess_requests_are_refused_at_once_and_the_rest_answered(small_queue_server, supervised):
    import tritonclient.grpc as grpcclient

    image = np.array([[big_flat_png()]], dtype=np.object_)
    expected = TritonClassifier(small_queue_server.grpc_url).classify_bytes([image[0, 0]], top_k=1)[0][0]

    def send_grpc():
        client = grpcclient.InferenceServerClient(small_queue_server.grpc_url)
        request = grpcclient.InferInput("image", [1, 1], "BYTES")
        request.set_data_from_numpy(image)
        output = grpcclient.InferRequestedOutput("probabilities", class_count=1)
        answer = client.infer("alexnet_image", [request], outputs=[output], client_timeout=60)
        return answer.as_numpy("probabilities")[0][0].decode().split(":")[1]

    outcomes = burst(send_grpc)
    refused = [detail for outcome, detail in outcomes if outcome != "answered"]
    answers = [detail for outcome, detail in outcomes if outcome == "answered"]
    assert refused and answers, outcomes
    assert all("StatusCode.UNAVAILABLE" in detail and shed(detail) for detail in refused), refused
    assert set(answers) == {str(expected.index)}


def test_http_refusals_are_503(small_queue_server, supervised):
    image = big_flat_png()
    header = json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": 4 + len(image)}}]}
    ).encode()  # fmt: skip
    data = header + len(image).to_bytes(4, "little") + image  # Triton's binary tensor extension

    def send_http():
        request = urllib.request.Request(
            f"http://{small_queue_server.http_url}/v2/models/alexnet_image/infer",
            data=data,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            raise RuntimeError(health.http_error(error)) from None

    outcomes = burst(send_http)
    refused = [detail for outcome, detail in outcomes if outcome != "answered"]
    assert refused and len(refused) < len(outcomes), outcomes
    assert all(detail.startswith("HTTP 503") and shed(detail) for detail in refused), refused


def test_the_project_client_backs_off_and_gets_every_answer(small_queue_server, supervised):
    classifier = TritonClassifier(small_queue_server.grpc_url, retry=RetryPolicy(deadline=120))
    attempts = 0
    real_infer = classifier._client().infer

    def counted_infer(*args, **kwargs):
        nonlocal attempts
        attempts += 1
        return real_infer(*args, **kwargs)

    classifier._client().infer = counted_infer
    image = big_flat_png()
    outcomes = burst(lambda: classifier.classify_bytes([image], top_k=1)[0][0].index)
    classifier.close()
    assert [outcome for outcome, _ in outcomes] == ["answered"] * BURST, outcomes
    assert len({detail for _, detail in outcomes}) == 1
    assert attempts > BURST, "some calls must have been refused, then retried"


def test_the_refusal_says_the_server_is_overloaded(small_queue_server, supervised):
    image = big_flat_png()
    impatient = TritonClassifier(small_queue_server.grpc_url, retry=NO_RETRY)
    outcomes = burst(lambda: impatient.classify_bytes([image], top_k=1))
    impatient.close()
    refused = [detail for outcome, detail in outcomes if outcome == InferenceRejected.__name__]
    assert refused and all("(UNAVAILABLE)" in d and "overloaded" in d for d in refused), outcomes


# -- no secret on the command line; no other local user can load a model ----------------------------------

OTHER_USER_SCRIPT = r"""
import base64, json, os, socket, sys
pid, http_port, scratch, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
arguments = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")
headers = [b""]  # without, and with every header any restricted-API flag names
for argument in arguments:
    if "restricted" in argument and ":" in argument:
        headers.append(argument.split(":", 1)[1].replace("=", ": ", 1).encode())
model_py = (
    "import pathlib\nclass TritonPythonModel:\n    def initialize(self, args):\n"
    f"        pathlib.Path({marker!r}).write_text('ran')\n"
    "    def execute(self, requests):\n        return []\n"
)
config = 'name: "evil"\nbackend: "python"\ninput [{name: "I" data_type: TYPE_INT32 dims: [1]}]\n' \
         'output [{name: "O" data_type: TYPE_INT32 dims: [1]}]'
load = json.dumps({"parameters": {"config": config,
                                  "file:1/model.py": base64.b64encode(model_py.encode()).decode()}})
def post(path, body, header):
    with socket.create_connection(("127.0.0.1", http_port), timeout=30) as connection:
        extra = header + b"\r\n" if header else b""
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body.encode())
        reply = connection.recv(200).split(b"\r\n")[0].decode()
    return reply or "connection closed"
results = {}
for header in headers:
    results[f"load {header!r}"] = post("/v2/repository/models/evil/load", load, header)
    results[f"index {header!r}"] = post("/v2/repository/index", "{}", header)
    region = json.dumps({"key": "/x", "offset": 0, "byte_size": 64})
    results[f"shm {header!r}"] = post("/v2/systemsharedmemory/region/x/register", region, header)
try:
    results["scratch"] = sorted(os.listdir(scratch))
except OSError as error:
    results["scratch"] = type(error).__name__
print(json.dumps(results))
"""


@pytest.fixture()
def other_user() -> Iterator[str]:
    """A local account that is not the server's (created for the test, removed after)."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("creating another local user needs root and useradd/runuser (CI runs the tests as root)")
    name = f"alexnet-other-{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_no_secret_on_the_command_line_and_another_user_cannot_load_a_model(
    digits_server, other_user, tmp_path
):
    arguments = Path(f"/proc/{digits_server.pid}/cmdline").read_bytes().decode().split("\0")
    restricted = [argument for argument in arguments if "restricted" in argument]
    closed = f"{','.join(CLOSED_APIS)}:{CLOSED_HEADER}={CLOSED_VALUE}"
    assert restricted and all(argument.endswith(closed) for argument in restricted), restricted
    assert "model-repository" in CLOSED_APIS and "shared-memory" in CLOSED_APIS

    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else shutil.which("python3")
    marker = tmp_path / "evil-model-ran"  # what the uploaded model would write, as the server's user
    result = subprocess.run(
        ["runuser", "-u", other_user, "--", python, "-c", OTHER_USER_SCRIPT, str(digits_server.pid),
         str(digits_server.http_port), str(digits_server._scratch), str(marker)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert len(results) >= 7, results
    assert results.pop("scratch") == "PermissionError", "the server's copy of the repository must be private"
    allowed = {call: status for call, status in results.items() if " 200 " in status}
    assert not allowed, f"another user got through: {allowed}"
    assert not marker.exists(), "the uploaded model ran"
    assert "evil" not in health.loaded_models(digits_server.http_url)
