"""Keep a local Triton answering: notice a dead worker or a model that stops answering, and restart.

`alexnet serve` runs this after the server is first ready. Every `interval` seconds it looks for what a
user would suffer from, cheapest first:

- tritonserver itself exited;
- one of its worker processes (a Python-backend stub, which runs ONNX Runtime or the preprocessing) is
  gone: Triton would keep calling the model ready while every request fails with "Stub process is not
  healthy";
- every `probe_every` seconds, serving/health.py's check (the one the container and Kubernetes run): each
  loaded model must answer a small request.

Recovery kills what is left of the server and starts it again on the same ports and prepared repository
(TritonServer.restart). Meanwhile nothing listens, so readiness is false and requests fail at once with
UNAVAILABLE (gRPC) or a refused connection, which TritonClassifier retries. Measured times:
docs/serving.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving import health
from serving.server import TritonServer


@dataclass
class Recovery:
    """One healing: what was wrong and how long until every model was ready again."""

    failure: str
    seconds: float


class Supervisor:
    """Watches a started, ready TritonServer; `run()` until interrupted, or `check_once()` step by step."""

    def __init__(
        self,
        server: TritonServer,
        *,
        log: Callable[[str], None],
        interval: float = 0.5,
        probe_every: float = 5.0,
        ready_timeout: float = 300.0,
    ) -> None:
        self.server = server
        self.log = log
        self.interval = interval
        self.probe_every = probe_every
        self.ready_timeout = ready_timeout
        self.recoveries: list[Recovery] = []
        self._workers = server.workers()
        self._last_probe = time.monotonic()

    def diagnose(self) -> str | None:
        """What is wrong with the server right now, or None."""
        alive = self.server.workers()
        dead = [f"{name} (pid {pid})" for pid, name in self._workers.items() if pid not in alive]
        if dead:
            time.sleep(0.2)  # the stubs of a killed server leave it before its own exit can be seen
        if not self.server.is_running():
            return f"tritonserver exited (status {self.server.returncode})"
        if dead:
            return f"worker process {', '.join(dead)} died"
        if time.monotonic() - self._last_probe >= self.probe_every:
            self._last_probe = time.monotonic()
            problems = health.check(self.server.http_url, self.server.models)
            if problems:
                return "; ".join(problems)
        return None

    def recover(self, failure: str) -> Recovery:
        """Restart the server and wait until it is ready; ServingError (with its log) if it cannot start."""
        self.log(f"alexnet serve: {failure}: restarting Triton")
        started = time.monotonic()
        self.server.restart()
        self.server.wait_until_ready(timeout=self.ready_timeout)
        recovery = Recovery(failure, time.monotonic() - started)
        self.log(
            f"alexnet serve: recovered in {recovery.seconds:.1f} s: {', '.join(self.server.models)} ready"
        )
        self._workers = self.server.workers()
        self._last_probe = time.monotonic()
        self.recoveries.append(recovery)
        return recovery

    def check_once(self) -> Recovery | None:
        failure = self.diagnose()
        return self.recover(failure) if failure else None

    def run(self, stop: threading.Event | None = None) -> None:
        """Check and heal until `stop` is set or the caller is interrupted (KeyboardInterrupt, a signal)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.check_once()
            stop.wait(self.interval)
