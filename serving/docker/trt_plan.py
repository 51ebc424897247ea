#!/usr/bin/env python3
"""Check the image's model repository, and build the TensorRT plan at first start, cached on a volume.

Runs inside the production image, called by entrypoint.sh; the standard library only, and Python 3.10
(the interpreter of NVIDIA's Triton 24.10 container):

    trt_plan.py check --repository /opt/alexnet/model_repository
    trt_plan.py build --repository /opt/alexnet/model_repository --model alexnet --cache /var/cache/alexnet
        (prints the extra model repository that holds `alexnet_trt`: give it to tritonserver)

A TensorRT plan only runs on the TensorRT version and the GPU family that built it, so this image never
serves a plan built elsewhere: it builds one from the repository's ONNX model, in this container, on the
GPU it serves with. The cache key names the container release, TensorRT's version, the GPU and its compute
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

CONFIG_FILE = "config.pbtxt"
PLAN_FILE = "model.plan"
PLAN_SUFFIX = "_trt"  # the plan model is served as `<name>_trt` beside `<name>` (DESIGN.md's contracts)
PLAN_VERSION = "1"
ONNX_PLATFORM, ONNX_BACKEND = "onnxruntime_onnx", "onnxruntime"
PLAN_PLATFORM, PLAN_BACKEND = "tensorrt_plan", "tensorrt"
TRTEXEC_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec",)  # where NVIDIA's containers keep it
# Top-level config fields that belong to the ONNX Runtime model, not to the plan: its name, how it runs and
# ONNX Runtime's TensorRT accelerator. Everything else (inputs, outputs, labels, batching, instances,
# warmup, parameters) is copied unchanged, so `<name>_trt` answers exactly like `<name>`, and the result is
# the config `alexnet export tensorrt` writes for its plan (tests/test_production.py compares the two).
ONNX_ONLY_FIELDS = ("name", "platform", "backend", "default_model_filename", "optimization")
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 75, 76


class PlanError(Exception):
    """A problem the operator can fix; the message says how. main() prints it and exits with status 2."""


def log(message: str) -> None:
    print(f"alexnet: {message}", file=sys.stderr, flush=True)


# ---- Triton's config.pbtxt (protobuf text format): just enough to read and edit it without tritonclient ----

_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)"""
    r"""|(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"""|(?P<punct>[{}\[\]:,;<>])"""
    r"""|(?P<word>[^\s{}\[\]:,;<>"'\#]+)"""
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Field:
    """One field of a text-format message; `value` is a scalar string or the fields of a sub-message.

    `start`/`end` span the whole construct in the source text, so a field can be cut out verbatim.
    """

    name: str
    value: str | list[Field]
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PlanError(f"unreadable character {text[position]!r} at offset {position}")
        if match.lastgroup != "skip":
            tokens.append(Token(match.lastgroup, match.group(), match.start(), match.end()))
        position = match.end()
    return tokens


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), literal[1:-1])


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> Token:
        token = self.peek()
        if token is None or (expected is not None and token.text != expected):
            found = "the end of the file" if token is None else repr(token.text)
            raise PlanError(f"expected {expected or 'a field'}, found {found}")
        self.index += 1
        return token

    def message(self, closing: str | None) -> list[Field]:
        fields: list[Field] = []
        while (token := self.peek()) is not None and token.text != closing:
            fields.extend(self.field())
            if (separator := self.peek()) is not None and separator.text in (",", ";"):
                self.index += 1
        if closing is not None:
            self.take(closing)
        return fields

    def field(self) -> list[Field]:
        name = self.take()
        if name.kind != "word":
            raise PlanError(f"expected a field name, found {name.text!r}")
        if (colon := self.peek()) is not None and colon.text == ":":
            self.index += 1
        if (bracket := self.peek()) is not None and bracket.text == "[":  # repeated field: name [a, b, ...]
            self.index += 1
            values = []
            while (token := self.peek()) is not None and token.text != "]":
                values.append(self.value())
                if (comma := self.peek()) is not None and comma.text == ",":
                    self.index += 1
            end = self.take("]").end
            return [Field(name.text, value, name.start, end) for value in values]
        value = self.value()
        return [Field(name.text, value, name.start, self.tokens[self.index - 1].end)]

    def value(self) -> str | list[Field]:
        token = self.take()
        if token.text in ("{", "<"):
            return self.message("}" if token.text == "{" else ">")
        if token.kind == "string":  # adjacent string literals concatenate, as in C
            parts = [_unquote(token.text)]
            while (more := self.peek()) is not None and more.kind == "string":
                parts.append(_unquote(self.take().text))
            return "".join(parts)
        if token.kind != "word":
            raise PlanError(f"expected a value, found {token.text!r}")
        return token.text


