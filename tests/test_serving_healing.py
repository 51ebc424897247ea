"""Serving that heals itself and tells the truth: a generic client, retries, dead workers, the health script.

Each test that breaks something starts its own real Triton on free ports (the session's server stays
whole). Workers are killed with SIGKILL, as the kernel's OOM killer does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.ports import free_port
from serving.client import NO_RETRY, InferenceRejected, RetryPolicy, ServerUnreachable, TritonClassifier
from serving.processes import Worker
from serving.server import TritonServer
from serving.supervisor import Supervisor
from triton_repository.image_preprocessing import prepare_image


def served_pixels(image: bytes) -> np.ndarray:
    """[1, 64, 64, 3]: what the server's preprocessing makes of an encoded digit for the session's digits
    model (its model.json's input conversion, digit-scan, then the resize)."""
    return prepare_image(image, resize_size=64, image_size=64, input_conversion="digit-scan")[np.newaxis]

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


# ---- a dead worker is noticed and healed ----


@dataclass(frozen=True)
class Outcome:
    started: float
    seconds: float
    status: str | None  # None: answered correctly
    detail: str = ""


class Load:
    """Client threads sending real digits (pixels and encoded bytes in turn), each request with the
    client's timeout and `retry` policy; NO_RETRY counts every failure the server causes."""

    def __init__(
        self, url: str, pixels: np.ndarray, image: bytes, expected: int, retry: RetryPolicy, threads: int
    ) -> None:
        self.url, self.pixels, self.image, self.expected = url, pixels, image, expected
        self.retry = retry
        self.outcomes: list[Outcome] = []
        self._sent_at: dict[int, float] = {}  # each thread's request waiting for its answer: when it was sent
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(threads)]

    def _send(self) -> None:
        with TritonClassifier(self.url, timeout=CALL_TIMEOUT, retry=self.retry) as classifier:
            turn = 0
            while not self._stop.is_set():
                started = time.monotonic()
                self._sent_at[threading.get_ident()] = started
                try:
                    if turn % 2:
                        (ranked,) = classifier.classify_bytes([self.image], top_k=1)
                    else:
                        (ranked,) = classifier.classify_pixels(self.pixels, top_k=1)
                    status = None if ranked[0].index == self.expected else "WRONG ANSWER"
                    detail = ""
                except InferenceRejected as error:
                    status, detail = error.status, str(error)
                except ServerUnreachable as error:
                    status, detail = "UNAVAILABLE", str(error)  # gRPC's code for a refused connection
                finally:
                    del self._sent_at[threading.get_ident()]
                self.outcomes.append(Outcome(started, time.monotonic() - started, status, detail))
                turn += 1
                if status:
                    time.sleep(0.05)  # a failed caller does not spin

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CALL_TIMEOUT * 2)

    def answered(self) -> int:
        return sum(outcome.status is None for outcome in list(self.outcomes))

    def wait_for_answers_to_requests_sent_before(self, moment: float) -> None:
        deadline = time.monotonic() + CALL_TIMEOUT * 2
        while any(sent < moment for sent in list(self._sent_at.values())):
            assert time.monotonic() < deadline, "a request of the load outlived its timeout"
            time.sleep(0.05)


class ReadinessLog:
    """Triton's /v2/health/ready, asked every 0.1 s: (time, ready) pairs."""

    def __init__(self, server: TritonServer) -> None:
        self.server = server
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.server.is_ready()))
            self._stop.wait(0.1)

    def __enter__(self) -> ReadinessLog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def victims(server: TritonServer, kind: str) -> dict[int, str]:
    if kind == "tritonserver":
        return {server.pid: "tritonserver"}
    workers = {pid: str(worker) for pid, worker in server.workers().items()}
    if kind == "every stub":
        return workers
    return {pid: name for pid, name in workers.items() if re.match(rf"{kind}_\d+_\d+ of", name)}


