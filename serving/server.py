"""The local Triton Inference Server: the `tritonserver` binary of the nvidia-pytriton wheel, run directly.

Start-up works on a scratch copy of the model repository (private to this user). Models whose backend
this server lacks (`onnxruntime`, `tensorrt_plan`) become Python-backend models running the same ONNX file
with ONNX Runtime (triton_repository/onnx_substitute.py), with the exported config otherwise unchanged; the
preprocessing model and the ensemble run as exported. Each change is announced on start
(`TritonServer.notes`). Triton polls the copy, and `mirror_model` brings new versions into it by atomic
renames: no model-control API, so nothing to unlock with a key (triton_repository/server_flags.py).
See docs/architecture.md, "What the local server changes, and why".

This module is the process's lifecycle (start, readiness, restart, the log, stop, new versions brought in);
what it stands on, along PyTriton's seams: serving/triton_binary.py (the wheel's files, the environment and
the command line), serving/local_repository.py (the scratch copy) and serving/processes.py (the stubs).

    with TritonServer(Path("model_repository"), http_port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port()) as server:
        TritonClassifier(server.grpc_url).classify_files(["cat.jpg"])
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common.ports import free_port  # noqa: F401  (imported from here by callers)
from serving import health
from serving.errors import ServingError
from serving.local_repository import (
    PROVIDERS_DIR,
    ModelUpdate,
    SubstituteSettings,
    check_replaceable,
    prepare_model,
    prepare_repository,
    provider_announcements,
    same_file,
)
from serving.processes import (
    STOP_GRACE_SECONDS,
    Worker,
    child_processes,
    die_with_parent,
    kill_stub,
    on_main_thread,
    shared_memory_files,
    stub_instance,
)
from serving.triton_binary import prepare_backends, server_environment, tritonserver_command
from triton_repository.configs import read_config
from triton_repository.layout import versions

LOG_TAIL_LINES = 200


# Triton's log line for a version that did not load, e.g.
# "failed to load 'alexnet' version 3: Internal: ... Protobuf parsing failed."
LOAD_FAILURE = re.compile(r"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)")


LOADED = re.compile(r"successfully loaded '(?P<model>[^']+)'")  # all of a model's versions are loaded


class TritonServer:
    """A real tritonserver process on `repository`: a context manager, or start/wait_until_ready/stop."""

    def __init__(
        self,
        repository: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_file: Path | None = None,
        serve_int8: bool = False,
        echo_log: bool = False,
        log_verbose: int = 0,
    ) -> None:
        self.repository = Path(repository)
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.log_file = Path(log_file) if log_file else None
        self.serve_int8 = serve_int8
        self.echo_log = echo_log
        self.log_verbose = log_verbose
        self.notes: list[str] = []  # what start-up changed in the scratch copy, one line per model
        self.models: list[str] = []  # the models this server loads
        self._process: subprocess.Popen | None = None
        self._command: list[str] = []
        self._ready_workers: dict[int, Worker] = {}
        self._settings: SubstituteSettings | None = None
        self._ready_shared_memory: list[Path] = []
        self._scratch: Path | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._log_thread: threading.Thread | None = None
        self._echo_broken = False  # the reader of our stderr went away: stop echoing, keep serving
        self._log_file_error: str | None = None  # the last error writing --log-file (a full disk)
        # (model, version) -> (when, Triton's reason), from its log: versions that failed to load
        self.load_failures: dict[tuple[str, str], tuple[float, str]] = {}
        self.loaded_at: dict[str, float] = {}  # model -> when Triton last finished loading it
        client_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.http_url = f"{client_host}:{http_port}"
        self.grpc_url = f"{client_host}:{grpc_port}"
        self.metrics_url = f"http://{client_host}:{metrics_port}/metrics"

    def command(self, model_repository: Path, backend_directory: Path) -> list[str]:
        return tritonserver_command(
            model_repository,
            backend_directory,
            host=self.host,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            log_verbose=self.log_verbose,
        )

    def start(self) -> None:
        """Prepare the scratch repository and start the process (returns before the models are loaded)."""
        if self._process is not None and self._process.poll() is None:
            raise ServingError("this server is already running: stop() it first")
        self._scratch = Path(tempfile.mkdtemp(prefix="alexnet-triton-"))
        try:
            self._settings = SubstituteSettings.for_this_machine()
            self.notes = prepare_repository(
                self.repository, self._scratch / "models", serve_int8=self.serve_int8, settings=self._settings
            )
            self.load_failures.clear()
            self.models = sorted(path.name for path in (self._scratch / "models").iterdir())
            backends = prepare_backends(self._scratch / "backends")
            self._command = self.command(self._scratch / "models", backends)
            self._log_tail.clear()
            for note in self.notes:
                self._record(f"alexnet serve: {note}\n")
            self._launch()
        except BaseException:
            self._remove_scratch()
            raise

    def _launch(self) -> None:
        self._process = subprocess.Popen(
            self._command,
            env=server_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # PR_SET_PDEATHSIG follows the starting thread: only tie the server to a main thread.
            preexec_fn=die_with_parent if on_main_thread() else None,
        )
        self._log_thread = threading.Thread(target=self._pump_log, args=(self._process.stdout,), daemon=True)
        self._log_thread.start()

    def restart(self) -> None:
        """Kill the process and its workers at once (a broken server may never finish a graceful stop) and
        start it again on the same prepared repository and ports; returns before the models are loaded."""
        if self._scratch is None:
            raise ServingError("the server was not started: call start() first")
        process, self._process = self._process, None
        if process is not None:
            # What it ran when it was last ready too: a crashed server's orphaned stubs are no longer its
            # children, and its memory map is gone.
            workers = set(self.workers(process.pid)) | set(self._ready_workers)
            shared_memory = set(shared_memory_files(process.pid)) | set(self._ready_shared_memory)
            process.kill()
            process.wait()
            for pid in workers:
                kill_stub(pid)
            self._finish_log()
            for path in shared_memory:  # the Python backend's regions; a killed server leaves them behind
                path.unlink(missing_ok=True)
        self._launch()

    def mirror_model(self, name: str) -> ModelUpdate:
        """Bring the served copy of model `name` in line with the source repository, one atomic rename at a
        time, so that Triton's poll never sees a half-written folder: new version folders are renamed in,
        the config replaced if it changed (the one it replaces is kept, for `undo`), removed versions
        renamed out. Triton loads the changes on its next poll, keeps serving what it had meanwhile, and
        keeps it if the change fails to load. Raises RepositoryError for a config that does not parse or
        would change the served inputs and outputs, ServingError/OSError for a folder that cannot be
        prepared; the copy is then unchanged."""
        if self._scratch is None or self._settings is None:
            raise ServingError("the server was not started: call start() first")
        source = self.repository.resolve()
        staged, trash, kept = (self._scratch / folder for folder in ("staged", "trash", "replaced"))
        for folder in (staged, trash):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        (kept / name).mkdir(parents=True, exist_ok=True)
        prepare_model(
            source,
            source / name,
            staged,
            serve_int8=self.serve_int8,
            settings=self._settings,
            records=self._scratch / PROVIDERS_DIR,
        )
        new, served = staged / name, self._scratch / "models" / name
        check_replaceable(read_config(served), read_config(new), source / name)
        before, after = set(versions(served)), set(versions(new))
        for version in sorted(after - before):
            os.rename(new / str(version), served / str(version))
        changed = []
        for staged_file in sorted(path for path in new.iterdir() if not path.is_dir()):
            target = served / staged_file.name
            if not same_file(staged_file, target):
                first = kept / name / staged_file.name  # what served before the pending change began
                if (target.exists() or target.is_symlink()) and not (first.exists() or first.is_symlink()):
                    os.rename(target, first)
                os.replace(staged_file, target)
                changed.append(staged_file.name)
        for version in sorted(before - after):
            os.rename(served / str(version), trash / str(version))
        shutil.rmtree(trash, ignore_errors=True)
        return ModelUpdate(name, sorted(after - before), sorted(before - after), changed)

    def undo(self, update: ModelUpdate) -> None:
        """Take back what `mirror_model` added to the copy (its new versions, its new config), after Triton
        refused it: Triton would otherwise try it again at every poll. What served before stays."""
        if self._scratch is None:
            raise ServingError("the server was not started: call start() first")
        served, kept, trash = (self._scratch / folder for folder in ("models", "replaced", "trash"))
        shutil.rmtree(trash, ignore_errors=True)
        trash.mkdir()
        for version in update.added:
            if (served / update.model / str(version)).is_dir():
                os.rename(served / update.model / str(version), trash / str(version))
        for file_name in update.files:
            previous = kept / update.model / file_name
            if previous.exists() or previous.is_symlink():
                os.replace(previous, served / update.model / file_name)
        shutil.rmtree(trash, ignore_errors=True)
        self.forget_replaced(update.model)

    def forget_replaced(self, name: str) -> None:
        """The change of `name` is served (or undone): what it replaced is no longer needed."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch / "replaced" / name, ignore_errors=True)

    def load_failure_since(self, name: str, moment: float) -> str | None:
        """Triton's reason for the latest failed load of any version of `name` after `moment`, if any."""
        failures = [(when, why) for (model, _), (when, why) in self.load_failures.items() if model == name]
        latest = max(failures, default=None)
        return latest[1] if latest and latest[0] >= moment else None

    def version_ready(self, name: str, version: str) -> bool:
        """Triton's readiness of one version of a model (404/400 until it is loaded)."""
        return health.version_ready(self.http_url, name, version)

    def newest_ready_version(self, name: str) -> str:
        """The newest version of `name` in the served copy that Triton serves: what requests without a
        version go to."""
        if self._scratch is None:
            return "none"
        served = versions(self._scratch / "models" / name)
        return next((str(v) for v in reversed(served) if self.version_ready(name, str(v))), "none")

    def workers(self, pid: int | None = None) -> dict[int, Worker]:
        """The server's child processes (a Python-backend stub per model instance): pid -> what it serves."""
        pid = pid or self.pid
        return {child: stub_instance(child) for child in child_processes(pid)} if pid else {}

    def _record(self, line: str) -> None:
        """One line of the log: kept for error messages, echoed, written to --log-file. Never raises: Triton
        writes into a pipe that only this reads, so if this stopped, a full pipe would block Triton."""
        self._log_tail.append(line)
        failure, loaded = LOAD_FAILURE.search(line), LOADED.search(line)
        if failure:
            key = (failure["model"], failure["version"])
            self.load_failures[key] = (time.monotonic(), failure["reason"].strip().rstrip('"'))
        if loaded:
            self.loaded_at[loaded["model"]] = time.monotonic()
        if self.echo_log and not self._echo_broken:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):  # the reader went away (`alexnet serve | head`): serve on
                self._echo_broken = True
        if self.log_file is not None:
            self._append_to_log_file(line)

    def _append_to_log_file(self, line: str) -> None:
        try:
            with self.log_file.open("a") as log:
                log.write(line)
        except OSError as error:  # a full disk: keep serving, say so once, try again with the next line
            reason = f"cannot write the log file {self.log_file}: {error.strerror or error}"
            if reason != self._log_file_error and not self._echo_broken:
                try:
                    sys.stderr.write(f"alexnet serve: {reason}; Triton keeps serving\n")
                except (OSError, ValueError):
                    self._echo_broken = True
            self._log_file_error = reason
        else:
            self._log_file_error = None

    def _pump_log(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                self._record(raw.decode("utf-8", errors="replace"))
        except (OSError, ValueError):  # the pipe was closed under us (the process is being stopped)
            pass
        finally:
            stream.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, without the start-up tables (the log file keeps everything)."""
        kept = [line for line in self._log_tail if not line.startswith(("+", "|"))]
        return "".join(kept[-lines:])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_ready(self) -> bool:
        return health.server_ready(self.http_url, timeout=2) is None

    def wait_until_ready(self, timeout: float = 120) -> None:
        """Block until every model is loaded and warmed up; ServingError with the log tail otherwise."""
        if self._process is None:
            raise ServingError("the server was not started: call start() first")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._finish_log()
                code = self._process.returncode
                self.stop()
                raise ServingError(self._failure(f"tritonserver exited with status {code} while starting"))
            if self.is_ready():
                self._ready_workers = self.workers()
                self._ready_shared_memory = shared_memory_files(self._process.pid)
                self._announce_providers()
                return
            time.sleep(0.2)
        self.stop()
        raise ServingError(self._failure(f"tritonserver was not ready after {timeout:.0f}s"))

    def _announce_providers(self) -> None:
        """Say per model which ONNX Runtime execution provider runs it, as read back from its sessions."""
        lines = provider_announcements(self._scratch / PROVIDERS_DIR)
        for line in lines:
            self._record(f"alexnet serve: {line}\n")
        self.notes += [line for line in lines if line not in self.notes]

    def _failure(self, what: str) -> str:
        hint = ""
        tail = self.log_tail()
        if "Address already in use" in tail or "failed to start" in tail.lower():
            hint = " (a port is taken: pick others with --http-port/--grpc-port/--metrics-port)"
        return f"{what}{hint}; the end of its log:\n{tail}"

    def _finish_log(self) -> None:
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)

    def wait(self) -> int:
        """Block until the process exits on its own; its exit status."""
        if self._process is None:
            raise ServingError("the server was not started")
        return self._process.wait()

    def stop(self) -> None:
        """SIGTERM (Triton finishes in-flight requests), then SIGKILL after a grace period. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None:
            self._finish_log()
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> TritonServer:
        self.start()
        self.wait_until_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
