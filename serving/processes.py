"""tritonserver's processes as the operating system sees them: its Python-backend stubs (which model
instance each serves), their shared memory, whether a pid is alive, and a server that dies with the thread
that started it. Linux only (/proc)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_SECONDS = 15.0


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def die_with_parent() -> None:
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


def stub_instance(pid: int) -> Worker:
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


def shared_memory_files(pid: int) -> list[Path]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return sorted({Path(line.split(None, 5)[5]) for line in maps.splitlines() if " /dev/shm/" in line})


def kill_stub(pid: int) -> None:
    """SIGKILL a Python-backend stub, unless the pid is gone or now belongs to another program."""
    try:
        if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
