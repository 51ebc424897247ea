"""`alexnet export onnx`: the repository it writes, parity with PyTorch, INT8, versions, and failures
that must leave an existing repository byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures_training import alexnet_command, alexnet_in_process
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import triton_to_np_dtype

from common.model_card import ModelCard
from export.onnx_export import read_metadata
from triton_repository.layout import CONFIG_FILE, IMAGE_PREPROCESSING, PREPROCESS_MODEL

MODELS = ("alexnet", "alexnet_preprocess", "alexnet_image")
EMBEDDING_MODELS = ("alexnet_embedding", "alexnet_embedding_image")  # tests/test_embedding.py checks them


def export_onnx_cli(
    model_dir: Path, repository: Path, *options: str, fresh_process: bool = False
) -> subprocess.CompletedProcess:
    """`alexnet export onnx`: the console script's code in this process (its error lines and exit status),
    or with fresh_process the real entry point in a subprocess, as a user runs it."""
    run = alexnet_command if fresh_process else alexnet_in_process
    return run("export", "onnx", "--model", str(model_dir), "--repository", str(repository), *options)


def tree_digest(root: Path) -> str:
    """sha256 over every path (folders included) and file content under `root`."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def read_config(model_dir: Path) -> mc.ModelConfig:
    """Parse with Triton's own schema: an unknown field or a typo fails here."""
    return text_format.Parse((model_dir / CONFIG_FILE).read_text(), mc.ModelConfig())


def config_io(config: mc.ModelConfig) -> dict[str, tuple]:
    batch = (-1,) if config.max_batch_size > 0 else ()
    tensors = list(config.input) + list(config.output)
    return {t.name: (numpy_dtype(t.data_type), batch + tuple(t.dims)) for t in tensors}


def numpy_dtype(data_type: int) -> np.dtype:
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return np.dtype(triton_to_np_dtype("BYTES" if name == "STRING" else name))


def onnx_io(path: Path) -> dict[str, tuple]:
    model = onnx.load(str(path), load_external_data=False)
    result = {}
    for value in list(model.graph.input) + list(model.graph.output):
        tensor = value.type.tensor_type
        dims = tuple(-1 if dim.dim_param else dim.dim_value for dim in tensor.shape.dim)
        result[value.name] = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims)
    return result


# ---------------------------------------------------------------------------------------------
# The repository


def test_repository_configs_parse_and_match_the_onnx_files(digits_repository: Path, digits_model_dir: Path):
    card = ModelCard.load(digits_model_dir)
    size = card.image_size
    assert sorted(p.name for p in digits_repository.iterdir()) == sorted(MODELS + EMBEDDING_MODELS)
    configs = {name: read_config(digits_repository / name) for name in MODELS}
    name = "alexnet"
    config = configs[name]
    assert config.name == name and config.backend == "onnxruntime" and config.max_batch_size == 64
    assert config_io(config) == onnx_io(digits_repository / name / "1" / "model.onnx")
    assert config_io(config) == {
        "pixels": (np.dtype(np.uint8), (-1, size, size, 3)),
        "probabilities": (np.dtype(np.float32), (-1, card.num_classes)),
    }
    assert config.output[0].label_filename == "labels.txt"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU  # --device cpu
    assert config.HasField("dynamic_batching")  # Triton's recommended start: no delay
    assert config.dynamic_batching.max_queue_delay_microseconds == 0
    assert [w.batch_size for w in config.model_warmup] == [1, 64]
    assert {key: value.string_value for key, value in config.parameters.items()} == {
        "image_size": str(size),
        "resize_size": str(card.resize_size),
        "architecture": card.architecture,
        "dataset": card.dataset,
        "input_conversion": "digit-scan",  # the digits model reads people's pictures as scans
        "source_weights_sha256": card.weights_sha256,
    }
    labels = (digits_repository / name / "labels.txt").read_text().splitlines()
    assert labels == card.labels

    preprocess, ensemble = configs["alexnet_preprocess"], configs["alexnet_image"]
    assert preprocess.backend == "python"
    assert config_io(preprocess) == {
        "image": (np.dtype(object), (-1, 1)),
        "pixels": config_io(configs["alexnet"])["pixels"],
    }
    assert preprocess.parameters["image_size"].string_value == str(size)
    assert preprocess.parameters["resize_size"].string_value == str(card.resize_size)
    assert preprocess.parameters["input_conversion"].string_value == card.input_conversion == "digit-scan"
    version_dir = digits_repository / "alexnet_preprocess" / "1"
    assert (version_dir / "model.py").read_bytes() == PREPROCESS_MODEL.read_bytes()
    assert (version_dir / "image_preprocessing.py").read_bytes() == IMAGE_PREPROCESSING.read_bytes()

    assert ensemble.platform == "ensemble"
    assert config_io(ensemble) == {
        "image": (np.dtype(object), (-1, 1)),
        "probabilities": config_io(configs["alexnet"])["probabilities"],
    }
    assert ensemble.output[0].label_filename == "labels.txt"
    assert (digits_repository / "alexnet_image" / "labels.txt").read_text() == (
        digits_repository / "alexnet" / "labels.txt"
    ).read_text()
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [
        "alexnet_preprocess",
        "alexnet",
    ]
    assert (digits_repository / "alexnet_image" / "1").is_dir()


