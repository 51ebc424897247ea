# syntax=docker/dockerfile:1
# The production serving image: NVIDIA's Triton Inference Server container serving the model repository
# that `alexnet export onnx` wrote, with Triton's own onnxruntime backend (TensorRT accelerator), the same
# Python-backend preprocessing model and ensemble that `alexnet serve` runs, and optionally a TensorRT plan
# built at first start in this container, on the serving GPU, and cached on a volume.
#
#   alexnet export onnx --model runs/imagenet --repository model_repository
#   docker build -t alexnet-triton:0.1.0 .
#   docker run --gpus all --shm-size=1g --read-only --tmpfs /tmp -p 127.0.0.1:8000:8000 \
#       -p 127.0.0.1:8001:8001 -p 127.0.0.1:8002:8002 alexnet-triton:0.1.0
#
# docs/production.md has the whole procedure, the TensorRT plan and Kubernetes.

# 26.03 is Triton 2.67.0. Releases before 25.07 carry published advisories (CVE-2025-23310/23311: chunked
# HTTP requests overflow the stack; CVE-2025-23319/23320/23334: the Python backend's shared memory); 26.03
# also fixes ensemble requests that could hang when a step's max_queue_size was exceeded (this image's
# overload answer, triton_repository/configs.py) and bounds HTTP bodies (--http-max-input-size, 64 MiB by
# default). It is Ubuntu 24.04 with Python 3.12 (requirements.txt pins cp312 wheels), CUDA 13 and a TensorRT
# 10 (the plan is built here, by this TensorRT: serving/docker/trt_plan.py), for GPUs of compute capability
# 7.5 and later. The local server (`alexnet serve`) and the tests run Triton 2.51, the one the
# nvidia-pytriton wheel ships: the same configs and flags, a different release (docs/production.md).
ARG TRITON_RELEASE=26.03
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3

# The Triton image's own unprivileged user (triton-server, created by NVIDIA's build with uid/gid 1000).
ARG SERVER_UID=1000

ENV ALEXNET_MODEL_REPOSITORY=/opt/alexnet/model_repository \
    ALEXNET_MODEL_NAME=alexnet \
    ALEXNET_TRT_PLAN=off \
    ALEXNET_TRT_PRECISION=fp16 \
    ALEXNET_CACHE_DIR=/var/cache/alexnet \
    ALEXNET_HTTP_PORT=8000 \
    ALEXNET_GRPC_PORT=8001 \
    ALEXNET_METRICS_PORT=8002 \
    ALEXNET_EXIT_TIMEOUT_SECS=30 \
    ALEXNET_HEALTH_WATCH=on \
    PYTHONDONTWRITEBYTECODE=1

# tini as PID 1: it forwards signals to the server and reaps orphans. Without it tritonserver would be PID 1,
# which ignores every signal it has no handler for, even the health watcher's SIGKILL. (Not version-pinned:
# the base image's Ubuntu release fixes which tini this is.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# numpy and Pillow for the preprocessing model, tritonclient's protobuf classes for the plan tool, hash-pinned
# (the container's Python is 3.12, whose pip refuses to touch the system's packages unless told).
COPY serving/docker/requirements.txt /opt/alexnet/requirements.txt
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --require-hashes --only-binary=:all: \
    -r /opt/alexnet/requirements.txt

COPY --chmod=0755 serving/docker/entrypoint.sh serving/docker/trt_plan.py serving/health.py /opt/alexnet/bin/
# The package that owns the model repository's layout and configs (the plan tool reads the repository with it)
# and the tritonserver flags `alexnet serve` uses too, and the torch-free common package it and the plan tool
# use (the error type, file hashes); beside the scripts, so they import them.
COPY triton_repository/ /opt/alexnet/bin/triton_repository/
COPY common/ /opt/alexnet/bin/common/

# The repository generated beforehand into model_repository/ (the path `make clean` removes), baked in,
# owned by root and read-only to the server: the image is the deployable unit, and it serves what was
# tested. Mounting another repository over this path works too (docs/production.md).
COPY model_repository/ /opt/alexnet/model_repository/

# Fail the build, not the rollout, on a repository this image cannot serve (empty, or holding a plan built
# elsewhere); then the plan cache, writable by the server user (a named volume mounted here inherits it).
RUN python3 /opt/alexnet/bin/trt_plan.py check --repository /opt/alexnet/model_repository \
    && mkdir -p /var/cache/alexnet \
    && chown "${SERVER_UID}:${SERVER_UID}" /var/cache/alexnet

USER ${SERVER_UID}:${SERVER_UID}
WORKDIR /opt/alexnet

# HTTP/REST, gRPC, Prometheus metrics: Triton's defaults.
EXPOSE 8000 8001 8002

# Healthy means every loaded model answers a small request (serving/health.py), not only that Triton calls
# them ready: a model whose Python-backend stub died stays "ready". The entry point's watcher restarts
# such a server; this marks it meanwhile. The start period covers a first start that builds TensorRT engines.
HEALTHCHECK --interval=15s --timeout=10s --start-period=20m --retries=3 \
    CMD ["python3", "/opt/alexnet/bin/health.py", "check"]

# tini, then NVIDIA's entry point (driver and CUDA compatibility checks), then ours; it execs tritonserver,
# and tini passes SIGTERM on (-g: to the health watcher too), so Triton finishes in-flight requests before
# exiting. (Setting ENTRYPOINT clears the base image's CMD: arguments to `docker run` go to tritonserver.)
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/nvidia/nvidia_entrypoint.sh", "/opt/alexnet/bin/entrypoint.sh"]
