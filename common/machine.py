"""Facts about this machine that change what runs and how fast: usable CPUs, vector extensions, GPUs.

Standard library only (no torch, no ONNX Runtime): every stage and the benchmarks report these.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo names


def usable_cpu_count() -> int:
    """The CPUs this process may run on (affinity and cpusets), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average (how busy the machine was when a figure was taken), or None off Unix."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def cpu_name() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) ..."), or what the platform module knows off Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*modules: str) -> dict[str, str | None]:
    """Each module's version as it reports it (`module.__version__`: onnxruntime-gpu says "onnxruntime"),
    None where it is not installed. Imports the modules."""
    found: dict[str, str | None] = {}
    for name in modules:
        try:
            found[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            found[name] = None
    return found


@functools.cache
def cpu_isa() -> str:
    """The x86 vector extensions ONNX Runtime picks its integer kernels by ("avx2", "avx2 avx512f
    avx512_vnni", ...); INT8 results and speed differ between them. "unknown" off Linux/x86."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "unknown"
    found = [flag for flag in ISA_FLAGS if flag in flags]
    return " ".join(found) or "none of " + ", ".join(ISA_FLAGS)


@functools.cache
def gpu_available() -> bool:
    """True when the CUDA driver loads and reports at least one device (no torch needed)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