def test_gpu_configs_use_the_tensorrt_accelerator(digits_model_dir: Path):
    from triton_repository.configs import config_text, onnx_model_config, parse_config

    card = ModelCard.load(digits_model_dir)
    fp16 = parse_config(
        config_text(onnx_model_config("alexnet", card, max_batch_size=32, device="gpu", fp16=True))
    )
    assert fp16.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (accelerator,) = fp16.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    size = card.image_size
    assert accelerator.parameters["trt_profile_max_shapes"] == f"pixels:32x{size}x{size}x3"
    cpu = onnx_model_config("alexnet", card, max_batch_size=32, device="cpu")
    assert not cpu.optimization.execution_accelerators.gpu_execution_accelerator


def test_onnx_metadata_names_its_source(digits_repository: Path, digits_model_dir: Path):
    card = ModelCard.load(digits_model_dir)
    name = "alexnet"
    metadata = read_metadata(digits_repository / name / "1" / "model.onnx")
    assert metadata["architecture"] == card.architecture
    assert metadata["labels_file"] == "labels.txt"
    assert metadata["image_size"] == str(card.image_size)
    assert metadata["resize_size"] == str(card.resize_size)
    assert metadata["source_weights_sha256"] == card.weights_sha256
    model = onnx.load(str(digits_repository / "alexnet" / "1" / "model.onnx"), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)


# ---------------------------------------------------------------------------------------------
# Parity (INT8: tests/test_int8.py)


def test_onnx_matches_pytorch_on_the_digits(digits_export):
    parity = digits_export.parity
    print(parity.summary())
    real, *random = parity.checks
    assert real.name == "digits validation images" and real.images >= 300
    assert real.top1_agreement == 1.0 and real.max_abs_diff <= 1e-4
    assert [check.images for check in random] == [1, 7, 64]


@pytest.mark.slow  # a whole export (seconds to tens of seconds on 2 cores)
def test_paper_architecture_exports_with_parity(tmp_path: Path):
    """The other architecture (LRN, grouped convolutions): a confident random network, digits images."""
    from export.pipeline import export_repository

    model_dir = confident_random_model_dir(tmp_path / "paper", "paper")
    result = export_repository(
        model_dir, tmp_path / "repo", device="cpu", embedding=False, log=lambda line: None
    )
    print(result.parity.summary())
    assert result.parity.checks[0].top1_agreement == 1.0
    assert read_metadata(tmp_path / "repo" / "alexnet" / "1" / "model.onnx")["architecture"] == "paper"


