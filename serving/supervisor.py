"""Keep a local Triton answering: notice what is dead, restart only then, and roll out new versions.

`alexnet serve` runs this after the server is first ready. Every `interval` seconds it looks for what a
user would suffer from, cheapest first:

- tritonserver itself exited;
- one of its worker processes (a Python-backend stub, which runs ONNX Runtime or the preprocessing) is
  gone while Triton still serves its model version: Triton would keep calling the model ready while every
  request to it fails with "Stub process is not healthy". Workers are known by model, version and
  instance: instance names repeat across versions;
- every `probe_every` seconds, serving/health.py's progress check (the one the container and Kubernetes
  run): a model whose count of answered requests moved is answering, however busy; only a model that
  answered no one gets a small request, and fails the check only if that one fails, or if it is refused
  or slow while the model still answers no one. An overloaded server refuses what it cannot queue
  (triton_repository/configs.py) and keeps answering at capacity: it is never restarted.

Recovery kills what is left of the server and starts it again on the same ports and prepared repository
(TritonServer.restart). Meanwhile nothing listens, so readiness is false and requests fail at once with
UNAVAILABLE (gRPC) or a refused connection, which TritonClassifier retries. Measured times:
docs/serving.md.

It also rolls out new versions: every `rollout_every` seconds it compares each served model's version
folders (and config) in the source repository with what it last mirrored; a change (`alexnet export
onnx` adding version N+1, or a version folder removed to roll back) is mirrored into the server's copy
by atomic renames, and Triton, which polls that copy, loads it. Triton keeps serving the old version until
the new one is ready, and keeps it when the new one fails to load; the log says which happened and why.
A version that failed is taken out of the copy (Triton would otherwise retry it at every poll) and tried
again after a backoff that doubles, from `retry_after` seconds up to `max_retry_after`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving import health
from serving.errors import ServingError
from serving.local_repository import ModelUpdate
from serving.processes import Worker, process_alive
from serving.server import TritonServer
from triton_repository.configs import RepositoryError
from triton_repository.layout import CONFIG_FILE, versions

SETTLE_SECONDS = 5.0  # after a rollout, the time Triton takes to stop the old version's workers
LOAD_PATIENCE_SECONDS = 900.0  # a load not finished by then is reported and no longer followed


@dataclass
class Recovery:
    """One healing: what was wrong and how long until every model was ready again."""

    failure: str
    seconds: float


@dataclass
class Rollout:
    """A change of one model's served copy that Triton is loading: what changed, since when, which version
    it brings, and which served before."""

    update: ModelUpdate
    version: str
    previous: str
    started: float
    wait: float = 0.0  # the backoff before this attempt, when it is a retry


@dataclass
class Retry:
    """A change Triton refused, taken back out of the copy, to be tried again at `due`."""

    model: str
    version: str
    previous: str
    due: float
    wait: float


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
        retry_after: float = 30.0,
        max_retry_after: float = 600.0,
    ) -> None:
        self.server = server
        self.log = log
        self.interval = interval
        self.probe_every = probe_every
        self.ready_timeout = ready_timeout
        self.rollout_every = rollout_every
        self.retry_after, self.max_retry_after = retry_after, max_retry_after
        self.recoveries: list[Recovery] = []
        self.rollouts: dict[str, Rollout] = {}  # model -> the change Triton is loading now
        self.retries: dict[str, Retry] = {}  # model -> a refused change, taken back until due
        self._settling: dict[str, float] = {}  # model -> until when its workers may come and go
        self._workers: dict[int, Worker] = server.workers()
        self._health = health.ProgressCheck(server.http_url, server.models)
        self._last_probe = self._last_rollout = time.monotonic()
        self._sources: dict[str, tuple] = {}
        self._sources = self.source_state()

    # -- what is wrong --------------------------------------------------------------------------------------

    def diagnose(self) -> str | None:
        """What is wrong with the server right now, or None."""
        dead = self._dead_workers()
        if dead:
            time.sleep(0.2)  # the stubs of a killed server leave it before its own exit can be seen
        if not self.server.is_running():
            return f"tritonserver exited (status {self.server.returncode})"
        if dead:
            return f"worker process {', '.join(dead)} died"
        if time.monotonic() - self._last_probe >= self.probe_every:
            self._last_probe = time.monotonic()
            problems = self._health()
            if problems:
                return "; ".join(problems)
        return None

    def _dead_workers(self) -> list[str]:
        """The workers that are gone while Triton still serves their model version. Cheap when nothing
        changed: it reads only the known workers' /proc entries."""
        now = time.monotonic()
        settling = {model for model, until in self._settling.items() if until > now}
        if not settling and all(process_alive(pid) for pid in self._workers):
            return []
        alive = self.server.workers()
        running = set(alive.values())
        dead = [
            f"{worker} (pid {pid})"
            for pid, worker in self._workers.items()
            if worker not in running
            and worker.model not in settling
            and self.server.version_ready(worker.model, worker.version)  # not unloaded on purpose
        ]
        if not dead:
            self._workers = alive
        return dead

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
        self._health = health.ProgressCheck(self.server.http_url, self.server.models)
        self._last_probe = time.monotonic()
        self.recoveries.append(recovery)
        return recovery

    def check_once(self) -> Recovery | None:
        failure = self.diagnose()
        if failure:
            return self.recover(failure)
        if time.monotonic() - self._last_rollout >= self.rollout_every:
            self.roll_out()
            self.follow_rollouts()
            self._last_rollout = time.monotonic()
        return None

    # -- new versions ---------------------------------------------------------------------------------------

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
        """Mirror every served model whose source changed into the server's copy (and retry every refused
        change that is due); returns the models that could not be prepared, each with a log line saying
        why and what keeps serving. Triton loads what was mirrored at its next poll."""
        current = self.source_state()
        changed = [name for name in self.server.models if current[name] != self._sources.get(name)]
        failed = []
        for name in changed:
            before, after = _latest(self._sources.get(name)), _latest(current[name])
            self.retries.pop(name, None)  # a new export, or a removed version: start afresh
            if not self._mirror(name, after, before):
                failed.append(name)
        self._sources = current
        for name, retry in list(self.retries.items()):
            if retry.due <= time.monotonic():
                del self.retries[name]
                self._mirror(name, retry.version, retry.previous, wait=retry.wait)
        return failed

    def _mirror(self, name: str, version: str, previous: str, wait: float = 0.0) -> bool:
        try:
            update = self.server.mirror_model(name)
        except RepositoryError as error:  # a config.pbtxt half written, or one that would break the model
            self.log(f"alexnet serve: {name}: {error}; version {previous} keeps serving, unchanged")
            return False
        except (ServingError, OSError) as error:  # a file missing; the folder changed while it was copied
            self.log(
                f"alexnet serve: {name} version {version} not served ({error}); version {previous} keeps "
                f"serving: remove {self.server.repository / name / version} or export a fixed version"
            )
            return False
        if update.changed:
            self._settling[name] = time.monotonic() + SETTLE_SECONDS
            pending = self.rollouts.get(name)
            if pending:  # an export renames versions in, then configs: one change, mirrored in two steps
                update = ModelUpdate(
                    name,
                    sorted({*pending.update.added, *update.added}),
                    sorted({*pending.update.removed, *update.removed}),
                    sorted({*pending.update.files, *update.files}),
                )
                previous, started = pending.previous, pending.started
            else:
                started = time.monotonic()
            self.rollouts[name] = Rollout(update, version, previous, started, wait)
        return True

    def follow_rollouts(self) -> None:
        """Say which loads finished: loaded, or refused by Triton (then taken back, tried again later)."""
        for name, rollout in list(self.rollouts.items()):
            failure = self.server.load_failure_since(name, rollout.started)
            if failure:
                del self.rollouts[name]
                self._take_back(rollout, failure)
            elif self._finished(rollout):
                del self.rollouts[name]
                self.server.forget_replaced(name)
                was = f" (was {rollout.previous})" if rollout.previous != rollout.version else ""
                self.log(
                    f"alexnet serve: {name}: now serving version {rollout.version}{was}, "
                    f"loaded in {time.monotonic() - rollout.started:.1f} s"
                )
            elif time.monotonic() - rollout.started > LOAD_PATIENCE_SECONDS:
                del self.rollouts[name]
                self.log(
                    f"alexnet serve: {name} version {rollout.version} is still not loaded after "
                    f"{LOAD_PATIENCE_SECONDS:.0f} s; version {rollout.previous} keeps serving meanwhile"
                )
            self._settling[name] = time.monotonic() + SETTLE_SECONDS

    def _finished(self, rollout: Rollout) -> bool:
        """New versions are done when ready; a changed config or labels when Triton has reloaded the model;
        a removal when the removed versions are gone."""
        update = rollout.update
        if not self.server.version_ready(update.model, rollout.version):
            return False
        if update.added:
            return all(self.server.version_ready(update.model, str(v)) for v in update.added)
        if update.files:
            return self.server.loaded_at.get(update.model, 0.0) >= rollout.started
        return not any(self.server.version_ready(update.model, str(v)) for v in update.removed)

    def _take_back(self, rollout: Rollout, reason: str) -> None:
        """Undo a refused change in the copy (Triton would retry it at every poll) and try it again after a
        backoff that doubles: a transient failure heals by itself, a lasting one costs a load now and then."""
        update = rollout.update
        self.server.undo(update)
        serving = self.server.newest_ready_version(update.model)
        wait = min(self.max_retry_after, rollout.wait * 2) if rollout.wait else self.retry_after
        self.retries[update.model] = Retry(
            update.model, rollout.version, rollout.previous, time.monotonic() + wait, wait
        )
        reason = reason.split("\\n\\nAt:")[0]  # the Python backend appends the stub's traceback
        what = f"version {rollout.version}" if update.added else f"the new {' and '.join(update.files)}"
        self.log(
            f"alexnet serve: {update.model} {what} not served (Triton could not load {update.model}: "
            f"{reason}); version {serving} keeps serving; trying again in {wait:.0f} s: "
            f"remove {self.server.repository / update.model / rollout.version} or export a fixed version"
        )

    def run(self, stop: threading.Event | None = None) -> None:
        """Check and heal until `stop` is set or the caller is interrupted (KeyboardInterrupt, a signal)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.check_once()
            stop.wait(self.interval)


def _latest(state: tuple) -> str:
    """The newest version folder of a source_state entry: what Triton serves once it is loaded."""
    versions = state[0] if state else ()
    return str(versions[-1]) if versions else "none"