@pytest.mark.parametrize("kind", ["alexnet", "alexnet_preprocess", "every stub", "tritonserver"])
def test_a_killed_worker_is_noticed_and_healed_under_load(
    digits_repository, digit_files, served_onnx_session, tmp_path, kind
):
    """SIGKILL under load: readiness turns false, the server is restarted, correct answers return within
    30 s, no request outlives its timeout, and the failed requests are counted (printed)."""
    image = digit_files.contents[0]
    pixels = served_pixels(image)
    expected = reference_top1(served_onnx_session, pixels)[0]
    lines: list[str] = []
    with new_server(digits_repository, tmp_path / "triton.log") as server:
        supervisor = Supervisor(server, log=lines.append)
        stop = threading.Event()
        watcher = threading.Thread(target=supervisor.run, kwargs={"stop": stop}, daemon=True)
        watcher.start()
        try:
            raw = Load(server.grpc_url, pixels, image, expected, NO_RETRY, threads=3)
            retrying = Load(server.grpc_url, pixels, image, expected, RetryPolicy(), threads=1)
            with raw as load, retrying, ReadinessLog(server) as readiness:
                while load.answered() < 20 or retrying.answered() < 5:
                    time.sleep(0.1)
                killed = victims(server, kind)
                assert killed, f"no {kind} process among {server.workers()}"
                killed_at = time.monotonic()
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
                checker = TritonClassifier(server.grpc_url, timeout=CALL_TIMEOUT, retry=NO_RETRY)
                recovered_at = None
                while time.monotonic() - killed_at < RECOVERY_LIMIT_SECONDS + 5:
                    try:
                        if (
                            supervisor.recoveries
                            and checker.classify_pixels(pixels, top_k=1)[0][0].index == expected
                        ):
                            recovered_at = time.monotonic()
                            break
                    except (InferenceRejected, ServerUnreachable):
                        pass
                    time.sleep(0.1)
                checker.close()
                answered_before = load.answered()
                while load.answered() < answered_before + 20:  # the load itself gets answers again
                    time.sleep(0.1)
        finally:
            stop.set()
            watcher.join(timeout=60)
        log = "\n".join(lines) + "\n" + server.log_tail()
    assert recovered_at is not None, f"no correct answers {RECOVERY_LIMIT_SECONDS}s after the kill:\n{log}"
    seconds = recovered_at - killed_at
    assert seconds <= RECOVERY_LIMIT_SECONDS, log
    (recovery,) = supervisor.recoveries
    assert any(name in recovery.failure for name in killed.values()), recovery.failure
    assert any(f"recovered in {recovery.seconds:.1f} s" in line for line in lines), lines

    while_broken = [ready for at, ready in readiness.samples if killed_at < at < recovered_at]
    assert False in while_broken, "readiness must turn false while the server is broken"
    assert readiness.samples[-1][1], "and true again after"

    failed = [outcome for outcome in load.outcomes if outcome.status]
    assert all(outcome.seconds < CALL_TIMEOUT for outcome in load.outcomes), "a request outlived its timeout"
    assert {outcome.status for outcome in failed} <= {"UNAVAILABLE", "INTERNAL"}, failed
    assert all(outcome.started < recovered_at for outcome in failed), "failures after the recovery"
    retried_failures = [outcome for outcome in retrying.outcomes if outcome.status]
    assert not retried_failures, "TritonClassifier's retries must carry its callers through the restart"
    unavailable = sum(outcome.status == "UNAVAILABLE" for outcome in failed)
    print(
        f"\n{kind}: killed {sorted(killed.values())}; correct answers again after {seconds:.1f} s "
        f"(restart {recovery.seconds:.1f} s); without retries {len(failed)} of {len(load.outcomes)} requests "
        f"failed ({unavailable} UNAVAILABLE, {len(failed) - unavailable} INTERNAL), slowest "
        f"{max(outcome.seconds for outcome in load.outcomes):.2f} s; with retries 0 of "
        f"{len(retrying.outcomes)} failed, slowest {max(o.seconds for o in retrying.outcomes):.2f} s"
    )


