"""The local Triton Inference Server: the `tritonserver` binary of the nvidia-pytriton wheel, run directly.

Start-up works on a scratch copy of the model repository (private to this user). Models whose backend
this server lacks (`onnxruntime`, `tensorrt_plan`) become Python-backend models running the same ONNX file
with ONNX Runtime (triton_repository/onnx_substitute.py), with the exported config otherwise unchanged; the
preprocessing model and the ensemble run as exported. Each change is announced on start
(`TritonServer.notes`). Triton polls the copy, and `mirror_model` brings new versions into it by atomic
renames: no model-control API, so nothing to unlock with a key (triton_repository/server_flags.py).
See docs/architecture.md, "What the local server changes, and why".

    with TritonServer(Path("model_repository"), http_port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port()) as server:
        TritonClassifier(server.grpc_url).classify_files(["cat.jpg"])
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import hashlib
import importlib.util
import json
import os
import py_compile
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from common.hashing import sha256_of
from common.machine import gpu_available, usable_cpu_count
from common.onnx_session import ProviderUse, tensorrt_available
from common.ports import free_port  # noqa: F401  (imported from here by callers)
from serving import health
from serving.errors import ServingError
from triton_repository.configs import (
    ONNX_BACKEND,
    PLAN_BACKEND,
    RepositoryError,
    engine_backend,
    io_signature,
    read_config,
    wants_fp16,
    write_config,
)
from triton_repository.layout import (
    CONFIG_FILE,
    MODEL_SOURCE_FILE,
    ONNX_FILE,
    ONNX_SUBSTITUTE,
    ModelNames,
    base_model,
    model_dirs,
    newest_file,
    version_dirs,
    versions,
)
from triton_repository.server_flags import tritonserver_flags

SUBSTITUTED_BACKENDS = (ONNX_BACKEND, PLAN_BACKEND)  # backends the wheel's server does not ship
# Beside each substitute's model.py: which ONNX file, provider, threads, and where each instance records
# the provider asked for and the one read back from its session: outside the polled repository, since
# Triton reloads a model whose folder changes. (The substitute runs standalone in Triton and spells
# these names itself.)
SETTINGS_FILE = "substitute.json"
PROVIDERS_DIR = "providers"
STOP_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 200
# Triton's log line for a version that did not load, e.g.
# "failed to load 'alexnet' version 3: Internal: ... Protobuf parsing failed."
LOAD_FAILURE = re.compile(r"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)")
LOADED = re.compile(r"successfully loaded '(?P<model>[^']+)'")  # all of a model's versions are loaded


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


def tensorrt_cache_dir(onnx_file: Path, fp16: bool) -> Path:
    """Where ONNX Runtime keeps the TensorRT engines it builds (tens of seconds each) across restarts: named
    by the bytes of the ONNX file (and its external weights) and the precision, never by model name or
    version, so a retrained model exported again as version 1, or `<name>_trt` running `<name>`'s file,
    can never be handed an engine built from other weights. (ONNX Runtime's own engine names hash the
    graph's structure, not its weights.)"""
    digest = hashlib.sha256()
    for part in (onnx_file, onnx_file.with_name(onnx_file.name + ".data")):
        if part.is_file():
            digest.update(sha256_of(part).encode())
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "alexnet" / "tensorrt" / f"{digest.hexdigest()[:24]}-{'fp16' if fp16 else 'fp32'}"


def _replace_file(path: Path, text: str) -> None:
    """Write a generated file in the scratch copy. The copy's files are symlinks into the source repository:
    unlink first, so that nothing is ever written through one into the source."""
    path.unlink(missing_ok=True)
    path.write_text(text)


def _replace_with_copy(source: Path, path: Path) -> None:
    path.unlink(missing_ok=True)
    shutil.copyfile(source, path)


def _substitute(
    model_dir: Path,
    config: model_config_pb2.ModelConfig,
    settings: SubstituteSettings,
    records: Path,
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
    # Every instance may use every core: they run together only under load, when batches are full and
    # sharing the cores costs little; at low load one instance runs at a time, on all of them.
    threads = max(1, settings.cores)
    for version_dir in version_dirs(model_dir):
        onnx_file = onnx_source or version_dir / onnx_name
        if not onnx_file.is_file():
            raise ServingError(f"{onnx_file} is missing: re-run `alexnet export onnx`")
        _replace_with_copy(ONNX_SUBSTITUTE, version_dir / MODEL_SOURCE_FILE)
        substitute = {
            "source_backend": source_backend,
            "onnx_file": onnx_file.name if onnx_source is None else str(onnx_source),
            "device": "gpu" if settings.gpu else "cpu",
            "intra_op_threads": threads,
            "allow_spinning": settings.allow_spinning,
            "tensorrt": settings.tensorrt,
            "fp16": fp16,
            "tensorrt_cache_dir": (
                str(tensorrt_cache_dir(onnx_file.resolve(), fp16)) if settings.tensorrt else None
            ),
            "provider_record_dir": str(records / config.name / version_dir.name),
        }
        _replace_file(version_dir / SETTINGS_FILE, json.dumps(substitute, indent=2))
    (model_dir / CONFIG_FILE).unlink(missing_ok=True)
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


def provider_announcements(records: Path) -> list[str]:
    """One line per substitute model of a started server (its records, `<model>/<version>/<instance>.json`):
    the execution provider its sessions run on, with a WARNING where any instance runs on another than the
    one asked for."""
    lines = []
    if not records.is_dir():
        return lines
    for model_dir in sorted(path for path in records.iterdir() if path.is_dir()):
        records_of_model = sorted(model_dir.glob("*/*.json"))
        uses = {ProviderUse(**json.loads(record.read_text())) for record in records_of_model}
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
    repository: Path,
    source_dir: Path,
    destination: Path,
    *,
    serve_int8: bool,
    settings: SubstituteSettings,
    records: Path | None = None,
) -> str | None:
    """Write one model folder of `repository` into `destination` in the form this server can run (or skip
    it); a note when something changed. `records`: where substitute instances record their execution
    provider (default: PROVIDERS_DIR beside `destination`)."""
    records = records or destination.parent / PROVIDERS_DIR
    name, config = source_dir.name, read_config(source_dir)
    backend = engine_backend(config)
    base = base_model(name)
    if name == ModelNames(base).int8 and not serve_int8:
        return f"{name}: not loaded (start with --int8 to serve the INT8 model under this name)"
    onnx_source, onnx_model = None, ""
    if backend == PLAN_BACKEND:
        fp32_name = base
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
        note = _substitute(target, config, settings, records, onnx_source, onnx_model)
    else:
        write_config(target, config)
        note = None
    _compile_sources(target)
    return note


def _compile_sources(model_dir: Path) -> None:
    """Compile the model's Python sources ahead, for this Python (the stub's): a stub that finds them
    compiled writes no __pycache__ into the folder, and Triton, which polls the folder, would reload the
    model for it. (The stub's embedded interpreter ignores PYTHONDONTWRITEBYTECODE.)"""
    for source in sorted(model_dir.glob("*/*.py")):
        py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)), doraise=True)


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


