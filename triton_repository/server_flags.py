"""The tritonserver command line: one list for `alexnet serve` (serving/server.py) and the production
image's entry point (serving/docker/entrypoint.sh), which prints it with

    python3 -m triton_repository.server_flags --image --repository DIR [--repository DIR ...] \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 --exit-timeout-secs 30

(one flag per line). Nothing in it is secret: the command line of a process is readable by every local
user (/proc/PID/cmdline), so no key, password or token may ever be one of these flags.
"""

from __future__ import annotations

import argparse

# Endpoints no client of ours needs: repository index/load/unload, shared-memory registration, trace and
# log settings. Shared-memory registration lets a caller make the server map any region its user can
# open (the Python backend's own included), and the repository API loads models: code execution. Triton
# can only restrict an endpoint to requests carrying a header, so these get a header no client can send:
# its name has capital letters, which HTTP/2 (gRPC) refuses in a header name, and its value a line break,
# which no HTTP/1 header value can hold. Visible on the command line, it still opens nothing, to anyone.
# (Rollouts need no API: `alexnet serve` lets Triton poll its private copy of the repository.)
CLOSED_APIS = ("model-repository", "shared-memory", "trace", "logging")
CLOSED_HEADER = "Alexnet-Closed"
CLOSED_VALUE = "no\nclient"
# How often the local server's Triton looks for new, changed or removed versions in its copy.
REPOSITORY_POLL_SECONDS = 2


def tritonserver_flags(
    repositories: list[str],
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    exit_timeout_secs: int,
    image: bool,
    host: str | None = None,
) -> list[str]:
    """Every flag but the binary, for the production image (`image`) or for `alexnet serve`; `host` binds
    all three endpoints to one address (Triton's default: every interface)."""
    flags = [f"--model-repository={repository}" for repository in repositories]
    if image:
        # The image serves the models it starts with; ready means every one of them is ready.
        flags += ["--model-control-mode=none", "--strict-readiness=true"]
    else:
        # Poll mode: Triton loads new versions from its copy of the repository by itself, which
        # serving/supervisor.py changes by atomic renames when `alexnet export onnx` adds a version.
        # Triton 2.51's strict readiness stays false once any version was unloaded (measured: after a
        # rollout from version 1 to 2); models' own readiness and serving/health.py's check tell the
        # truth instead. Endpoints still open only once every model is loaded.
        flags += [
            "--model-control-mode=poll",
            f"--repository-poll-secs={REPOSITORY_POLL_SECONDS}",
            "--strict-readiness=false",
        ]
    flags += ["--exit-on-error=true", "--disable-auto-complete-config"]
    for endpoint, port in (("http", http_port), ("grpc", grpc_port), ("metrics", metrics_port)):
        flags += [f"--{endpoint}-address={host}"] if host is not None else []
        flags.append(f"--{endpoint}-port={port}")
    closed = f"{','.join(CLOSED_APIS)}:{CLOSED_HEADER}={CLOSED_VALUE}"
    flags += [
        f"--http-restricted-api={closed}",
        f"--grpc-restricted-protocol={closed}",
        f"--exit-timeout-secs={exit_timeout_secs}",
    ]
    if image:
        flags += ["--allow-metrics=true", "--log-format=ISO8601"]  # the autoscaler reads the metrics
    return flags


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the tritonserver flags, one per line.")
    parser.add_argument("--repository", action="append", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--exit-timeout-secs", type=int, required=True)
    parser.add_argument("--image", action="store_true", help="the production image's flags")
    args = parser.parse_args(argv)
    flags = tritonserver_flags(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout_secs=args.exit_timeout_secs,
        image=args.image,
    )
    # NUL-separated: the closed header's value holds a line break, so lines cannot carry the flags.
    print("\0".join(flags), end="")


if __name__ == "__main__":
    main()
