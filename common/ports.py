"""Can a server listen on these ports? Asked before any slow work (loading models, training), so that a
taken port is one clear line at once instead of an error after minutes. Standard library only."""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port right now ("taken", or the system's reason), or None.

    Binds as Triton and Gradio do (SO_REUSEADDR), so a port left in TIME_WAIT by a stopped server counts as
    free, while one something listens on, on this address or on all of them, counts as taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            # Other reasons: an address not of this machine, a host name that does not resolve.
            return "taken" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
    return None


def free_port() -> int:
    """A TCP port that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_problems(host: str, ports: Mapping[str, int]) -> list[str]:
    """For options like {"--http-port": 8000, ...}: one phrase per port that cannot be listened on (port 0,
    "any free port", is never a problem), each saying how to fix it."""
    problems = []
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port == 0:
            continue
        if port in seen:
            problems.append(f"{option} {port} is also {seen[port]}: give each its own port")
            continue
        seen[port] = option
        why = listen_problem(host, port)
        if why == "taken":
            problems.append(
                f"port {port} ({option}) is taken: stop what listens there (`ss -ltnp 'sport = :{port}'` "
                f"names it) or choose another with {option}"
            )
        elif why is not None:
            problems.append(f"cannot listen on {host}:{port} ({option}): {why}")
    return problems
