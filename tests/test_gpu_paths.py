"""The GPU paths, as far as a CPU can check them: the prepared GPU check's tiny CPU version run for real
through `make gpu-check`, and the parts of the GPU code whose decisions do not need a GPU (TensorRT's
precision flags, the engine cache folder, the execution provider a served model really runs on, the
in-process baseline's precision, the documented path of a TensorRT plan)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_training import REPO

SECTIONS = [
    "machine",
    "jpeg decode",
    "training loop",
    "ddp",
    "inference",
    "onnx export",
    "tensorrt",
    "training throughput",
]
NOT_ON_THE_GPU_MACHINE = ("tritonclient", "gradio", "pytriton", "tensorrt")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_gpu_check_cpu_version_runs_through_make(tmp_path: Path):
    """`make gpu-check` as the GPU machine runs it (its own python, PYTHONPATH=., OUT), in its CPU version:
    GPUs hidden, so it is the tiny version on every host. Every part runs or says why not."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        ["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu" and report["passed"], report
    sections = {section["name"]: section for section in report["sections"]}
    assert list(sections) == SECTIONS
    for name in ("machine", "training loop", "ddp", "inference", "onnx export", "training throughput"):
        assert sections[name]["status"] == "passed", sections[name]
    for section in sections.values():
        assert section["status"] != "skipped" or section["reason"], f"{section['name']}: skipped, no reason"
    assert sections["training loop"]["results"]["epochs"] == [1, 2]
    assert sections["ddp"]["results"]["max_weight_diff"] == 0.0
    assert sections["onnx export"]["results"]["onnxruntime_cpu"]["passed"]
    assert sections["jpeg decode"]["results"]["cpu_pillow_images_per_s"] > 0
    # The GPU machine has none of these: the check must not need them, even where they are installed.
    assert not set(report["environment"]["imported"]) & set(NOT_ON_THE_GPU_MACHINE), report["environment"]
    log = (out / "gpu_check.log").read_text()
    assert "PASSED" in log and "training loop" in log
    assert "PASSED" in result.stdout


def test_gpu_check_refuses_nothing_it_does_not_need():
    """The check's module imports without the packages the GPU machine lacks."""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in NOT_ON_THE_GPU_MACHINE)
    code = f"import sys; {blocked}; import export.gpu_check; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# --- TensorRT: precision flags and the container's build -------------------------------------------------


def test_fp32_engines_are_built_without_tf32_and_fp16_ones_with_fp16():
    from export.parity import FP32_TOLERANCE
    from export.tensorrt_build import TENSORRT_FP32_TOLERANCE, precision_flags

    assert precision_flags(fp16=False, tensorrt_major=10) == ([], ["TF32"])
    assert precision_flags(fp16=True, tensorrt_major=10) == (["FP16"], [])
    assert precision_flags(fp16=True, tensorrt_major=11) == ([], [])  # strongly typed: no flags at all
    assert TENSORRT_FP32_TOLERANCE == FP32_TOLERANCE  # without TF32, FP32 is held to FP32's bound


# --- ONNX Runtime: the engine cache folder, the provider read back ------------------------------------


def test_tensorrt_engine_cache_folder_is_created_with_its_parents(tmp_path: Path):
    from common.onnx_session import tensorrt_cache_options

    cache = tmp_path / "cache" / "alexnet" / "tensorrt" / "alexnet" / "1"
    options = tensorrt_cache_options(cache)
    assert cache.is_dir(), "ONNX Runtime creates only the last level; without the rest TensorRT is skipped"
    assert options == {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}


def test_a_session_reports_the_provider_it_really_runs_on(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    from common.onnx_session import ProviderUse, open_session

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    session, providers = open_session(path, device="cpu")
    assert providers == ProviderUse(asked="CPUExecutionProvider", running=session.get_providers()[0])
    assert providers.as_asked
    assert providers.line("alexnet") == "alexnet: ONNX Runtime runs it on CPUExecutionProvider"
    fallen_back = ProviderUse(asked="TensorrtExecutionProvider", running="CUDAExecutionProvider")
    line = fallen_back.line("alexnet")
    assert line.startswith("WARNING: alexnet: ONNX Runtime runs it on CUDAExecutionProvider")
    assert "NOT on TensorrtExecutionProvider" in line


@pytest.mark.slow
def test_serve_says_which_provider_runs_each_model(digits_server):
    """Read back from each model's sessions once the server is ready, in its start-up log and notes."""
    lines = [note for note in digits_server.notes if "ONNX Runtime runs it on" in note]
    onnx_models = ["alexnet", "alexnet_embedding"]  # the repository's ONNX models (int8 is not exported)
    assert [line.split(":")[0] for line in lines] == onnx_models, digits_server.notes
    assert not any(line.startswith("WARNING") for line in lines), lines
    log = digits_server.log_file.read_text()
    assert all(f"alexnet serve: {line}" in log for line in lines)


# --- the in-process baseline follows the served model's precision --------------------------------------


@pytest.mark.parametrize("fp16", [False, True])
def test_bench_baseline_uses_fp16_where_the_served_model_does(tmp_path: Path, fp16: bool):
    from common.model_card import ModelCard
    from serving.bench import served_fp16
    from triton_repository.configs import onnx_model_config, write_config

    card = ModelCard(
        architecture="torchvision",
        labels=["a", "b"],
        image_size=64,
        resize_size=73,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
    )
    config = onnx_model_config("alexnet", card, max_batch_size=8, device="gpu", fp16=fp16)
    (tmp_path / "alexnet").mkdir()
    write_config(tmp_path / "alexnet", config)
    assert served_fp16(tmp_path, "alexnet") is fp16


# --- where a TensorRT plan is built and where it goes --------------------------------------------------


def test_readme_production_path_builds_the_plan_where_it_is_served():
    """The README's production commands must not build a plan into the repository the image bakes in (the
    build context leaves it out, and the container's TensorRT could not load it): the container builds it."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The path to production", 1)[1].split("\n## ", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    for line in commands.splitlines():
        if "alexnet export tensorrt" in line:
            assert "--repository model_repository " not in line + " ", line
    docker_run = next(line for line in commands.splitlines() if line.startswith("docker run"))
    assert (
        "-e ALEXNET_TRT_PLAN=build" in docker_run and "-v alexnet-trt-cache:/var/cache/alexnet" in docker_run
    )