# ---- the health script the container and Kubernetes run ----


def run_health(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTH_SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_the_container_health_script_finds_a_dead_stub_that_triton_calls_ready(own_server):
    """serving/health.py, as the image's entry point and the Kubernetes probes run it, on the local server:
    a dead stub fails the check although Triton's readiness still says 200; `watch` then stops the server,
    and the restart its supervisor does serves again."""
    url = own_server.http_url
    healthy = run_health("check", "--url", url)
    assert healthy.returncode == 0, healthy.stderr
    watch = subprocess.Popen(
        [sys.executable, str(HEALTH_SCRIPT), "watch", "--url", url, "--pid", str(own_server.pid)]
        + ["--interval", "0.5", "--failures", "2", "--grace", "5"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stubs = [pid for pid, worker in own_server.workers().items() if worker.model == "alexnet"]
        assert stubs, own_server.workers()
        for stub in stubs:  # every instance: the check probes each, but which one answers is Triton's choice
            os.kill(stub, signal.SIGKILL)
        broken = run_health("check", "--url", url)
        assert broken.returncode == 1
        assert re.search(r"alexnet_0_\d+' is not healthy", broken.stderr), broken.stderr  # either instance
        _, watch_log = watch.communicate(timeout=120)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 1 and f"stopping the server (pid {own_server.pid})" in watch_log, watch_log
    assert not own_server.is_running(), "watch must stop the broken server"

    own_server.restart()  # what Docker's restart policy or Kubernetes does next
    own_server.wait_until_ready()
    assert run_health("check", "--url", url).returncode == 0


# ---- new versions roll out under load ----


def served_versions(server: TritonServer, model: str) -> list[str]:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}", timeout=10) as response:
        return json.loads(response.read())["versions"]


def successes(server: TritonServer, model: str, version: str) -> int:
    url = f"http://{server.http_url}/v2/models/{model}/versions/{version}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        (stats,) = json.loads(response.read())["model_stats"]
    return int(stats["inference_stats"]["success"]["count"])


def answered_by(server: TritonServer, load: Load, versions: list[str], more: int = 50) -> list[str]:
    """The versions of `alexnet` that answered the next `more` requests of the load: requests sent from now
    on (one sent earlier may still be queued for a version that was the newest when it arrived)."""
    load.wait_for_answers_to_requests_sent_before(time.monotonic())
    before = {version: successes(server, "alexnet", version) for version in versions}
    answered = load.answered()
    while load.answered() < answered + more:
        time.sleep(0.1)
    return [version for version in versions if successes(server, "alexnet", version) > before[version]]


def wait_for_log(lines: list[str], text: str, seconds: float = 300) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [line for line in list(lines) if text in line]
        if found:
            return found[0]
        time.sleep(0.2)
    pytest.fail(f"no log line with {text!r} in {seconds:.0f} s:\n" + "\n".join(lines))


def test_a_new_version_rolls_out_under_load_and_a_broken_one_leaves_the_old_serving(
    digits_repository, digits_model_dir, digit_files, served_onnx_session, tmp_path
):
    """`alexnet export onnx` into the repository a running `alexnet serve` serves: version 2 is picked up
    without a restart while 16 clients without retries keep getting correct answers (0 failures); then a
    version 3 whose file is broken fails to load, says why, and version 2 keeps serving."""
    repository = tmp_path / "model_repository"
    shutil.copytree(digits_repository, repository, copy_function=os.symlink)  # the files are large
    image = digit_files.contents[0]
    pixels = served_pixels(image)
    expected = reference_top1(served_onnx_session, pixels)[0]
    lines: list[str] = []
    with new_server(repository, tmp_path / "triton.log") as server:
        supervisor = Supervisor(server, log=lines.append, rollout_every=0.5)
        stop = threading.Event()
        watcher = threading.Thread(target=supervisor.run, kwargs={"stop": stop}, daemon=True)
        watcher.start()
        try:
            with Load(server.grpc_url, pixels, image, expected, NO_RETRY, threads=16) as load:
                while load.answered() < 50:
                    time.sleep(0.1)
                export = subprocess.run(
                    [sys.executable, "-m", "alexnet_cli", "export", "onnx", "--model", str(digits_model_dir)]
                    + ["--repository", str(repository), "--device", "cpu", "--no-embedding"],
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                assert export.returncode == 0, export.stderr
                assert "version 2" in export.stdout + export.stderr
                for model in ("alexnet", "alexnet_preprocess", "alexnet_image"):
                    wait_for_log(lines, f"{model}: now serving version 2")
                assert served_versions(server, "alexnet") == ["1", "2"]  # the previous stays, for rollbacks
                assert answered_by(server, load, ["1", "2"]) == ["2"], lines

                broken = tmp_path / "broken"
                shutil.copytree(repository / "alexnet" / "2", broken / "3", copy_function=os.symlink)
                (broken / "3" / "model.onnx").unlink()
                (broken / "3" / "model.onnx").write_bytes(b"not an ONNX file")
                os.rename(broken / "3", repository / "alexnet" / "3")  # as the export adds a version
                refused = wait_for_log(lines, "alexnet version 3 not served")
                assert "3" not in served_versions(server, "alexnet")
                assert answered_by(server, load, ["2"]) == ["2"]
        finally:
            stop.set()
            watcher.join(timeout=60)
    assert "version 2 keeps serving" in refused and "model.onnx" in refused, refused
    assert not supervisor.recoveries, f"a rollout must not restart the server: {lines}"
    failed = [outcome for outcome in load.outcomes if outcome.status]
    print(
        f"\nrollout: {len(failed)} of {len(load.outcomes)} requests at concurrency 16 failed; "
        + "; ".join(lines)
    )
    assert not failed, f"{len(failed)} of {len(load.outcomes)} requests failed: {failed[:5]}"


# ---- the soak, kept short here (the full one is `alexnet bench --soak 10000`, docs/serving.md) ----


def test_bench_soak_counts_failures_and_reports_the_servers_memory(digits_server, tmp_path):
    import typer
    from typer.testing import CliRunner

    from serving import cli

    app = typer.Typer()
    app.command()(cli.bench)
    out = tmp_path / "soak.json"
    result = CliRunner().invoke(
        app,
        ["--url", digits_server.grpc_url, "--soak", "300", "--concurrency", "8",
         "--server-pid", str(digits_server.pid), "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["requests"] == 300 and report["failures"] == 0
    assert report["memory_start_mb"] > 100 and report["memory_end_mb"] > 100  # tritonserver and its stubs
    assert "300 requests at concurrency 8" in result.stdout and "server memory" in result.stdout

    nobody = CliRunner().invoke(
        app, ["--url", digits_server.grpc_url, "--soak", "10", "--server-pid", "999999999"]
    )
    assert isinstance(nobody.exception, cli.ServingError) and "pgrep tritonserver" in str(nobody.exception)



# ---- what a review found: rollouts must never end the server, deaths must be seen by version ----


def copy_version(repository: Path, model: str, source: str, target: str, scratch: Path) -> Path:
    """A new version folder in the source repository (file symlinks), made visible by one rename."""
    staged = scratch / f"{model}-{target}"
    shutil.copytree(repository / model / source, staged, copy_function=os.symlink)
    os.rename(staged, repository / model / target)
    return repository / model / target


def rewrite_config(repository: Path, model: str, change) -> None:
    from triton_repository.configs import read_config, write_config

    config = read_config(repository / model)
    change(config)
    (repository / model / "config.pbtxt").unlink()  # a symlink into the session's repository
    write_config(repository / model, config)


def test_rollouts_never_end_the_server_and_deaths_are_seen_by_version(
    digits_repository, digit_files, served_onnx_session, tmp_path
):
    """The review's points 4-6 on one server: a broken config.pbtxt is reported, not fatal; a version 2
    worker's death is seen by its own version (instance names repeat across versions); lowering an
    instance count is a rollout, not a death; a version that failed to load is tried again, and loads once
    its file is fixed."""
    from serving.supervisor import SETTLE_SECONDS

    repository = tmp_path / "model_repository"
    shutil.copytree(digits_repository, repository, copy_function=os.symlink)
    image = digit_files.contents[0]
    pixels = served_pixels(image)
    expected = reference_top1(served_onnx_session, pixels)[0]
    lines: list[str] = []
    with new_server(repository, tmp_path / "triton.log") as server:
        supervisor = Supervisor(server, log=lines.append, rollout_every=0.3, retry_after=1.0)
        stop = threading.Event()
        watcher = threading.Thread(target=supervisor.run, kwargs={"stop": stop}, daemon=True)
        watcher.start()
        classifier = TritonClassifier(server.grpc_url, retry=RetryPolicy(deadline=60))
        try:
            # 4. a half-written config, then one that would change the model's inputs: each reported, and
            # serving goes on as it was
            config_file = repository / "alexnet" / "config.pbtxt"
            good_config = config_file.read_text()
            config_file.unlink()  # a symlink into the session's repository
            for broken, message in (
                (good_config[: good_config.index("\ninput")] + "\ninput { name: \"pix", "not a valid Triton"),
                ('name: "alexnet"\nbackend: "onnxruntime"\nmax_batch_size: 8\n', "would change the served"),
            ):
                config_file.write_text(broken)
                reported = wait_for_log(lines, message)
                assert "version 1 keeps serving, unchanged" in reported, reported
                assert watcher.is_alive(), "a bad config must not end the supervisor"
                assert classifier.classify_pixels(pixels, top_k=1)[0][0].index == expected
            config_file.write_text(good_config)

            # 5. version 2's worker dies: seen by its version, not hidden by version 1's alexnet_0_0
            copy_version(repository, "alexnet", "1", "2", tmp_path)
            wait_for_log(lines, "alexnet: now serving version 2 (was 1)")
            time.sleep(SETTLE_SECONDS + 1)
            workers = server.workers()
            assert ("1", "alexnet_0_0") in {(w.version, w.instance) for w in workers.values()}, workers
            version_2 = Worker("alexnet", "2", "alexnet_0_0")  # version 1 runs an alexnet_0_0 too
            (stub,) = [pid for pid, worker in workers.items() if worker == version_2]
            os.kill(stub, signal.SIGKILL)
            deadline = time.monotonic() + 120
            while not supervisor.recoveries and time.monotonic() < deadline:
                time.sleep(0.2)
            (recovery,) = supervisor.recoveries
            assert f"alexnet_0_0 of alexnet version 2 (pid {stub}) died" in recovery.failure, lines

            # 5. more instances, then fewer: rollouts, not deaths
            for count in (3, 1):
                before = len([line for line in lines if "alexnet_preprocess: now serving" in line])

                def set_count(config, count=count):
                    config.instance_group[0].count = count

                rewrite_config(repository, "alexnet_preprocess", set_count)
                deadline = time.monotonic() + 120
                while len([line for line in lines if "alexnet_preprocess: now serving" in line]) == before:
                    assert time.monotonic() < deadline, lines
                    time.sleep(0.2)
                time.sleep(SETTLE_SECONDS + 1)
                instances = [w for w in server.workers().values() if w.model == "alexnet_preprocess"]
                assert len(instances) == count, instances
            assert len(supervisor.recoveries) == 1, f"a rollout must not restart the server: {lines}"

            # 6. a version that fails to load (a file not there yet) is tried again, and loads when fixed
            version_3 = copy_version(repository, "alexnet", "1", "3", tmp_path)
            real_graph = os.readlink(version_3 / "model.onnx")
            (version_3 / "model.onnx").unlink()
            (version_3 / "model.onnx").write_bytes(b"not yet an ONNX file")
            refused = wait_for_log(lines, "alexnet version 3 not served")
            assert "trying again in 1 s" in refused and "version 2 keeps serving" in refused, refused
            temporary = version_3 / "model.onnx.fixed"
            temporary.symlink_to(real_graph)
            os.replace(temporary, version_3 / "model.onnx")
            wait_for_log(lines, "alexnet: now serving version 3")
            with Load(server.grpc_url, pixels, image, expected, NO_RETRY, threads=2) as load:
                assert answered_by(server, load, ["2", "3"]) == ["3"]
            assert not [outcome for outcome in load.outcomes if outcome.status], load.outcomes[:5]
        finally:
            stop.set()
            watcher.join(timeout=60)
            classifier.close()
    assert len(supervisor.recoveries) == 1, lines


def test_serve_keeps_serving_and_healing_when_the_reader_of_its_output_goes_away(digits_repository, tmp_path):
    """`alexnet serve ... 2>&1 | head -1`: once the reader has gone, a worker killed is still healed (the
    review saw the whole server die instead)."""
    from serving.processes import child_processes

    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "alexnet_cli", "serve", "--repository", str(digits_repository),
         "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    url = f"127.0.0.1:{http_port}"
    try:
        seen = b""
        while b"Triton is ready" not in seen:
            line = serve.stdout.readline()
            assert line, f"alexnet serve ended while starting:\n{seen.decode(errors='replace')[-3000:]}"
            seen += line
        serve.stdout.close()  # the reader goes away, as `head -1` does
        (triton,) = tritonservers(serve.pid)
        stubs = child_processes(triton)
        (alexnet_stub,) = [pid for pid in stubs if "alexnet_0_0" in Path(f"/proc/{pid}/cmdline").read_text()]
        os.kill(alexnet_stub, signal.SIGKILL)
        deadline = time.monotonic() + 120
        healed = False
        while time.monotonic() < deadline and serve.poll() is None:
            time.sleep(0.5)
            restarted = tritonservers(serve.pid) not in ([], [triton])
            if restarted and not run_health("check", "--url", url).returncode:
                healed = True
                break
        assert serve.poll() is None, "alexnet serve must outlive the reader of its output"
        assert healed, "the killed worker was not healed within 120 s"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def tritonservers(parent: int) -> list[int]:
    from serving.processes import child_processes

    found = []
    for pid in child_processes(parent):
        try:
            if os.readlink(f"/proc/{pid}/exe").endswith("tritonserver"):
                found.append(pid)
        except OSError:
            pass
    return found


def test_a_log_file_on_a_full_disk_neither_blocks_nor_stops_the_server(digits_repository, digit_files, capfd):
    """Writing --log-file fails (a full disk: /dev/full answers every write with ENOSPC): the server keeps
    answering, says so once, and the thread that drains Triton's output keeps draining it (if it died, the
    pipe would fill and Triton would block in write())."""
    server = TritonServer(
        digits_repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=Path("/dev/full"),
        log_verbose=1,  # a few lines per request: the pipe's 64 KB fill within a few hundred requests
    )
    image = digit_files.contents[0]
    with server, TritonClassifier(server.grpc_url, timeout=CALL_TIMEOUT, retry=NO_RETRY) as classifier:
        for _ in range(400):
            classifier.classify_bytes([image], top_k=1)
        assert server._log_thread.is_alive(), "the log pump must survive a failing log file"
    errors = capfd.readouterr().err
    assert errors.count("cannot write the log file /dev/full: No space left on device") == 1, errors[-2000:]
