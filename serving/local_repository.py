"""The scratch copy of the model repository the local server runs (docs/architecture.md, "What the local
server changes, and why"): ONNX and plan models become Python-backend models running the same ONNX file
with ONNX Runtime, GPU instances become CPU ones without a GPU, `<name>_int8` only with --int8; model
files are symlinked, configs rewritten, each file replaced whole."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from common.hashing import sha256_of
from common.machine import gpu_available, usable_cpu_count
from common.onnx_session import ProviderUse, tensorrt_available
from serving.errors import ServingError
from triton_repository.configs import (
    ONNX_BACKEND,
    PLAN_BACKEND,
    RepositoryError,
    engine_backend,
    io_signature,
    read_config,
    wants_fp16,
    write_config,
)
from triton_repository.layout import (
    CONFIG_FILE,
    MODEL_SOURCE_FILE,
    ONNX_FILE,
    ONNX_SUBSTITUTE,
    ModelNames,
    base_model,
    model_dirs,
    newest_file,
    version_dirs,
)

SUBSTITUTED_BACKENDS = (ONNX_BACKEND, PLAN_BACKEND)  # backends the wheel's server does not ship


# Beside each substitute's model.py: which ONNX file, provider, threads, and where each instance records
# the provider asked for and the one read back from its session: outside the polled repository, since
# Triton reloads a model whose folder changes. (The substitute runs standalone in Triton and spells
# these names itself.)
SETTINGS_FILE = "substitute.json"


PROVIDERS_DIR = "providers"


@dataclass(frozen=True)
class SubstituteSettings:
    """How the generated Python-backend models run ONNX Runtime on this machine."""

    gpu: bool
    tensorrt: bool
    cores: int
    allow_spinning: bool = False  # spinning threads would steal the cores the gRPC/HTTP threads need

    @classmethod
    def for_this_machine(cls) -> SubstituteSettings:
        gpu = gpu_available()
        return cls(gpu=gpu, tensorrt=gpu and tensorrt_available(), cores=usable_cpu_count())


def link_tree(source: Path, destination: Path) -> None:
    """Mirror a model folder with symlinks (model files can be hundreds of MB); configs are rewritten."""
    shutil.copytree(source, destination, symlinks=False, copy_function=os.symlink)


def tensorrt_cache_dir(onnx_file: Path, fp16: bool) -> Path:
    """Where ONNX Runtime keeps the TensorRT engines it builds (tens of seconds each) across restarts: named
    by the bytes of the ONNX file (and its external weights) and the precision, never by model name or
    version, so a retrained model exported again as version 1, or `<name>_trt` running `<name>`'s file,
    can never be handed an engine built from other weights. (ONNX Runtime's own engine names hash the
    graph's structure, not its weights.)"""
    digest = hashlib.sha256()
    for part in (onnx_file, onnx_file.with_name(onnx_file.name + ".data")):
        if part.is_file():
            digest.update(sha256_of(part).encode())
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "alexnet" / "tensorrt" / f"{digest.hexdigest()[:24]}-{'fp16' if fp16 else 'fp32'}"


def _replace_file(path: Path, text: str) -> None:
    """Write a generated file in the scratch copy. The copy's files are symlinks into the source repository:
    unlink first, so that nothing is ever written through one into the source."""
    path.unlink(missing_ok=True)
    path.write_text(text)


def _replace_with_copy(source: Path, path: Path) -> None:
    path.unlink(missing_ok=True)
    shutil.copyfile(source, path)


def _substitute(
    model_dir: Path,
    config: model_config_pb2.ModelConfig,
    settings: SubstituteSettings,
    records: Path,
    onnx_source: Path | None = None,
    onnx_model: str = "",
) -> str:
    """Turn an onnxruntime/tensorrt_plan model folder into the Python-backend model running its ONNX file
    (or `onnx_source`, model `onnx_model`'s); the note saying what it serves in place of what."""
    source_backend = engine_backend(config)
    onnx_name = config.default_model_filename if source_backend == ONNX_BACKEND else ""
    onnx_name = onnx_name or ONNX_FILE
    fp16 = wants_fp16(config)
    gpu_kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    on_gpu = any(group.kind == gpu_kind for group in config.instance_group)
    config.ClearField("platform")
    config.backend = "python"
    config.ClearField("default_model_filename")
    # The onnxruntime backend's accelerator settings; here ONNX Runtime's providers play that part.
    config.optimization.ClearField("execution_accelerators")
    if config.optimization.ByteSize() == 0:
        config.ClearField("optimization")
    instances = sum(max(1, group.count) for group in config.instance_group) or 1
    if not settings.gpu:
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
            group.ClearField("gpus")
    # Every instance may use every core: they run together only under load, when batches are full and
    # sharing the cores costs little; at low load one instance runs at a time, on all of them.
    threads = max(1, settings.cores)
    for version_dir in version_dirs(model_dir):
        onnx_file = onnx_source or version_dir / onnx_name
        if not onnx_file.is_file():
            raise ServingError(f"{onnx_file} is missing: re-run `alexnet export onnx`")
        _replace_with_copy(ONNX_SUBSTITUTE, version_dir / MODEL_SOURCE_FILE)
        substitute = {
            "source_backend": source_backend,
            "onnx_file": onnx_file.name if onnx_source is None else str(onnx_source),
            "device": "gpu" if settings.gpu else "cpu",
            "intra_op_threads": threads,
            "allow_spinning": settings.allow_spinning,
            "tensorrt": settings.tensorrt,
            "fp16": fp16,
            "tensorrt_cache_dir": (
                str(tensorrt_cache_dir(onnx_file.resolve(), fp16)) if settings.tensorrt else None
            ),
            "provider_record_dir": str(records / config.name / version_dir.name),
        }
        _replace_file(version_dir / SETTINGS_FILE, json.dumps(substitute, indent=2))
    (model_dir / CONFIG_FILE).unlink(missing_ok=True)
    write_config(model_dir, config)
    provider = ("TensorRT" if settings.tensorrt else "CUDA") if settings.gpu else "CPU"
    served = f"{onnx_model}'s ONNX model" if onnx_model else "its ONNX model"
    replaced = "its TensorRT plan" if source_backend == PLAN_BACKEND else f"the {source_backend} backend"
    why = (
        "a plan runs only where it was built"
        if source_backend == PLAN_BACKEND
        else f"the local server has no {source_backend} backend"
    )
    moved = "; its GPU instances run on the CPU: no GPU here" if on_gpu and not settings.gpu else ""
    return (
        f"{config.name}: serving {served} on ONNX Runtime ({provider} execution provider, "
        f"{instances} instance(s) x {threads} thread(s)) in the Python backend, in place of {replaced} "
        f"({why}){moved}"
    )


def provider_announcements(records: Path) -> list[str]:
    """One line per substitute model of a started server (its records, `<model>/<version>/<instance>.json`):
    the execution provider its sessions run on, with a WARNING where any instance runs on another than the
    one asked for."""
    lines = []
    if not records.is_dir():
        return lines
    for model_dir in sorted(path for path in records.iterdir() if path.is_dir()):
        records_of_model = sorted(model_dir.glob("*/*.json"))
        uses = {ProviderUse(**json.loads(record.read_text())) for record in records_of_model}
        if uses:
            worst = min(uses, key=lambda use: (use.as_asked, use.running))
            lines.append(worst.line(model_dir.name))
    return lines


def prepare_repository(
    repository: Path,
    destination: Path,
    *,
    serve_int8: bool = False,
    settings: SubstituteSettings | None = None,
) -> list[str]:
    """Copy `repository` to `destination` in the form this server can run; returns one note per change."""
    repository = Path(repository).resolve()
    if not repository.is_dir():
        raise ServingError(f"no model repository at {repository}: create one with `alexnet export onnx`")
    sources = model_dirs(repository)
    if not sources:
        raise ServingError(
            f"{repository} holds no model (no */{CONFIG_FILE}): create it with "
            f"`alexnet export onnx --model DIR --repository {repository}`"
        )
    settings = settings or SubstituteSettings.for_this_machine()
    for path in sources:
        read_config(path)  # every config must parse before anything is written
    destination.mkdir(parents=True)
    notes = [
        prepare_model(repository, source_dir, destination, serve_int8=serve_int8, settings=settings)
        for source_dir in sources
    ]
    return [note for note in notes if note]


def prepare_model(
    repository: Path,
    source_dir: Path,
    destination: Path,
    *,
    serve_int8: bool,
    settings: SubstituteSettings,
    records: Path | None = None,
) -> str | None:
    """Write one model folder of `repository` into `destination` in the form this server can run (or skip
    it); a note when something changed. `records`: where substitute instances record their execution
    provider (default: PROVIDERS_DIR beside `destination`)."""
    records = records or destination.parent / PROVIDERS_DIR
    name, config = source_dir.name, read_config(source_dir)
    backend = engine_backend(config)
    base = base_model(name)
    if name == ModelNames(base).int8 and not serve_int8:
        return f"{name}: not loaded (start with --int8 to serve the INT8 model under this name)"
    onnx_source, onnx_model = None, ""
    if backend == PLAN_BACKEND:
        fp32_name = base
        if not (settings.gpu and settings.tensorrt):
            return (
                f"{name}: TensorRT plan not served locally (needs a GPU and TensorRT; this machine "
                f"has {'no GPU' if not settings.gpu else 'no TensorRT'}); use {fp32_name}"
            )
        onnx_source, onnx_model = _sibling_onnx(repository, fp32_name, name), fp32_name
    target = destination / name
    link_tree(source_dir, target)
    (target / CONFIG_FILE).unlink()
    if backend in SUBSTITUTED_BACKENDS:
        note = _substitute(target, config, settings, records, onnx_source, onnx_model)
    else:
        write_config(target, config)
        note = None
    _compile_sources(target)
    return note


def _compile_sources(model_dir: Path) -> None:
    """Compile the model's Python sources ahead, for this Python (the stub's): a stub that finds them
    compiled writes no __pycache__ into the folder, and Triton, which polls the folder, would reload the
    model for it. (The stub's embedded interpreter ignores PYTHONDONTWRITEBYTECODE.)"""
    for source in sorted(model_dir.glob("*/*.py")):
        py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)), doraise=True)


