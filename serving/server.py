"""The local Triton Inference Server: the `tritonserver` binary of the nvidia-pytriton wheel, run directly.

Start-up works on a scratch copy of the model repository. Models whose backend this server lacks
(`onnxruntime`, `tensorrt_plan`) become Python-backend models running the same ONNX file with ONNX Runtime
(triton_repository/onnx_substitute.py), with the exported config otherwise unchanged; the preprocessing
model and the ensemble run as exported. Each change is announced on start (`TritonServer.notes`).
See docs/architecture.md, "What the local server changes, and why".

    with TritonServer(Path("model_repository"), http_port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port()) as server:
        TritonClassifier(server.grpc_url).classify_files(["cat.jpg"])
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from common.machine import gpu_available, usable_cpu_count
from common.onnx_session import ProviderUse, tensorrt_available
from serving.errors import ServingError
from triton_repository.configs import (
    ONNX_BACKEND,
    PLAN_BACKEND,
    engine_backend,
    read_config,
    wants_fp16,
    write_config,
)
from triton_repository.layout import (
    CONFIG_FILE,
    MODEL_SOURCE_FILE,
    ONNX_FILE,
    ONNX_SUBSTITUTE,
    model_dirs,
    newest_file,
    version_dirs,
)
from triton_repository.server_flags import ADMIN_HEADER, random_admin_key, tritonserver_flags

SUBSTITUTED_BACKENDS = (ONNX_BACKEND, PLAN_BACKEND)  # backends the wheel's server does not ship
# Beside each substitute's model.py: which ONNX file, provider, threads. Then, written by each substitute
# model instance once its session is up: the provider asked for and the one read back from the session.
# (The substitute runs standalone in Triton and spells these names itself.)
SETTINGS_FILE = "substitute.json"
PROVIDER_FILE = "execution_provider.json"
STOP_GRACE_SECONDS = 15.0
LOAD_TIMEOUT_SECONDS = 300.0  # loading a model warms it up (and on a GPU may build TensorRT engines)
LOG_TAIL_LINES = 200


def free_port() -> int:
    """A TCP port that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Distribution:
    """Where the nvidia-pytriton wheel keeps the server, its Python backend and its libraries."""

    root: Path

    @classmethod
    def find(cls) -> Distribution:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServingError("nvidia-pytriton is not installed: run `make setup` (it ships tritonserver)")
        return cls(Path(next(iter(spec.submodule_search_locations))))

    @property
    def binary(self) -> Path:
        return self.root / "tritonserver" / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "tritonserver" / "backends" / "python"

    @property
    def stub(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"

    @property
    def libs(self) -> Path:
        return self.root.parent / "nvidia_pytriton.libs"


@dataclass(frozen=True)
class SubstituteSettings:
    """How the generated Python-backend models run ONNX Runtime on this machine."""

    gpu: bool
    tensorrt: bool
    cores: int
    allow_spinning: bool = False  # spinning threads would steal the cores the gRPC/HTTP threads need

    @classmethod
    def for_this_machine(cls) -> SubstituteSettings:
        gpu = gpu_available()
        return cls(gpu=gpu, tensorrt=gpu and tensorrt_available(), cores=usable_cpu_count())


def _link_tree(source: Path, destination: Path) -> None:
    """Mirror a model folder with symlinks (model files can be hundreds of MB); configs are rewritten."""
    shutil.copytree(source, destination, symlinks=False, copy_function=os.symlink)


def tensorrt_cache_dir(model: str, version: str) -> Path:
    """Where ONNX Runtime keeps the TensorRT engines it builds (tens of seconds each) across restarts."""
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "alexnet" / "tensorrt" / model / version


def _substitute(
    model_dir: Path,
    config: model_config_pb2.ModelConfig,
    settings: SubstituteSettings,
    onnx_source: Path | None = None,
    onnx_model: str = "",
) -> str:
    """Turn an onnxruntime/tensorrt_plan model folder into the Python-backend model running its ONNX file
    (or `onnx_source`, model `onnx_model`'s); the note saying what it serves in place of what."""
    source_backend = engine_backend(config)
    onnx_name = config.default_model_filename if source_backend == ONNX_BACKEND else ""
    onnx_name = onnx_name or ONNX_FILE
    fp16 = wants_fp16(config)
    gpu_kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    on_gpu = any(group.kind == gpu_kind for group in config.instance_group)
    config.ClearField("platform")
    config.backend = "python"
    config.ClearField("default_model_filename")
    # The onnxruntime backend's accelerator settings; here ONNX Runtime's providers play that part.
    config.optimization.ClearField("execution_accelerators")
    if config.optimization.ByteSize() == 0:
        config.ClearField("optimization")
    instances = sum(max(1, group.count) for group in config.instance_group) or 1
    if not settings.gpu:
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
            group.ClearField("gpus")
    threads = max(1, settings.cores // instances)
    for version_dir in version_dirs(model_dir):
        onnx_file = onnx_source or version_dir / onnx_name
        if not onnx_file.is_file():
            raise ServingError(f"{onnx_file} is missing: re-run `alexnet export onnx`")
        shutil.copyfile(ONNX_SUBSTITUTE, version_dir / MODEL_SOURCE_FILE)
        substitute = {
            "source_backend": source_backend,
            "onnx_file": onnx_file.name if onnx_source is None else str(onnx_source),
            "device": "gpu" if settings.gpu else "cpu",
            "intra_op_threads": threads,
            "allow_spinning": settings.allow_spinning,
            "tensorrt": settings.tensorrt,
            "fp16": fp16,
            "tensorrt_cache_dir": str(tensorrt_cache_dir(config.name, version_dir.name)),
        }
        (version_dir / SETTINGS_FILE).write_text(json.dumps(substitute, indent=2))
    write_config(model_dir, config)
    provider = ("TensorRT" if settings.tensorrt else "CUDA") if settings.gpu else "CPU"
    served = f"{onnx_model}'s ONNX model" if onnx_model else "its ONNX model"
    replaced = "its TensorRT plan" if source_backend == PLAN_BACKEND else f"the {source_backend} backend"
    why = (
        "a plan runs only where it was built"
        if source_backend == PLAN_BACKEND
        else f"the local server has no {source_backend} backend"
    )
    moved = "; its GPU instances run on the CPU: no GPU here" if on_gpu and not settings.gpu else ""
    return (
        f"{config.name}: serving {served} on ONNX Runtime ({provider} execution provider, "
        f"{instances} instance(s) x {threads} thread(s)) in the Python backend, in place of {replaced} "
        f"({why}){moved}"
    )


def provider_announcements(models_dir: Path) -> list[str]:
    """One line per substitute model of a started server's scratch repository: the execution provider its
    sessions run on, with a WARNING where any instance runs on another than the one asked for."""
    lines = []
    for model_dir in sorted(path for path in models_dir.iterdir() if path.is_dir()):
        uses = {
            ProviderUse(**json.loads(record.read_text()))
            for record in sorted(model_dir.glob(f"*/*.{PROVIDER_FILE}"))
        }
        if uses:
            worst = min(uses, key=lambda use: (use.as_asked, use.running))
            lines.append(worst.line(model_dir.name))
    return lines


def prepare_repository(
    repository: Path,
    destination: Path,
    *,
    serve_int8: bool = False,
    settings: SubstituteSettings | None = None,
) -> list[str]:
    """Copy `repository` to `destination` in the form this server can run; returns one note per change."""
    repository = Path(repository).resolve()
    if not repository.is_dir():
        raise ServingError(f"no model repository at {repository}: create one with `alexnet export onnx`")
    sources = model_dirs(repository)
    if not sources:
        raise ServingError(
            f"{repository} holds no model (no */{CONFIG_FILE}): create it with "
            f"`alexnet export onnx --model DIR --repository {repository}`"
        )
    settings = settings or SubstituteSettings.for_this_machine()
    for path in sources:
        read_config(path)  # every config must parse before anything is written
    destination.mkdir(parents=True)
    notes = [
        prepare_model(repository, source_dir, destination, serve_int8=serve_int8, settings=settings)
        for source_dir in sources
    ]
    return [note for note in notes if note]


def prepare_model(
    repository: Path, source_dir: Path, destination: Path, *, serve_int8: bool, settings: SubstituteSettings
) -> str | None:
    """Write one model folder of `repository` into `destination` in the form this server can run (or skip
    it); a note when something changed."""
    name, config = source_dir.name, read_config(source_dir)
    backend = engine_backend(config)
    if name.endswith("_int8") and not serve_int8:
        return f"{name}: not loaded (start with --int8 to serve the INT8 model under this name)"
    onnx_source, onnx_model = None, ""
    if backend == PLAN_BACKEND:
        fp32_name = name.removesuffix("_trt")
        if not (settings.gpu and settings.tensorrt):
            return (
                f"{name}: TensorRT plan not served locally (needs a GPU and TensorRT; this machine "
                f"has {'no GPU' if not settings.gpu else 'no TensorRT'}); use {fp32_name}"
            )
        onnx_source, onnx_model = _sibling_onnx(repository, fp32_name, name), fp32_name
    target = destination / name
    _link_tree(source_dir, target)
    (target / CONFIG_FILE).unlink()
    if backend in SUBSTITUTED_BACKENDS:
        return _substitute(target, config, settings, onnx_source, onnx_model)
    write_config(target, config)
    return None


def _sibling_onnx(repository: Path, fp32_name: str, plan_name: str) -> Path:
    """A plan only runs where it was built; locally its model runs the FP32 model's ONNX with TensorRT."""
    onnx_file = newest_file(repository / fp32_name, ONNX_FILE)
    if onnx_file is None:
        raise ServingError(f"{plan_name} needs {fp32_name}/<version>/{ONNX_FILE} beside it in {repository}")
    return onnx_file.resolve()


def _prepare_backends(destination: Path) -> Path:
    """A backend folder holding the wheel's Python backend and the stub built for this Python version."""
    distribution = Distribution.find()
    python_dir = destination / "python"
    python_dir.mkdir(parents=True)
    for source in (
        distribution.python_backend / "libtriton_python.so",
        distribution.python_backend / "triton_python_backend_utils.py",
        distribution.stub,
    ):
        if not source.is_file():
            raise ServingError(f"{source} is missing: reinstall nvidia-pytriton (`make setup`)")
        shutil.copy2(source, python_dir / source.name)
    return destination


def server_environment() -> dict[str, str]:
    """LD_LIBRARY_PATH and PATH so tritonserver and its Python stubs run with this environment's Python."""
    env = dict(os.environ)
    library_dirs = [sysconfig.get_config_var("LIBDIR"), str(Distribution.find().libs)]
    if env.get("LD_LIBRARY_PATH"):
        library_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(library_dirs)  # LIBDIR first, else the stub loads the system libpython
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}:{env.get('PATH', '')}"  # the stub finds the venv's packages
    return env


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the thread that started tritonserver dies (with its process)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_processes(pid: int) -> list[int]:
    """The live (not zombie) child processes of `pid`."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[1]) == pid and fields[0] != "Z":  # a killed child stays a zombie until reaped
            children.append(int(stat.parent.name))
    return sorted(children)


def _stub_instance(pid: int) -> str:
    """The model instance a Python-backend stub serves (`alexnet_0_0`), from its command line."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return f"process {pid}"
    # triton_python_backend_stub REPO/<model>/<version>/model.py <shm region> ... <model>_<group>_<n> ...
    model = Path(arguments[1]).parent.parent.name if len(arguments) > 1 else ""
    instance = next((arg for arg in arguments[2:] if model and arg.startswith(f"{model}_")), "")
    return instance or f"{Path(arguments[0]).name} (pid {pid})"


def _shared_memory_files(pid: int) -> list[Path]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return sorted({Path(line.split(None, 5)[5]) for line in maps.splitlines() if " /dev/shm/" in line})


def _kill_stub(pid: int) -> None:
    """SIGKILL a Python-backend stub, unless the pid is gone or now belongs to another program."""
    try:
        if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass


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
        self.admin_key = random_admin_key()
        self.notes: list[str] = []  # what start-up changed in the scratch copy, one line per model
        self.models: list[str] = []  # the models this server loads
        self._process: subprocess.Popen | None = None
        self._command: list[str] = []
        self._ready_workers: dict[int, str] = {}
        self._settings: SubstituteSettings | None = None
        self._ready_shared_memory: list[Path] = []
        self._scratch: Path | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._log_thread: threading.Thread | None = None
        client_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.http_url = f"{client_host}:{http_port}"
        self.grpc_url = f"{client_host}:{grpc_port}"
        self.metrics_url = f"http://{client_host}:{metrics_port}/metrics"

    def command(self, model_repository: Path, backend_directory: Path) -> list[str]:
        shared = tritonserver_flags(
            [str(model_repository)],
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            admin_key=self.admin_key,
            exit_timeout_secs=int(STOP_GRACE_SECONDS) - 5,
            image=False,
            host=self.host,
        )
        return [
            str(Distribution.find().binary),
            *shared,
            f"--backend-directory={backend_directory}",
            *self._device_flags(),
            f"--log-verbose={self.log_verbose}",
        ]

    @staticmethod
    def _device_flags() -> list[str]:
        if gpu_available():
            return []
        # No GPU: no pinned host memory or GPU metrics to set up (each would log a CUDA error).
        return ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]

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
            self.models = sorted(path.name for path in (self._scratch / "models").iterdir())
            backends = _prepare_backends(self._scratch / "backends")
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
            preexec_fn=_die_with_parent if _on_main_thread() else None,
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
            shared_memory = set(_shared_memory_files(process.pid)) | set(self._ready_shared_memory)
            process.kill()
            process.wait()
            for pid in workers:
                _kill_stub(pid)
            self._finish_log()
            for path in shared_memory:  # the Python backend's regions; a killed server leaves them behind
                path.unlink(missing_ok=True)
        self._launch()

    def load_model(self, name: str, timeout: float = LOAD_TIMEOUT_SECONDS) -> None:
        """(Re)load `name` from the prepared repository through Triton's model-control API; Triton keeps
        serving what it had until the new version is ready, and keeps it if that version fails."""
        request = urllib.request.Request(
            f"http://{self.http_url}/v2/repository/models/{name}/load",
            data=b"{}",
            headers={ADMIN_HEADER: self.admin_key, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", errors="replace")
            try:
                body = json.loads(body).get("error", body)
            except ValueError:
                pass
            body = body.split("\n\nAt:")[0].strip()  # the Python backend appends the stub's traceback
            raise ServingError(f"Triton could not load {name}: {body}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ServingError(f"Triton did not answer the load of {name}: {error}") from None

    def reload_from_source(self, name: str) -> None:
        """Prepare model `name` again from the source repository (new versions, new files) and load it.
        If Triton refuses it, the prepared folder of what still serves is put back, so that a restart
        serves that too; ServingError says why."""
        if self._scratch is None or self._settings is None:
            raise ServingError("the server was not started: call start() first")
        source = self.repository.resolve()
        served, staged, previous = (self._scratch / folder for folder in ("models", "staged", "previous"))
        for folder in (staged, previous):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        prepare_model(source, source / name, staged, serve_int8=self.serve_int8, settings=self._settings)
        os.rename(served / name, previous / name)
        os.rename(staged / name, served / name)
        try:
            self.load_model(name)
        except ServingError:
            shutil.rmtree(served / name)
            os.rename(previous / name, served / name)
            raise

    def workers(self, pid: int | None = None) -> dict[int, str]:
        """The server's child processes (a Python-backend stub per model instance): pid -> instance name."""
        pid = pid or self.pid
        return {child: _stub_instance(child) for child in child_processes(pid)} if pid else {}

    def _record(self, line: str) -> None:
        self._log_tail.append(line)
        if self.echo_log:
            sys.stderr.write(line)
            sys.stderr.flush()
        if self.log_file is not None:
            with self.log_file.open("a") as log:
                log.write(line)

    def _pump_log(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self._record(raw.decode("utf-8", errors="replace"))
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
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

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
                self._ready_shared_memory = _shared_memory_files(self._process.pid)
                self._announce_providers()
                return
            time.sleep(0.2)
        self.stop()
        raise ServingError(self._failure(f"tritonserver was not ready after {timeout:.0f}s"))

    def _announce_providers(self) -> None:
        """Say per model which ONNX Runtime execution provider runs it, as read back from its sessions."""
        lines = provider_announcements(self._scratch / "models")
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
