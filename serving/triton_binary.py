"""The nvidia-pytriton wheel's tritonserver and what starting it takes: where the wheel keeps the binary,
its Python backend and the stub for this Python; the backend folder built from them; the environment
(LD_LIBRARY_PATH with this interpreter's library folder first, the environment's bin on PATH); and the
command line, from the flags shared with the production image (triton_repository/server_flags.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from common.machine import gpu_available
from serving.errors import ServingError
from serving.processes import STOP_GRACE_SECONDS
from triton_repository.server_flags import tritonserver_flags


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


def prepare_backends(destination: Path) -> Path:
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


def tritonserver_command(
    model_repository: Path,
    backend_directory: Path,
    *,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    log_verbose: int = 0,
) -> list[str]:
    """The wheel's tritonserver on `model_repository`: the flags the production image uses too, then the
    local ones (the backend folder, what a machine without a GPU must not set up, the log level)."""
    shared = tritonserver_flags(
        [str(model_repository)],
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        exit_timeout_secs=int(STOP_GRACE_SECONDS) - 5,
        image=False,
        host=host,
    )
    return [
        str(Distribution.find().binary),
        *shared,
        f"--backend-directory={backend_directory}",
        *_device_flags(),
        f"--log-verbose={log_verbose}",
    ]


def _device_flags() -> list[str]:
    if gpu_available():
        return []
    # No GPU: no pinned host memory or GPU metrics to set up (each would log a CUDA error).
    return ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
