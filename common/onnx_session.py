"""ONNX Runtime sessions set up one way for export's checks, the benchmarks and serving.

Execution providers in the order TensorRT, CUDA, CPU, each only where this machine can run it
(onnxruntime-gpu lists the GPU providers even on a machine without a GPU, and asking for them there
fills the log with load failures). CPU threads are set deliberately: ONNX Runtime's default counts
the machine's cores, not the ones this process may use (containers, taskset), and oversubscribes.

No torch: export's checks, the benchmarks and the local server's ONNX Runtime models (which import it
from the installed project, triton_repository/onnx_substitute.py) all open their sessions here.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.machine import gpu_available, usable_cpu_count

# onnxruntime-gpu 1.31's TensorRT provider links libnvinfer.so.10 (TensorRT 10) and CUDA 13.
TENSORRT_LIBRARY = "libnvinfer.so.10"
DEVICES = ("auto", "cpu", "cuda", "gpu")  # "gpu" is an alias of "cuda"


@functools.cache
def tensorrt_available() -> bool:
    """True when the TensorRT library that ONNX Runtime's TensorRT provider links can be loaded."""
    try:
        import tensorrt  # noqa: F401  (the pip package loads its bundled libnvinfer)
    except ImportError:
        pass
    try:
        ctypes.CDLL(TENSORRT_LIBRARY)
        return True
    except OSError:
        return False


def select_providers(
    device: str = "auto",
    *,
    device_id: int = 0,
    tensorrt: bool = True,
    fp16: bool = False,
    tensorrt_cache_dir: str | Path | None = None,
) -> list[str | tuple[str, dict[str, Any]]]:
    """Providers for `ort.InferenceSession`, best first: TensorRT, CUDA, CPU, as this machine allows.

    device: "auto" (GPU providers where a GPU is usable), "cuda"/"gpu" (the same; `create_session`
    raises if there is no GPU), "cpu". tensorrt=False skips the TensorRT provider; fp16 lets TensorRT
    pick FP16 kernels.
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    available = set(ort.get_available_providers())
    providers: list[str | tuple[str, dict[str, Any]]] = []
    if device != "cpu" and gpu_available():
        if tensorrt and "TensorrtExecutionProvider" in available and tensorrt_available():
            trt_options: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": fp16}
            if tensorrt_cache_dir is not None:
                trt_options |= tensorrt_cache_options(tensorrt_cache_dir)
            providers.append(("TensorrtExecutionProvider", trt_options))
        if "CUDAExecutionProvider" in available:
            _preload_cuda_libraries(ort)
            providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    providers.append("CPUExecutionProvider")
    return providers


def tensorrt_cache_options(cache_dir: str | Path) -> dict[str, Any]:
    """The TensorRT provider's engine cache in `cache_dir`, created here: building TensorRT engines takes
    tens of seconds, so keep them between sessions. ONNX Runtime creates only the last level of the path,
    and without the folder the provider fails to start and the session quietly runs on CUDA instead."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)}


@dataclass(frozen=True)
class ProviderUse:
    """The execution provider a session was asked to run on first, and the one it actually runs on."""

    asked: str
    running: str

    @property
    def as_asked(self) -> bool:
        return self.asked == self.running

    def line(self, model: str) -> str:
        if self.as_asked:
            return f"{model}: ONNX Runtime runs it on {self.running}"
        return (
            f"WARNING: {model}: ONNX Runtime runs it on {self.running}, NOT on {self.asked} as asked "
            f"({self.asked} failed to start: see the ONNX Runtime warnings above)"
        )


def create_session(model_path: str | Path, **settings: Any) -> Any:
    """An `onnxruntime.InferenceSession` for `model_path`; the settings are `open_session`'s."""
    return open_session(model_path, **settings)[0]


def open_session(
    model_path: str | Path,
    *,
    device: str = "auto",
    device_id: int = 0,
    threads: int | None = None,
    allow_spinning: bool = True,
    tensorrt: bool = True,
    fp16: bool = False,
    tensorrt_cache_dir: str | Path | None = None,
) -> tuple[Any, ProviderUse]:
    """An `onnxruntime.InferenceSession` for `model_path` with all graph optimisations, and the execution
    provider it runs on, read back from the session (ONNX Runtime falls back to the next provider, with
    only a warning, when one fails to start).

    threads: intra-op threads (default: the CPUs this process may use). Nodes run one after another
    (inter-op parallelism pays only for graphs with branches; AlexNet has none). allow_spinning=False
    stops idle threads from busy-waiting, which matters when several sessions share the cores.
    With device "cuda"/"gpu" and no usable GPU it raises RuntimeError rather than quietly running on
    the CPU.
    """
    import onnxruntime as ort

    if device in ("cuda", "gpu") and not gpu_available():
        raise RuntimeError("no usable NVIDIA GPU (the CUDA driver is missing or sees no device)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or usable_cpu_count()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    options.log_severity_level = 3  # errors only: the provider choices above are deliberate
    providers = select_providers(
        device, device_id=device_id, tensorrt=tensorrt, fp16=fp16, tensorrt_cache_dir=tensorrt_cache_dir
    )
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    asked = providers[0] if isinstance(providers[0], str) else providers[0][0]
    return session, ProviderUse(asked=asked, running=session.get_providers()[0])


def _preload_cuda_libraries(ort: Any) -> None:
    # The CUDA/cuDNN libraries may come from NVIDIA's pip packages (torch's dependencies here)
    # rather than the system: ONNX Runtime knows where to find and load them.
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # noqa: BLE001  (a system CUDA install needs no preloading)
            pass
