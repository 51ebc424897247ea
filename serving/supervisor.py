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

It also rolls out new versions: every `rollout_every` seconds it compares each served model's version
folders (and config) in the source repository with what it last loaded; a change (`alexnet export onnx`
adding version N+1, or a version folder removed to roll back) is prepared and loaded through Triton's
model-control API. Triton keeps serving the old version until the new one is ready, and keeps it when
the new one fails to load; the log says which happened and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving import health
from serving.errors import ServingError
from serving.server import TritonServer
from triton_repository.configs import RepositoryError, read_config
from triton_repository.layout import CONFIG_FILE, versions


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
        rollout_every: float = 2.0,
        ready_timeout: float = 300.0,
    ) -> None:
        self.server = server
        self.log = log
        self.interval = interval
        self.probe_every = probe_every
        self.ready_timeout = ready_timeout
        self.recoveries: list[Recovery] = []
        self.rollout_every = rollout_every
        self._workers = server.workers()
        self._last_probe = self._last_rollout = time.monotonic()
        self._sources: dict[str, tuple] = {}
        self._sources = self.source_state()

    def diagnose(self) -> str | None:
        """What is wrong with the server right now, or None."""
        alive = self.server.workers()
        # By instance name, not pid: a rollout starts the new version's stub before the old one exits.
        missing = set(self._workers.values()) - set(alive.values())
        dead = [f"{name} (pid {pid})" for pid, name in self._workers.items() if name in missing]
        if not dead:
            self._workers = alive
        else:
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
        if failure:
            return self.recover(failure)
        if time.monotonic() - self._last_rollout >= self.rollout_every:
            self.roll_out()
            self._last_rollout = time.monotonic()
        return None

    def source_state(self) -> dict[str, tuple]:
        """Per served model, what the source repository holds: its version folders and config's mtime."""
        state = {}
        for name in self.server.models:
            folder = self.server.repository / name
            try:
                state[name] = (tuple(versions(folder)), (folder / CONFIG_FILE).stat().st_mtime_ns)
            except OSError:  # being rewritten, or removed: leave it as it is
                state[name] = self._sources.get(name, ())
        return state

    def roll_out(self) -> list[str]:
        """Load every served model whose source changed (ensembles last, after what they call); returns
        the models that failed to load, each with a log line saying why and what keeps serving."""
        current = self.source_state()
        changed = [name for name in self.server.models if current[name] != self._sources.get(name)]
        changed.sort(key=lambda name: read_config(self.server.repository / name).platform == "ensemble")
        failed = []
        for name in changed:
            before, after = _latest(self._sources.get(name)), _latest(current[name])
            started = time.monotonic()
            try:
                self.server.reload_from_source(name)
            # OSError: the folder changed while it was copied; RepositoryError: a config that does not parse
            except (ServingError, RepositoryError, OSError) as error:
                failed.append(name)
                self.log(
                    f"alexnet serve: {name} version {after} not served ({error}); version {before} keeps "
                    f"serving: remove {self.server.repository / name / str(after)} or export a fixed version"
                )
                continue
            self.log(
                f"alexnet serve: {name}: now serving version {after} (was {before}), "
                f"loaded in {time.monotonic() - started:.1f} s"
            )
        self._sources = current
        return failed

    def run(self, stop: threading.Event | None = None) -> None:
        """Check and heal until `stop` is set or the caller is interrupted (KeyboardInterrupt, a signal)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.check_once()
            stop.wait(self.interval)


def _latest(state: tuple) -> str:
    """The version Triton's default policy (latest 1) serves from a source_state entry."""
    versions = state[0] if state else ()
    return str(versions[-1]) if versions else "none"