@dataclass(frozen=True)
class Worker:
    """What a Python-backend stub serves: one instance of one version of one model. Instance names repeat
    across versions (versions 1 and 2 of `alexnet` both run `alexnet_0_0`), so all three identify it."""

    model: str
    version: str
    instance: str

    def __str__(self) -> str:
        return f"{self.instance} of {self.model} version {self.version}" if self.version else self.instance


def _stub_instance(pid: int) -> Worker:
    """The model instance a Python-backend stub serves, from its command line."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return Worker("", "", f"process {pid}")
    # triton_python_backend_stub REPO/<model>/<version>/model.py <shm region> ... <model>_<group>_<n> ...
    model_file = Path(arguments[1]) if len(arguments) > 1 else Path()
    model, version = model_file.parent.parent.name, model_file.parent.name
    instance = next((arg for arg in arguments[2:] if model and arg.startswith(f"{model}_")), "")
    if not instance:
        return Worker("", "", f"{Path(arguments[0]).name} (pid {pid})")
    return Worker(model, version, instance)


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a killed child stays a zombie until its parent reaps it: that counts as dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


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


@dataclass(frozen=True)
class ModelUpdate:
    """What `mirror_model` changed in the served copy of one model."""

    model: str
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # config.pbtxt, labels.txt

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.files)


def _check_replaceable(
    served: model_config_pb2.ModelConfig, new: model_config_pb2.ModelConfig, source: Path
) -> None:
    """A new config may change anything but the model's name, inputs and outputs: Triton has one config for
    all versions, so those would break the versions already served."""
    if new.name != served.name or io_signature(new) != io_signature(served):
        raise RepositoryError(
            f"{source / CONFIG_FILE} would change the served model's name, inputs or outputs "
            f"({new.name!r}: {io_signature(new)}; served: {io_signature(served)}): fix it, or export under "
            "another --name"
        )


def _same_file(staged: Path, served: Path) -> bool:
    """Whether a staged top-level file (a generated config, or a symlink to the source's labels) equals the
    served one."""
    if staged.is_symlink() or served.is_symlink():
        return staged.is_symlink() and served.is_symlink() and os.readlink(staged) == os.readlink(served)
    return served.is_file() and staged.read_bytes() == served.read_bytes()


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
        shared = tritonserver_flags(
            [str(model_repository)],
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
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
            self.load_failures.clear()
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
        _check_replaceable(read_config(served), read_config(new), source / name)
        before, after = set(versions(served)), set(versions(new))
        for version in sorted(after - before):
            os.rename(new / str(version), served / str(version))
        changed = []
        for staged_file in sorted(path for path in new.iterdir() if not path.is_dir()):
            target = served / staged_file.name
            if not _same_file(staged_file, target):
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
        return {child: _stub_instance(child) for child in child_processes(pid)} if pid else {}

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
                self._ready_shared_memory = _shared_memory_files(self._process.pid)
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