def confident_random_model_dir(path: Path, architecture: str) -> Path:
    """Untrained weights, scaled so the network's top-1 is decisive (no ties to blur a parity check)."""
    import torch
    from torch import nn

    from training.data import default_resize_size
    from training.model import build_model
    from training.model_dir import save_model_dir

    torch.manual_seed(0)
    model = build_model(architecture, num_classes=10)
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    card = ModelCard(
        architecture=architecture,
        labels=[str(digit) for digit in range(10)],
        image_size=64,
        resize_size=default_resize_size("digits", 64),
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        dataset="digits",
    )
    return save_model_dir(model, card, path)


# ---------------------------------------------------------------------------------------------
# Failures leave the repository as it was; versions


@pytest.fixture
def repository_copy(digits_repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(digits_repository, copy)
    return copy


def assert_no_staging_left(repository: Path) -> None:
    leftovers = [p.name for p in repository.parent.iterdir() if p.name.startswith(f".{repository.name}.")]
    assert leftovers == []


def test_weights_that_do_not_match_model_json_fail_cleanly(
    repository_copy: Path, digits_model_dir: Path, tmp_path: Path
):
    from safetensors.torch import save_file

    from training.model import build_model

    before = tree_digest(repository_copy)
    card = ModelCard.load(digits_model_dir)

    replaced = tmp_path / "replaced_weights"  # same shapes, other values, model.json not updated
    replaced.mkdir()
    shutil.copy(digits_model_dir / "model.json", replaced)
    state = build_model(card.architecture, card.num_classes).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(replaced / "model.safetensors"))
    result = export_onnx_cli(replaced, repository_copy)
    assert result.returncode == 2, result.stderr
    assert "is not the file" in result.stderr and "train again" in result.stderr

    other = tmp_path / "other_architecture"  # model.json says the other architecture
    other.mkdir()
    os.link(digits_model_dir / "model.safetensors", other / "model.safetensors")  # only read
    shutil.copy(digits_model_dir / "model.json", other)
    raw = json.loads((other / "model.json").read_text())
    raw["architecture"] = "paper" if card.architecture == "torchvision" else "torchvision"
    (other / "model.json").write_text(json.dumps(raw))
    result = export_onnx_cli(other, repository_copy)
    assert result.returncode == 2, result.stderr
    assert "does not match" in result.stderr and "Traceback" not in result.stderr

    assert tree_digest(repository_copy) == before
    assert_no_staging_left(repository_copy)


