#!/usr/bin/env bash
# The production image's entry point: check the model repository, optionally build the TensorRT plan
# (first start only; cached on a volume), then exec Triton with the flags `alexnet serve` shares
# (triton_repository/server_flags.py) and strict model control.
#
#   entrypoint.sh [TRITONSERVER_FLAGS...]   serve (extra flags go to tritonserver as they are)
#   entrypoint.sh build-plan                build or find the cached plan, print its repository, exit
#   entrypoint.sh check                     check the model repository, exit
#   entrypoint.sh COMMAND...                run anything else (a shell, for debugging)
#
# Settings (environment; the Dockerfile and serving/k8s/deployment.yaml set the same names):
#   ALEXNET_MODEL_REPOSITORY  the repository baked into the image, or mounted over it
#   ALEXNET_MODEL_NAME        the ONNX model the plan is built from (`alexnet export onnx --name`)
#   ALEXNET_TRT_PLAN          off | build: serve <name>_trt too, built here at first start
#   ALEXNET_TRT_PRECISION     fp16 | fp32 for the plan
#   ALEXNET_CACHE_DIR         where plans are cached: mount a volume here
#   ALEXNET_HTTP_PORT, ALEXNET_GRPC_PORT, ALEXNET_METRICS_PORT
#   ALEXNET_EXIT_TIMEOUT_SECS how long SIGTERM waits for in-flight requests
#   ALEXNET_HEALTH_WATCH      on | off: once Triton is ready, health.py checks every few seconds that every
#                             model answers and stops Triton when one does not (a dead Python-backend stub),
#                             so that Docker's restart policy or Kubernetes starts the container again
#   ALEXNET_DRY_RUN=1         print the tritonserver command instead of running it (NUL-separated)
#
# The image's ENTRYPOINT runs this under tini, so tritonserver is not PID 1: a PID 1 ignores every signal it
# has no handler for, SIGKILL from inside the container included, and the health watcher's SIGKILL would
# do nothing. No secret is passed on tritonserver's command line: the admin APIs are closed to everyone
# (triton_repository/server_flags.py), and nothing in this image needs them.
set -euo pipefail

MODEL_REPOSITORY="${ALEXNET_MODEL_REPOSITORY:-/opt/alexnet/model_repository}"
MODEL_NAME="${ALEXNET_MODEL_NAME:-alexnet}"
TRT_PLAN="${ALEXNET_TRT_PLAN:-off}"
TRT_PRECISION="${ALEXNET_TRT_PRECISION:-fp16}"
CACHE_DIR="${ALEXNET_CACHE_DIR:-/var/cache/alexnet}"
HTTP_PORT="${ALEXNET_HTTP_PORT:-8000}"
GRPC_PORT="${ALEXNET_GRPC_PORT:-8001}"
METRICS_PORT="${ALEXNET_METRICS_PORT:-8002}"
EXIT_TIMEOUT_SECS="${ALEXNET_EXIT_TIMEOUT_SECS:-30}"
HEALTH_WATCH="${ALEXNET_HEALTH_WATCH:-on}"
BIN_DIR="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
PLAN_TOOL="${BIN_DIR}/trt_plan.py"
# The triton_repository package: beside this script in the image, at the top of the source tree otherwise.
PACKAGE_ROOT="${BIN_DIR}"
[[ -d "${PACKAGE_ROOT}/triton_repository" ]] || PACKAGE_ROOT="$(dirname "$(dirname "${BIN_DIR}")")"
# The same check `alexnet serve` and the Kubernetes probes run; beside this script in the image.
HEALTH_TOOL="${BIN_DIR}/health.py"
[[ -f "${HEALTH_TOOL}" ]] || HEALTH_TOOL="${BIN_DIR}/../health.py"  # the source tree: serving/health.py

fail() {
    echo "error: $*" >&2
    exit 2
}

python_with_package() {
    PYTHONPATH="${PACKAGE_ROOT}${PYTHONPATH:+:${PYTHONPATH}}" python3 "$@"
}

check_repository() {
    python_with_package "${PLAN_TOOL}" check --repository "${MODEL_REPOSITORY}"
}

build_plan() {
    python_with_package "${PLAN_TOOL}" build --repository "${MODEL_REPOSITORY}" --model "${MODEL_NAME}" \
        --cache "${CACHE_DIR}" --precision "${TRT_PRECISION}"
}

serve() {
    local repositories=("--repository=${MODEL_REPOSITORY}")
    local plan_repository flags
    check_repository
    case "${HEALTH_WATCH}" in
        on | off) ;;
        *) fail "ALEXNET_HEALTH_WATCH must be on or off, not '${HEALTH_WATCH}'" ;;
    esac
    case "${TRT_PLAN}" in
        off) ;;
        build)
            plan_repository="$(build_plan)"
            repositories+=("--repository=${plan_repository}")
            ;;
        *) fail "ALEXNET_TRT_PLAN must be off or build, not '${TRT_PLAN}'" ;;
    esac
    # NUL-separated: one flag's value holds a line break (the closed APIs' header).
    mapfile -d '' -t flags < <(python_with_package -m triton_repository.server_flags --image \
        "${repositories[@]}" --http-port="${HTTP_PORT}" --grpc-port="${GRPC_PORT}" \
        --metrics-port="${METRICS_PORT}" --exit-timeout-secs="${EXIT_TIMEOUT_SECS}")
    ((${#flags[@]} > 0)) || fail "could not build the tritonserver command (see the error above)"
    local command=(tritonserver "${flags[@]}" "$@")
    if [[ "${ALEXNET_DRY_RUN:-0}" == "1" ]]; then
        printf '%s\0' "${command[@]}"
        return 0
    fi
    if [[ "${HEALTH_WATCH}" == "on" ]]; then
        # $$ is this shell, which exec turns into tritonserver: the watcher stops that process.
        python3 "${HEALTH_TOOL}" watch --url "127.0.0.1:${HTTP_PORT}" --pid "$$" \
            --grace "${EXIT_TIMEOUT_SECS}" &
    fi
    echo "alexnet: starting Triton on ${MODEL_REPOSITORY} (HTTP ${HTTP_PORT}, gRPC ${GRPC_PORT}, metrics ${METRICS_PORT})" >&2
    exec "${command[@]}"
}

case "${1:-}" in
    build-plan)
        check_repository
        build_plan
        ;;
    check) check_repository ;;
    "" | -*) serve "$@" ;;
    *) exec "$@" ;;
esac