def _sibling_onnx(repository: Path, fp32_name: str, plan_name: str) -> Path:
    """A plan only runs where it was built; locally its model runs the FP32 model's ONNX with TensorRT."""
    onnx_file = newest_file(repository / fp32_name, ONNX_FILE)
    if onnx_file is None:
        raise ServingError(f"{plan_name} needs {fp32_name}/<version>/{ONNX_FILE} beside it in {repository}")
    return onnx_file.resolve()


@dataclass(frozen=True)
class ModelUpdate:
    """What `mirror_model` changed in the served copy of one model."""

    model: str
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # config.pbtxt, labels.txt

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.files)


def check_replaceable(
    served: model_config_pb2.ModelConfig, new: model_config_pb2.ModelConfig, source: Path
) -> None:
    """A new config may change anything but the model's name, inputs and outputs: Triton has one config for
    all versions, so those would break the versions already served."""
    if new.name != served.name or io_signature(new) != io_signature(served):
        raise RepositoryError(
            f"{source / CONFIG_FILE} would change the served model's name, inputs or outputs "
            f"({new.name!r}: {io_signature(new)}; served: {io_signature(served)}): fix it, or export under "
            "another --name"
        )


def same_file(staged: Path, served: Path) -> bool:
    """Whether a staged top-level file (a generated config, or a symlink to the source's labels) equals the
    served one."""
    if staged.is_symlink() or served.is_symlink():
        return staged.is_symlink() and served.is_symlink() and os.readlink(staged) == os.readlink(served)
    return served.is_file() and staged.read_bytes() == served.read_bytes()
