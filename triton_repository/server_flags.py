"""The tritonserver command line: one list for `alexnet serve` (serving/server.py) and the production
image's entry point (serving/docker/entrypoint.sh), which prints it with

    python3 -m triton_repository.server_flags --image --repository DIR [--repository DIR ...] \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 --exit-timeout-secs 30 [--admin-key KEY]

(one flag per line; a random admin key when none is given).
"""

from __future__ import annotations

import argparse
import secrets

ADMIN_HEADER = "alexnet-admin-key"
# Endpoints nobody needs from outside: repository index/load/unload, shared-memory registration, trace and
# log settings. They answer only with the admin header, whose value is a random secret per start unless
# the operator sets one.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")


def random_admin_key() -> str:
    return secrets.token_hex(16)


def tritonserver_flags(
    repositories: list[str],
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    admin_key: str,
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
        # Explicit control, every model loaded at start: serving/supervisor.py loads new versions
        # through the (admin-key) repository API when `alexnet export onnx` adds them.
        # Triton 2.51's strict readiness stays false once any version was unloaded (measured:
        # after a rollout from version 1 to 2); models' own readiness and serving/health.py's
        # check tell the truth instead. Endpoints still open only once every model is loaded.
        flags += ["--model-control-mode=explicit", "--load-model=*", "--strict-readiness=false"]
    flags += ["--exit-on-error=true", "--disable-auto-complete-config"]
    for endpoint, port in (("http", http_port), ("grpc", grpc_port), ("metrics", metrics_port)):
        flags += [f"--{endpoint}-address={host}"] if host is not None else []
        flags.append(f"--{endpoint}-port={port}")
    restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={admin_key}"
    flags += [
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
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
    parser.add_argument("--admin-key", default="", help="default: a random one")
    parser.add_argument("--image", action="store_true", help="the production image's flags")
    args = parser.parse_args(argv)
    flags = tritonserver_flags(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        admin_key=args.admin_key or random_admin_key(),
        exit_timeout_secs=args.exit_timeout_secs,
        image=args.image,
    )
    print("\n".join(flags))


if __name__ == "__main__":
    main()
