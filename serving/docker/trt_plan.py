#!/usr/bin/env python3
"""Check the image's model repository, and build the TensorRT plan at first start, cached on a volume.

Runs inside the production image, called by entrypoint.sh, on Python 3.10 (the interpreter of NVIDIA's
Triton 24.10 container). It reads the repository as `alexnet export` wrote it, with the triton_repository
package (copied beside this script) and tritonclient's protobuf classes (serving/docker/requirements.txt):

    trt_plan.py check --repository /opt/alexnet/model_repository
    trt_plan.py build --repository /opt/alexnet/model_repository --model alexnet --cache /var/cache/alexnet
        (prints the extra model repository that holds `alexnet_trt`: give it to tritonserver)

A TensorRT plan only runs on the TensorRT version and the GPU family that built it, so this image never
serves a plan built elsewhere: it builds one from the repository's ONNX model, in this container, on the
GPU it serves with, with the builder `alexnet export tensorrt` uses too (triton_repository/tensorrt_engine.py:
trtexec where the image has it, else TensorRT's Python API, with the same profile, workspace and precision
settings). The cache key names the container release, TensorRT's version, the GPU and its compute
capability, the precision and a hash of the ONNX files and config, so a volume shared by replicas on
different GPUs or by two image versions never hands out a plan that cannot run. Builds are serialized with
a file lock (replicas sharing a volume build once) and published by an atomic rename (a crash mid-build
leaves no half-written plan behind).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from common.errors import UserError
from common.hashing import sha256_of
from triton_repository import configs, layout, tensorrt_engine
from triton_repository.tensorrt_engine import EngineSpec

PLAN_VERSION = "1"
TRTEXEC_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec",)  # where NVIDIA's containers keep it
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 75, 76


class PlanError(UserError):
    """A problem the operator can fix; the message says how. main() prints it, like every UserError (a
    repository's RepositoryError, a build's EngineBuildError), and exits with status 2."""


def log(message: str) -> None:
    print(f"alexnet: {message}", file=sys.stderr, flush=True)


# ---- the repository, read with triton_repository (tritonclient's protobuf classes, as export wrote it) ----


def check_repository(repository: Path) -> list[str]:
    """The names of the models in `repository`; PlanError when it cannot be served as this image serves it."""
    if not repository.is_dir():
        raise PlanError(
            f"no model repository at {repository}: export one with `alexnet export onnx --model DIR "
            "--repository model_repository` before `docker build`, or mount one at that path"
        )
    model_dirs = layout.model_dirs(repository)
    if not model_dirs:
        raise PlanError(
            f"{repository} holds no model (no <model>/{layout.CONFIG_FILE}): "
            "export one with `alexnet export onnx`"
        )
    for model_dir in model_dirs:
        config = configs.read_config(model_dir)
        if config.name != model_dir.name:
            raise PlanError(
                f"{model_dir / layout.CONFIG_FILE} names the model {config.name!r}, but its folder is "
                f"{model_dir.name!r}"
            )
        if sorted(model_dir.rglob("*.plan")) or configs.engine_backend(config) == configs.PLAN_BACKEND:
            raise PlanError(
                f"{model_dir.name} is a TensorRT plan, and a plan only runs on the TensorRT version and "
                f"GPU family that built it: remove {model_dir} from the repository; this image builds its "
                "own plan from the ONNX model at start (ALEXNET_TRT_PLAN=build), in this container, "
                "on this GPU"
            )
    return [d.name for d in model_dirs]


@dataclass(frozen=True)
class OnnxModel:
    """What the plan is built from: the ONNX model's newest version and the shapes its config allows."""

    name: str
    config: mc.ModelConfig
    onnx_file: Path
    input_name: str
    input_dims: tuple[int, ...]  # without the batch axis
    max_batch_size: int

    def shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.input_dims)


