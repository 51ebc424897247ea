"""The machine part: versions, the GPU, ISA and load, what is missing, and whether torch.compile can build."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

import torch

from common.machine import cpu_isa, load_average, versions
from gpu_check.harness import OPTIONAL, Check, Section


def describe_machine(check: Check, section: Section) -> None:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        **versions("torch", "torchvision", "numpy"),
        "cpu_count": os.cpu_count(),
        "isa": cpu_isa(),
        "load_average_1min": load_average(),
        "device": str(check.device),
        "torch_compile": compile_blocker() or "available",
    }
    if check.on_gpu:
        properties = torch.cuda.get_device_properties(check.device)
        env |= {
            "gpu": properties.name,
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "compute_capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "nccl": _version_text(torch.cuda.nccl.version()),
            "bf16": torch.cuda.is_bf16_supported(),
        }
    env |= versions("onnxruntime")
    if env["onnxruntime"] is not None:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    env["missing"] = {name: why for name, why in OPTIONAL.items() if importlib.util.find_spec(name) is None}
    check.environment = env
    section.results = {key: env[key] for key in ("python", "torch", "device", "missing", "torch_compile")}


def _version_text(version: Any) -> str:
    return ".".join(map(str, version)) if isinstance(version, tuple | list) else str(version)


def compile_blocker() -> str | None:
    """Why torch.compile cannot build here, or None. Inductor compiles C++ (and, on GPUs, Triton's launcher)
    with the system's C compiler against Python's headers: without them every compile fails."""
    compilers = [name for name in ("cc", "gcc", "clang") if shutil.which(name)]
    if os.environ.get("CXX") and shutil.which(os.environ["CXX"]):
        compilers.append(os.environ["CXX"])
    if not compilers:
        return (
            "no C compiler (cc, gcc or clang) on PATH: torch.compile's inductor needs one (apt install gcc)"
        )
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return (
            f"no Python.h in {headers.parent}: torch.compile builds against Python's headers "
            f"(apt install python{sys.version_info.major}.{sys.version_info.minor}-dev)"
        )
    return None
