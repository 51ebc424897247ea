"""Does every model answer? One check for `alexnet serve`, the container's entry point and Kubernetes.

Triton's own /v2/health/ready only says that models were loaded: a model whose Python-backend stub died
(the OOM killer) stays "ready" while every request fails. This check judges each loaded model by progress:
a model whose count of successful requests (Triton's statistics, which never wait behind users) moved
since the last look is answering. Only a model that answered nobody gets one small request built from its
config (zeros for numeric inputs, a tiny PNG for encoded-image inputs); if that one is refused as busy
(its queue is full: HTTP 503) or waits past the timeout, the model is still healthy if it answered anyone
meanwhile. So an overloaded server is never called dead: only one that fails requests, or that answers no
one at all, is.

    python3 health.py check --url 127.0.0.1:8000            exit 0 if every model answers, else 1
    python3 health.py watch --url 127.0.0.1:8000 --pid PID  once ready, stop PID when models stop answering

Standard library only, Python 3.10 (the production container's Python): the image copies this file beside
its entry point. docs/serving.md and docs/production.md say what fails and how it heals.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib

ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "FP16": 2, "INT32": 4, "FP32": 4, "INT64": 8, "FP64": 8}
DEFAULT_TIMEOUT = 5.0
BUSY = "busy"  # a probe refused with UNAVAILABLE (a full queue) or not answered within its timeout


def tiny_png(side: int = 8) -> bytes:
    """A valid grey RGB PNG of side x side pixels, written without any imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x80\x80" * side for _ in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def probe_request(config: dict) -> tuple[bytes, int]:
    """An inference request for a model, from its config alone: (body, JSON header length) in Triton's
    binary tensor extension (numeric inputs all zeros, BYTES inputs one tiny PNG each)."""
    batched = int(config.get("max_batch_size", 0)) > 0
    inputs, blobs = [], []
    for tensor in config["input"]:
        shape = ([1] if batched else []) + [max(1, int(dim)) for dim in tensor["dims"]]
        datatype = tensor["data_type"].replace("TYPE_", "", 1)
        if datatype == "STRING":
            datatype, image = "BYTES", tiny_png()
            blob = (struct.pack("<I", len(image)) + image) * math.prod(shape)
        else:
            blob = bytes(ITEM_BYTES[datatype] * math.prod(shape))
        inputs.append(
            {
                "name": tensor["name"],
                "shape": shape,
                "datatype": datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    outputs = [{"name": tensor["name"], "parameters": {"binary_data": True}} for tensor in config["output"]]
    header = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
    return header + b"".join(blobs), len(header)


def _get_json(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def request_counts(http_url: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, tuple[int, int]]:
    """Per loaded model, its requests answered and failed so far (all versions): Triton's statistics
    endpoint, which answers at once however long the models' queues are."""
    stats = _get_json(f"http://{http_url}/v2/models/stats", timeout)
    counts: dict[str, tuple[int, int]] = {}
    for entry in stats.get("model_stats", []):
        phases = entry.get("inference_stats", {})
        answered, failed = counts.get(entry["name"], (0, 0))
        answered += int(phases.get("success", {}).get("count", 0))
        failed += int(phases.get("fail", {}).get("count", 0))
        counts[entry["name"]] = (answered, failed)
    return counts


def successes(http_url: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """Per loaded model, its requests answered so far."""
    return {name: answered for name, (answered, _) in request_counts(http_url, timeout).items()}


def loaded_models(http_url: str, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The models the server has loaded (its statistics list them; the repository index is closed)."""
    return sorted(successes(http_url, timeout))


def http_error(error: urllib.error.HTTPError) -> str:
    """An HTTP error as "HTTP 503: <Triton's reason>": the "error" of its JSON body, else the body as sent."""
    detail = error.read().decode("utf-8", errors="replace")
    try:
        detail = json.loads(detail).get("error", detail)
    except (ValueError, AttributeError):  # not JSON, or JSON without an "error"
        pass
    return f"HTTP {error.code}: {detail}"


def probe_model(http_url: str, model: str, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """None if `model` answers a request built from its config within `timeout`; BUSY if it was refused as
    busy (HTTP 503) or timed out; else what went wrong."""
    try:
        config = _get_json(f"http://{http_url}/v2/models/{model}/config", timeout)
        body, header_length = probe_request(config)
        request = urllib.request.Request(
            f"http://{http_url}/v2/models/{model}/infer",
            data=body,
            headers={
                "Inference-Header-Content-Length": str(header_length),
                "Content-Type": "application/octet-stream",
            },
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return None
    except urllib.error.HTTPError as error:
        if error.code == 503:  # UNAVAILABLE: its queue is full, or the request waited too long in it
            return BUSY
        return f"{model}: {http_error(error)}"
    except TimeoutError:
        return BUSY
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, TimeoutError):
            return BUSY
        return f"{model}: {reason}"


READY_PATH = "v2/health/ready"


def not_ready(
    http_url: str, path: str = READY_PATH, timeout: float = DEFAULT_TIMEOUT, what: str = "server"
) -> str | None:
    """None if Triton's readiness endpoint `path` answers 200; else why not. The one readiness check of the
    local server, its supervisor and the container's entry point."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/{path}", timeout=timeout) as response:
            response.read()
        return None
    except urllib.error.HTTPError as error:
        return f"{what} not ready (HTTP {error.code})"
    except (urllib.error.URLError, OSError) as error:
        return f"server not answering at {http_url}: {getattr(error, 'reason', None) or error}"


def server_ready(http_url: str, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """None if Triton says it is ready (every model loaded); else why not."""
    return not_ready(http_url, READY_PATH, timeout)


def version_ready(http_url: str, model: str, version: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Triton's readiness of one version of a model (404/400 until it is loaded)."""
    path = f"v2/models/{model}/versions/{version}/ready"
    return not_ready(http_url, path, timeout, what=f"{model} version {version}") is None


class ProgressCheck:
    """The check, with a memory: a model that answered anyone since the previous call, and failed no one,
    is healthy without a probe, so a busy server gets no extra request at all. The first call probes every
    model; a model with new failures is probed once per instance (one dead instance of two fails every
    other request while the model still makes progress)."""

    def __init__(self, http_url: str, models: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.http_url, self.models, self.timeout = http_url, models, timeout
        self.last: dict[str, tuple[int, int]] = {}

    def __call__(self) -> list[str]:
        """What is wrong with the server: one line per model that does not answer; [] if healthy."""
        not_ready = server_ready(self.http_url, self.timeout)
        if not_ready:
            return [not_ready]
        try:
            now = request_counts(self.http_url, self.timeout)
        except (urllib.error.URLError, OSError, ValueError) as error:
            return [f"cannot read the statistics: {getattr(error, 'reason', None) or error}"]
        names = self.models or sorted(now)
        if not names:
            return ["the server has no model loaded"]
        doubtful = [name for name in names if self._doubtful(now.get(name, (0, 0)), self.last.get(name))]
        self.last = now
        problems = (self._probe(name, now.get(name, (0, 0))[0]) for name in doubtful)
        return [problem for problem in problems if problem]

    @staticmethod
    def _doubtful(now: tuple[int, int], last: tuple[int, int] | None) -> bool:
        """Whether a model needs a probe: first look, no request answered since, or a request failed."""
        return last is None or now[0] <= last[0] or now[1] > last[1]

    def _probe(self, model: str, answered: int) -> str | None:
        """Probe `model` once per instance; the first failure, or None."""
        try:
            config = _get_json(f"http://{self.http_url}/v2/models/{model}/config", self.timeout)
        except (urllib.error.URLError, OSError, ValueError) as error:
            return f"{model}: cannot read its config: {getattr(error, 'reason', None) or error}"
        ensemble = config.get("platform") == "ensemble"
        instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
        for _ in range(1 if ensemble else instances):
            started = time.monotonic()
            outcome = probe_model(self.http_url, model, self.timeout)
            if outcome == BUSY:
                # Busy in one of an ensemble's steps, which are loaded models checked on their own; or
                # refused as busy, or slow: healthy if it answered anyone else meanwhile.
                return None if ensemble else self._answers_anyone(model, answered, started)
            if outcome is not None:
                return outcome
        return None

    def _answers_anyone(self, model: str, answered: int, started: float) -> str | None:
        while True:
            try:
                if successes(self.http_url, self.timeout).get(model, 0) > answered:
                    return None
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() - started >= self.timeout:
                return f"{model}: busy, and answered no request for {self.timeout:g} s"
            time.sleep(0.25)


def check(http_url: str, models: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """What is wrong with the server at `http_url`: one line per model that does not answer; [] if healthy.
    Every model gets a probe per instance; one refused as busy, or slow, passes if it answers others
    meanwhile."""
    return ProgressCheck(http_url, models, timeout)()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (a server with a dead worker may not finish by itself)."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def watch(http_url: str, pid: int, *, interval: float, failures: int, grace: float, timeout: float) -> int:
    """Once Triton is first ready, check it every `interval` s; after `failures` failed checks in a row
    stop process `pid` so that its supervisor (Docker's restart policy, Kubernetes) starts it again."""
    while _alive(pid) and server_ready(http_url, timeout):
        time.sleep(interval)  # still starting (a first start may build TensorRT engines for minutes)
    failed = 0
    progress = ProgressCheck(http_url, timeout=timeout)
    while _alive(pid):
        problems = progress()
        failed = failed + 1 if problems else 0
        if failed >= failures:
            print(
                f"alexnet health: {'; '.join(problems)}: stopping the server (pid {pid}) to restart it",
                file=sys.stderr,
            )
            stop_process(pid, grace)
            return 1
        time.sleep(interval)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("check", "watch"))
    port = os.environ.get("ALEXNET_HTTP_PORT", "8000")  # the container's setting
    parser.add_argument("--url", default=f"127.0.0.1:{port}", help="Triton's HTTP HOST:PORT")
    parser.add_argument(
        "--model", action="append", help="check only this model (repeatable; default: all loaded)"
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request")
    parser.add_argument("--pid", type=int, help="watch: the server process to stop when models fail")
    parser.add_argument("--interval", type=float, default=2.0, help="watch: seconds between checks")
    parser.add_argument("--failures", type=int, default=2, help="watch: failed checks in a row that stop it")
    parser.add_argument("--grace", type=float, default=10.0, help="watch: seconds from SIGTERM to SIGKILL")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = check(args.url, args.model, args.timeout)
        for problem in problems:
            print(f"unhealthy: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if args.pid is None:
        parser.error("watch needs --pid (the tritonserver process)")
    return watch(
        args.url,
        args.pid,
        interval=args.interval,
        failures=args.failures,
        grace=args.grace,
        timeout=args.timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