def parse_config(text: str, source: str = CONFIG_FILE) -> list[Field]:
    """The top-level fields of a config.pbtxt; PlanError naming the file when it is not valid text format."""
    try:
        return _Parser(text).message(closing=None)
    except PlanError as error:
        raise PlanError(f"{source} is not a valid Triton model config ({error})") from None


def every(fields: list[Field], name: str) -> list[Field]:
    return [field for field in fields if field.name == name]


def scalar(fields: list[Field], name: str, default: str = "") -> str:
    found = every(fields, name)
    if not found:
        return default
    if not isinstance(found[-1].value, str):
        raise PlanError(f"{name} should be a single value")
    return found[-1].value


def without_fields(text: str, names: tuple[str, ...]) -> str:
    """`text` with the named top-level fields cut out, every other byte kept as it was."""
    spans = sorted(
        {(field.start, field.end) for field in parse_config(text) if field.name in names}, reverse=True
    )
    for start, end in spans:
        tail = re.match(r"[ \t]*[,;]?[ \t]*\n?", text[end:])
        text = text[:start] + text[end + (tail.end() if tail else 0) :]
    return text


def plan_config(onnx_config: str, plan_name: str, precision: str = "fp16", origin: str = "") -> str:
    """The plan model's config: the ONNX model's, with its own name, the tensorrt_plan platform and the
    plan's precision among its parameters (the ONNX model's explanatory comments are dropped)."""
    kept = re.sub(r"^[ \t]*#[^\n]*\n?", "", without_fields(onnx_config, ONNX_ONLY_FIELDS), flags=re.M)
    header = f"# Written by the production image's entry point: {origin}\n" if origin else ""
    return (
        f'{header}name: "{plan_name}"\nplatform: "{PLAN_PLATFORM}"\nbackend: "{PLAN_BACKEND}"\n'
        f"{kept.strip()}\n"
        f'parameters {{ key: "precision" value {{ string_value: "{precision.upper()}" }} }}\n'
    )


# ---- the repository ----


def _version_dirs(model_dir: Path) -> list[Path]:
    return sorted(
        (d for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    )


def check_repository(repository: Path) -> list[str]:
    """The names of the models in `repository`; PlanError when it cannot be served as this image serves it."""
    if not repository.is_dir():
        raise PlanError(
            f"no model repository at {repository}: export one with `alexnet export onnx --model DIR "
            "--repository model_repository` before `docker build`, or mount one at that path"
        )
    model_dirs = sorted(d for d in repository.iterdir() if (d / CONFIG_FILE).is_file())
    if not model_dirs:
        raise PlanError(
            f"{repository} holds no model (no <model>/{CONFIG_FILE}): export one with `alexnet export onnx`"
        )
    for model_dir in model_dirs:
        fields = parse_config((model_dir / CONFIG_FILE).read_text(), str(model_dir / CONFIG_FILE))
        name = scalar(fields, "name", model_dir.name)
        if name != model_dir.name:
            raise PlanError(
                f"{model_dir / CONFIG_FILE} names the model {name!r}, but its folder is {model_dir.name!r}"
            )
        plans = sorted(model_dir.rglob("*.plan"))
        if plans or scalar(fields, "platform") == PLAN_PLATFORM or scalar(fields, "backend") == "tensorrt":
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
    config_text: str
    onnx_file: Path
    input_name: str
    input_dims: tuple[int, ...]  # without the batch axis
    max_batch_size: int

    def shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.input_dims)


