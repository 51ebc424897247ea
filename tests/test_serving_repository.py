"""How the local server prepares its scratch copy of a repository, and how it reports start-up failures."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from common.ports import free_port
from serving.errors import ServingError
from serving.local_repository import SETTINGS_FILE, SubstituteSettings, prepare_repository
from serving.server import TritonServer
from triton_repository.configs import read_config, write_config

CPU_ONLY = SubstituteSettings(gpu=False, tensorrt=False, cores=2)


def io_and_batching(config: mc.ModelConfig) -> tuple:
    return (
        config.name,
        config.max_batch_size,
        [(t.name, t.data_type, list(t.dims)) for t in config.input],
        [(t.name, t.data_type, list(t.dims), t.label_filename) for t in config.output],
        config.dynamic_batching.SerializeToString(deterministic=True),
        dict((key, value.string_value) for key, value in config.parameters.items()),
        [warmup.SerializeToString(deterministic=True) for warmup in config.model_warmup],
    )


def with_extra_models(repository: Path, tmp_path: Path) -> Path:
    """The exported repository plus an INT8 copy and a TensorRT-plan model, as a GPU export would add."""
    copy = tmp_path / "repository"
    shutil.copytree(repository, copy, symlinks=True)
    if not (copy / "alexnet_int8").exists():
        shutil.copytree(copy / "alexnet", copy / "alexnet_int8")
        config = read_config(copy / "alexnet_int8")
        config.name = "alexnet_int8"
        write_config(copy / "alexnet_int8", config)
    trt = copy / "alexnet_trt"
    (trt / "1").mkdir(parents=True)
    (trt / "1" / "model.plan").write_bytes(b"engine built elsewhere")
    shutil.copy(copy / "alexnet" / "labels.txt", trt / "labels.txt")
    config = read_config(copy / "alexnet")
    config.name, config.platform, config.backend = "alexnet_trt", "tensorrt_plan", "tensorrt"
    write_config(trt, config)
    return copy


def test_onnx_models_become_python_models_with_the_same_config(digits_repository, tmp_path):
    scratch = tmp_path / "scratch"
    notes = prepare_repository(digits_repository, scratch, settings=CPU_ONLY)
    exported, served = read_config(digits_repository / "alexnet"), read_config(scratch / "alexnet")
    assert served.backend == "python" and not served.platform
    assert io_and_batching(served) == io_and_batching(exported)
    assert [group.kind for group in served.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert (scratch / "alexnet" / "labels.txt").read_text() == (
        digits_repository / "alexnet" / "labels.txt"
    ).read_text()
    version = scratch / "alexnet" / "1"
    assert (version / "model.py").is_file()
    assert (version / "model.onnx").resolve() == (
        digits_repository / "alexnet" / "1" / "model.onnx"
    ).resolve()
    settings = json.loads((version / SETTINGS_FILE).read_text())
    assert (
        settings["device"] == "cpu"
        and settings["intra_op_threads"] == 2
        and settings["onnx_file"] == "model.onnx"
    )
    # The preprocessing model and the ensemble run as exported.
    for name in ("alexnet_preprocess", "alexnet_image"):
        assert read_config(scratch / name) == read_config(digits_repository / name)
    assert (
        "alexnet: serving its ONNX model on ONNX Runtime (CPU execution provider, 2 instance(s) x "
        "2 thread(s)) in the Python backend, in place of the onnxruntime backend (the local server has no "
        "onnxruntime backend)"
    ) in notes
    assert not (digits_repository / "alexnet" / "1" / "model.py").exists(), (
        "the repository itself is untouched"
    )


def test_gpu_instances_moved_to_the_cpu_are_announced(digits_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(digits_repository, repository, symlinks=True)
    config = read_config(repository / "alexnet")
    config.instance_group[0].kind = mc.ModelInstanceGroup.KIND_GPU  # as `alexnet export onnx` writes it
    write_config(repository / "alexnet", config)
    notes = prepare_repository(repository, tmp_path / "scratch", settings=CPU_ONLY)
    (note,) = [note for note in notes if note.startswith("alexnet:")]
    assert note.endswith("in place of the onnxruntime backend (the local server has no onnxruntime backend); "
                         "its GPU instances run on the CPU: no GPU here"), note  # fmt: skip
    assert [group.kind for group in read_config(tmp_path / "scratch" / "alexnet").instance_group] == [
        mc.ModelInstanceGroup.KIND_CPU
    ]


def test_int8_is_loaded_only_when_asked_and_the_plan_only_with_a_gpu(digits_repository, tmp_path):
    repository = with_extra_models(digits_repository, tmp_path)
    notes = prepare_repository(repository, tmp_path / "default", settings=CPU_ONLY)
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == [
        "alexnet",
        "alexnet_embedding",
        "alexnet_embedding_image",
        "alexnet_image",
        "alexnet_preprocess",
    ]
    assert any("alexnet_int8: not loaded (start with --int8" in note for note in notes)
    assert any(
        "alexnet_trt: TensorRT plan not served locally (needs a GPU and TensorRT" in note for note in notes
    )

    prepare_repository(repository, tmp_path / "int8", serve_int8=True, settings=CPU_ONLY)
    assert read_config(tmp_path / "int8" / "alexnet_int8").backend == "python"

    gpu = SubstituteSettings(gpu=True, tensorrt=True, cores=16)
    notes = prepare_repository(repository, tmp_path / "gpu", settings=gpu)
    assert any(
        note.startswith("alexnet_trt: serving alexnet's ONNX model on ONNX Runtime (TensorRT execution")
        and note.endswith("in place of its TensorRT plan (a plan runs only where it was built)")
        for note in notes
    ), notes
    plan_settings = json.loads((tmp_path / "gpu" / "alexnet_trt" / "1" / SETTINGS_FILE).read_text())
    assert plan_settings["source_backend"] == "tensorrt" and plan_settings["device"] == "gpu"
    assert Path(plan_settings["onnx_file"]) == (repository / "alexnet" / "1" / "model.onnx").resolve()
    assert (
        read_config(tmp_path / "gpu" / "alexnet").instance_group[0].kind
        == read_config(repository / "alexnet").instance_group[0].kind
    )  # a GPU machine keeps the exported instance kind


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "no model repository at"),
        (lambda tmp: tmp, "holds no model"),
    ],
    ids=["missing", "empty"],
)
def test_an_unusable_repository_says_how_to_make_one(tmp_path, make, message):
    with pytest.raises(ServingError, match=message) as error:
        prepare_repository(make(tmp_path), tmp_path / "scratch", settings=CPU_ONLY)
    assert "alexnet export onnx" in str(error.value)


def test_server_binds_loopback_polls_its_copy_and_closes_the_admin_apis(tmp_path):
    from triton_repository.server_flags import CLOSED_HEADER, CLOSED_VALUE

    server = TritonServer(tmp_path, http_port=1, grpc_port=2, metrics_port=3)
    command = server.command(tmp_path / "models", tmp_path / "backends")
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--model-control-mode=poll"):  # fmt: skip
        assert flag in command
    closed = f"model-repository,shared-memory,trace,logging:{CLOSED_HEADER}={CLOSED_VALUE}"
    assert f"--http-restricted-api={closed}" in command
    assert f"--grpc-restricted-protocol={closed}" in command


def test_generated_files_are_never_written_through_a_symlink_into_the_source(digits_repository, tmp_path):
    """The copy's files are symlinks into the source repository; files the server generates in the copy
    (a substitute's model.py and settings) must replace those links, not write through them."""
    repository = tmp_path / "repository"
    shutil.copytree(digits_repository, repository, symlinks=True)
    version = repository / "alexnet" / "1"
    leftovers = {name: f"left here by someone: {name}\n" for name in ("model.py", SETTINGS_FILE)}
    for name, text in leftovers.items():
        (version / name).write_text(text)
    prepare_repository(repository, tmp_path / "scratch" / "models", settings=CPU_ONLY)
    for name, text in leftovers.items():
        assert (version / name).read_text() == text, f"{name} in the source repository was overwritten"
    served = tmp_path / "scratch" / "models" / "alexnet" / "1"
    assert not (served / "model.py").is_symlink() and "TritonPythonModel" in (served / "model.py").read_text()
    assert json.loads((served / SETTINGS_FILE).read_text())["onnx_file"] == "model.onnx"


def test_the_copy_compiles_model_sources_ahead_and_records_providers_outside_it(digits_repository, tmp_path):
    """Triton polls the copy and reloads a model whose folder changes: nothing may be written into it once
    it serves (a stub's __pycache__, a session's provider record)."""
    scratch = tmp_path / "scratch"
    prepare_repository(digits_repository, scratch / "models", settings=CPU_ONLY)
    for name in ("alexnet", "alexnet_preprocess"):
        (source,) = (scratch / "models" / name / "1").glob("model.py")
        assert importlib.util.cache_from_source(str(source)) in {
            str(path) for path in (source.parent / "__pycache__").iterdir()
        }
    settings = json.loads((scratch / "models" / "alexnet" / "1" / SETTINGS_FILE).read_text())
    assert Path(settings["provider_record_dir"]) == scratch / "providers" / "alexnet" / "1"


@pytest.mark.slow
def test_a_taken_port_fails_start_up_with_the_log_and_a_hint(digits_repository):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TritonServer(
            digits_repository, http_port=port, grpc_port=free_port(), metrics_port=free_port()
        )
        with pytest.raises(ServingError, match="exited with status") as error:
            with server:
                pass
    assert "a port is taken" in str(error.value)
    assert not server.is_running()