def read_onnx_model(repository: Path, name: str) -> OnnxModel:
    model_dir = repository / name
    config_path = model_dir / layout.CONFIG_FILE
    if not config_path.is_file():
        raise PlanError(
            f"no model {name!r} in {repository}: set ALEXNET_MODEL_NAME to the name given to "
            "`alexnet export onnx --name`"
        )
    config = configs.read_config(model_dir)
    if configs.engine_backend(config) != configs.ONNX_BACKEND:
        raise PlanError(f"{config_path} is not an ONNX Runtime model: the plan is built from the ONNX model")
    if config.max_batch_size < 1:
        raise PlanError(f"{config_path} has no max_batch_size: the plan's batch profile is 1..max_batch_size")
    if len(config.input) != 1:
        raise PlanError(
            f"{config_path} should have exactly one input (the pixels), it has {len(config.input)}"
        )
    (pixels,) = config.input
    dims = tuple(pixels.dims)
    if not pixels.name or not dims or min(dims) < 1:
        raise PlanError(
            f"{config_path}: the input needs a name and fixed dims, found {pixels.name!r} {list(dims)}"
        )
    model_file = config.default_model_filename or layout.ONNX_FILE
    onnx_file = layout.newest_file(model_dir, model_file)
    if onnx_file is None:
        raise PlanError(f"no {name}/<version>/{model_file} in {repository}: re-run `alexnet export onnx`")
    return OnnxModel(name, config, onnx_file, pixels.name, dims, config.max_batch_size)


# ---- what the plan depends on: this GPU and this TensorRT ----


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "8.9"


def detect_gpu() -> Gpu:
    """The first visible GPU, asked of the CUDA driver directly (no CUDA toolkit or nvidia-smi needed)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise PlanError(
            "no NVIDIA driver in this container (libcuda.so.1 is missing), so no TensorRT plan can be built: "
            "run it with `docker run --gpus all`, or request nvidia.com/gpu in Kubernetes, or set "
            "ALEXNET_TRT_PLAN=off to serve the ONNX model only"
        ) from None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        raise PlanError(
            "the NVIDIA driver sees no usable GPU: check `nvidia-smi` in the container, "
            "or set ALEXNET_TRT_PLAN=off"
        )
    cuda.cuDeviceGetName(name, len(name), device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
    return Gpu(name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}")


def tensorrt_version() -> str:
    """TensorRT's version as its runtime library reports it (e.g. 100500 for 10.5.0)."""
    for library in ("libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so"):
        try:
            return str(ctypes.CDLL(library).getInferLibVersion())
        except (OSError, AttributeError):
            continue
    try:
        import tensorrt  # only where the image has TensorRT's Python bindings

        return str(tensorrt.__version__)
    except ImportError:
        raise PlanError("TensorRT is not in this image (no libnvinfer): set ALEXNET_TRT_PLAN=off") from None


# ---- building ----

Builder = Callable[[OnnxModel, Path, bool], None]


def find_trtexec() -> str | None:
    candidates = (os.environ.get("ALEXNET_TRTEXEC"), shutil.which("trtexec"), *TRTEXEC_LOCATIONS)
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def engine_spec(model: OnnxModel, fp16: bool) -> EngineSpec:
    return EngineSpec(model.onnx_file, model.input_name, model.input_dims, model.max_batch_size, fp16)


def trtexec_builder(trtexec: str, tensorrt_major: int = 10) -> Builder:
    """trtexec with the settings of the Python API build (triton_repository/tensorrt_engine.py)."""

    def build(model: OnnxModel, plan: Path, fp16: bool) -> None:
        command = tensorrt_engine.trtexec_command(
            trtexec, engine_spec(model, fp16), plan, tensorrt_major=tensorrt_major
        )
        log("running " + " ".join(command))
        result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, check=False)
        if result.returncode != 0:
            raise PlanError(
                f"trtexec failed with status {result.returncode} (its log is above): the ONNX model "
                "may use an operator this TensorRT lacks; set ALEXNET_TRT_PLAN=off to serve ONNX only"
            )

    return build


def python_builder(model: OnnxModel, plan: Path, fp16: bool) -> None:
    """The same build through TensorRT's Python API, for images that have the bindings but no trtexec."""
    plan.write_bytes(tensorrt_engine.build_engine(engine_spec(model, fp16)))  # EngineBuildError: main()


def choose_builder(tensorrt_major: int = 10) -> tuple[str, Builder]:
    trtexec = find_trtexec()
    if trtexec:
        return trtexec, trtexec_builder(trtexec, tensorrt_major)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise PlanError(
            "no TensorRT builder in this image: neither trtexec (looked on PATH and in "
            f"{', '.join(TRTEXEC_LOCATIONS)}; set ALEXNET_TRTEXEC to its path) "
            "nor TensorRT's Python bindings; "
            "set ALEXNET_TRT_PLAN=off to serve the ONNX model only"
        ) from None
    return "TensorRT's Python API", python_builder


# ---- the cache ----