def read_onnx_model(repository: Path, name: str) -> OnnxModel:
    config_path = repository / name / CONFIG_FILE
    if not config_path.is_file():
        raise PlanError(
            f"no model {name!r} in {repository}: set ALEXNET_MODEL_NAME to the name given to "
            "`alexnet export onnx --name`"
        )
    text = config_path.read_text()
    fields = parse_config(text, str(config_path))
    if scalar(fields, "platform") != ONNX_PLATFORM and scalar(fields, "backend") != ONNX_BACKEND:
        raise PlanError(f"{config_path} is not an ONNX Runtime model: the plan is built from the ONNX model")
    max_batch_size = int(scalar(fields, "max_batch_size", "0"))
    if max_batch_size < 1:
        raise PlanError(f"{config_path} has no max_batch_size: the plan's batch profile is 1..max_batch_size")
    inputs = every(fields, "input")
    if len(inputs) != 1 or not isinstance(inputs[0].value, list):
        raise PlanError(f"{config_path} should have exactly one input (the pixels), it has {len(inputs)}")
    input_name = scalar(inputs[0].value, "name")
    dims = tuple(int(field.value) for field in every(inputs[0].value, "dims") if isinstance(field.value, str))
    if not input_name or not dims or min(dims) < 1:
        raise PlanError(
            f"{config_path}: the input needs a name and fixed dims, found {input_name!r} {list(dims)}"
        )
    model_file = scalar(fields, "default_model_filename", "model.onnx")
    versions = [v for v in _version_dirs(repository / name) if (v / model_file).is_file()]
    if not versions:
        raise PlanError(f"no {name}/<version>/{model_file} in {repository}: re-run `alexnet export onnx`")
    return OnnxModel(name, text, versions[-1] / model_file, input_name, dims, max_batch_size)


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


def trtexec_command(trtexec: str, model: OnnxModel, plan: Path, fp16: bool) -> list[str]:
    """One optimization profile over the batch axis: 1 to max_batch_size, tuned for the full batch that
    dynamic batching forms under load."""

    def shape(batch: int) -> str:
        return f"{model.input_name}:" + "x".join(str(d) for d in model.shape(batch))

    command = [
        trtexec,
        f"--onnx={model.onnx_file}",
        f"--saveEngine={plan}",
        f"--minShapes={shape(1)}",
        f"--optShapes={shape(model.max_batch_size)}",
        f"--maxShapes={shape(model.max_batch_size)}",
        "--skipInference",  # build and save only; Triton warms the model up when it loads it
    ]
    # FP32 means FP32: trtexec, like TensorRT's builder, would otherwise allow TF32 (a 10-bit mantissa).
    return [*command, "--fp16" if fp16 else "--noTF32"]


def trtexec_builder(trtexec: str) -> Builder:
    def build(model: OnnxModel, plan: Path, fp16: bool) -> None:
        command = trtexec_command(trtexec, model, plan, fp16)
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
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit_batch = int(trt.__version__.split(".")[0]) < 10  # TensorRT 10 networks are always explicit-batch
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if explicit_batch else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model.onnx_file)):
        problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanError(f"TensorRT cannot parse {model.onnx_file}: {problems}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    full = model.shape(model.max_batch_size)
    profile.set_shape(model.input_name, model.shape(1), full, full)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PlanError(f"TensorRT could not build a plan from {model.onnx_file} (its log is above)")
    plan.write_bytes(bytes(serialized))


def choose_builder() -> tuple[str, Builder]:
    trtexec = find_trtexec()
    if trtexec:
        return trtexec, trtexec_builder(trtexec)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(model: OnnxModel, gpu: Gpu, trt_version: str, precision: str) -> str:
    """A folder name that changes whenever the plan would: model files, config, GPU, TensorRT, precision."""
    digest = hashlib.sha256()
    for path in sorted(model.onnx_file.parent.iterdir()):  # the graph and any external weights beside it
        if path.is_file():
            digest.update(f"{path.name}={_sha256(path)}\n".encode())
    release = os.environ.get("NVIDIA_TRITON_SERVER_VERSION", "")
    digest.update(f"{model.config_text}\n{gpu}\n{trt_version}\n{precision}\n{release}".encode())
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
    plan_name = model_name + PLAN_SUFFIX
    target = cache_dir / "trt" / cache_key(model, gpu, trt_version, precision)
    plan = target / plan_name / PLAN_VERSION / PLAN_FILE
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
            builder(model, version_dir / PLAN_FILE, precision == "fp16")
            if not (version_dir / PLAN_FILE).is_file() or (version_dir / PLAN_FILE).stat().st_size == 0:
                raise PlanError("the TensorRT build wrote no plan (its log is above)")
            origin = (
                f"the TensorRT plan of {model.onnx_file.relative_to(repository)}, built for {gpu.name} "
                f"(compute {gpu.compute_capability}) with TensorRT {trt_version}; it runs only there"
            )
            config = plan_config(model.config_text, plan_name, precision, origin)
            (staging / plan_name / CONFIG_FILE).write_text(config)
            for extra in model.onnx_file.parent.parent.iterdir():  # labels.txt, which label_filename names
                if extra.is_file() and extra.name != CONFIG_FILE:
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
        builder_name, builder = choose_builder()
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
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