@pytest.mark.slow  # a whole export (seconds to tens of seconds on 2 cores)
def test_failed_parity_leaves_the_repository_unchanged(repository_copy: Path, digits_model_dir: Path):
    """A parity failure after the ONNX file was written (in staging) must not reach REPO."""
    before = tree_digest(repository_copy)
    result = export_onnx_cli(
        digits_model_dir, repository_copy, "--device", "cpu", "--parity-tolerance", "1e-12"
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "does not match PyTorch" in result.stderr and "left unchanged" in result.stderr
    assert tree_digest(repository_copy) == before
    assert_no_staging_left(repository_copy)


@pytest.mark.slow  # a whole export (seconds to tens of seconds on 2 cores)
def test_exporting_again_adds_a_version_and_keeps_the_old(repository_copy: Path, digits_model_dir: Path):
    version_1 = tree_digest(repository_copy / "alexnet" / "1")

    clash = export_onnx_cli(digits_model_dir, repository_copy, "--version", "1")
    assert clash.returncode == 2 and "already exists" in clash.stderr

    negative = export_onnx_cli(digits_model_dir, repository_copy, "--queue-delay-us", "-1")
    assert negative.returncode == 2 and "--queue-delay-us -1" in negative.stderr

    again = export_onnx_cli(
        digits_model_dir, repository_copy, "--device", "cpu", "--queue-delay-us", "250", fresh_process=True
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert read_config(repository_copy / "alexnet").dynamic_batching.max_queue_delay_microseconds == 250
    assert "top-1 agreement 100.00%" in again.stdout
    for name in ("alexnet", "alexnet_preprocess", "alexnet_image", *EMBEDDING_MODELS):
        assert sorted(p.name for p in (repository_copy / name).iterdir() if p.is_dir()) == ["1", "2"]
    assert tree_digest(repository_copy / "alexnet" / "1") == version_1
    read_config(repository_copy / "alexnet")  # still parses after the update
    assert_no_staging_left(repository_copy)


# ---------------------------------------------------------------------------------------------
# TensorRT and the benchmark


def test_export_tensorrt_says_where_it_can_run(digits_model_dir: Path, tmp_path: Path):
    from export.tensorrt_build import tensorrt_missing_reason

    if tensorrt_missing_reason() is None:
        pytest.skip("this machine has a GPU and TensorRT: test_export_tensorrt_builds_a_plan covers it")
    repository = tmp_path / "repo"
    result = alexnet_in_process(
        "export", "tensorrt", "--model", str(digits_model_dir), "--repository", str(repository)
    )
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith("error: `alexnet export tensorrt` cannot run here")
    assert "GPU" in message and "docs/production.md" in message and "Traceback" not in message
    assert not repository.exists()


@pytest.mark.slow  # a whole export (seconds to tens of seconds on 2 cores)
def test_export_tensorrt_builds_a_plan(digits_model_dir: Path, tmp_path: Path):
    from export.tensorrt_build import export_tensorrt, tensorrt_missing_reason

    reason = tensorrt_missing_reason()
    if reason is not None:
        pytest.skip(f"needs an NVIDIA GPU and TensorRT: {reason}")
    export_tensorrt(digits_model_dir, tmp_path / "repo", fp16=True, log=print)
    config = read_config(tmp_path / "repo" / "alexnet_trt")
    assert config.platform == "tensorrt_plan"
    assert (tmp_path / "repo" / "alexnet_trt" / "1" / "model.plan").stat().st_size > 0


@pytest.mark.slow  # a whole export (seconds to tens of seconds on 2 cores)
def test_bench_export_reports_all_three_engines(digits_model_dir: Path, tmp_path: Path):
    from export.bench import ENGINES, run_bench_export

    lines: list[str] = []
    report = run_bench_export(
        digits_model_dir, batch_sizes=[1, 4], json_out=tmp_path / "bench.json", seconds=0.05, rounds=1,
        log=lines.append,
    )  # fmt: skip
    assert json.loads((tmp_path / "bench.json").read_text()) == report
    assert [row["batch_size"] for row in report["results"]] == [1, 4]
    for row in report["results"]:
        assert set(row["images_per_s"]) == set(ENGINES) and min(row["images_per_s"].values()) > 0
    assert "FP32/eager" in lines[0]


def test_session_factory_picks_providers_this_machine_has(digits_repository: Path):
    from common.machine import gpu_available
    from common.onnx_session import create_session, select_providers

    path = digits_repository / "alexnet" / "1" / "model.onnx"
    session = create_session(path, device="cpu", threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    if not gpu_available():
        assert select_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(RuntimeError, match="no usable NVIDIA GPU"):
            create_session(path, device="cuda")


def test_calibration_folder_is_read_like_the_server_reads_uploads(tmp_path: Path, digits_model_dir: Path):
    from PIL import Image

    from export.errors import ExportError
    from export.images import real_images
    from triton_repository.image_preprocessing import prepare_image

    card = ModelCard.load(digits_model_dir)
    folder = tmp_path / "calibration"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, (size, suffix) in enumerate([((90, 70), "png"), ((64, 64), "jpg"), ((200, 120), "webp")]):
        image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
        image.save(folder / ("nested" if index == 2 else ".") / f"image_{index}.{suffix}")
    (folder / "notes.txt").write_text("not an image, skipped by its suffix")
    pixels, name = real_images(card, folder)
    assert pixels.shape == (3, card.image_size, card.image_size, 3) and pixels.dtype == np.uint8
    first = prepare_image(
        (folder / "image_0.png").read_bytes(), resize_size=card.resize_size, image_size=card.image_size,
        input_conversion=card.input_conversion,  # the digits model's digit-scan, as the server applies it
    )
    assert np.array_equal(pixels[0], first) and str(folder) in name

    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no JPEG/PNG/WebP images"):
        real_images(card, tmp_path / "empty")