def cache_key(model: OnnxModel, gpu: Gpu, trt_version: str, precision: str) -> str:
    """A folder name that changes whenever the plan would: model files, config, GPU, TensorRT, precision."""
    digest = hashlib.sha256()
    for path in sorted(model.onnx_file.parent.iterdir()):  # the graph and any external weights beside it
        if path.is_file():
            digest.update(f"{path.name}={sha256_of(path)}\n".encode())
    release = os.environ.get("NVIDIA_TRITON_SERVER_VERSION", "")
    digest.update(model.config.SerializeToString(deterministic=True))
    digest.update(f"\n{gpu}\n{trt_version}\n{precision}\n{release}".encode())
    gpu_slug = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-") or "gpu"
    compute = gpu.compute_capability.replace(".", "")
    return f"{gpu_slug}-sm{compute}-trt{trt_version}-{precision}-{digest.hexdigest()[:16]}"


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_plan_repository(
    repository: Path,
    model_name: str,
    cache_dir: Path,
    *,
    gpu: Gpu,
    trt_version: str,
    precision: str,
    builder: Builder,
    builder_name: str = "",
) -> Path:
    """A model repository in the cache holding `<model_name>_trt`, built now unless already cached."""
    model = read_onnx_model(repository, model_name)
    plan_name = layout.ModelNames(model_name).trt  # served beside the ONNX model (docs/architecture.md)
    target = cache_dir / "trt" / cache_key(model, gpu, trt_version, precision)
    plan = target / plan_name / PLAN_VERSION / layout.PLAN_FILE
    if plan.is_file():
        log(f"using the cached TensorRT plan {plan}")
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PlanError(
            f"cannot write the plan cache {cache_dir} ({error}): mount a volume writable by "
            f"uid {os.getuid()} there"
        ) from None
    with exclusive_lock(target.parent / f"{target.name}.lock"):
        if plan.is_file():  # another replica sharing the volume built it while this one waited
            log(f"using the TensorRT plan another replica built: {plan}")
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            version_dir = staging / plan_name / PLAN_VERSION
            version_dir.mkdir(parents=True)
            log(
                f"building the TensorRT plan {plan_name} ({precision}, batch 1..{model.max_batch_size}) for "
                f"{gpu.name} (compute {gpu.compute_capability}) with {builder_name or 'TensorRT'}; "
                "only the first start on this GPU and image pays for it"
            )
            started = time.monotonic()
            builder(model, version_dir / layout.PLAN_FILE, precision == "fp16")
            built = version_dir / layout.PLAN_FILE
            if not built.is_file() or built.stat().st_size == 0:
                raise PlanError("the TensorRT build wrote no plan (its log is above)")
            origin = (
                f"the TensorRT plan of {model.onnx_file.relative_to(repository)}, built for {gpu.name} "
                f"(compute {gpu.compute_capability}) with TensorRT {trt_version}; it runs only there"
            )
            config = configs.plan_config(model.config, plan_name, fp16=precision == "fp16")
            comment = f"Written by the production image's entry point: {origin}"
            (staging / plan_name / layout.CONFIG_FILE).write_text(configs.config_text(config, comment))
            for extra in model.onnx_file.parent.parent.iterdir():  # labels.txt, which label_filename names
                if extra.is_file() and extra.name != layout.CONFIG_FILE:
                    shutil.copy2(extra, staging / plan_name / extra.name)
            if target.exists():  # a leftover without its plan: never published complete, so safe to replace
                shutil.rmtree(target)
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the plan from replicas running as another uid
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log(f"built {plan} in {time.monotonic() - started:.0f} s")
    return target


# ---- command line ----


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="refuse a repository this image cannot serve")
    check.add_argument("--repository", type=Path, required=True)
    build = commands.add_parser(
        "build", help="build (or find cached) the TensorRT plan; print its repository"
    )
    build.add_argument("--repository", type=Path, required=True)
    build.add_argument("--model", default="alexnet", help="the ONNX model to build from (default: alexnet)")
    build.add_argument("--cache", type=Path, required=True, help="the plan cache (a volume)")
    build.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        models = check_repository(args.repository)
        if args.command == "check":
            log(f"{args.repository} holds {len(models)} models: {', '.join(models)}")
            return 0
        gpu, trt_version = detect_gpu(), tensorrt_version()
        builder_name, builder = choose_builder(tensorrt_engine.tensorrt_major(trt_version))
        target = build_plan_repository(
            args.repository,
            args.model,
            args.cache,
            gpu=gpu,
            trt_version=trt_version,
            precision=args.precision,
            builder=builder,
            builder_name=builder_name,
        )
    except tensorrt_engine.EngineBuildError as error:
        print(f"error: {error}; set ALEXNET_TRT_PLAN=off to serve the ONNX model only", file=sys.stderr)
        return 2
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
