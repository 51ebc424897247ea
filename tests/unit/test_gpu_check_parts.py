"""The GPU check's decisions that need no GPU: how agreement is measured, the cuDNN/TF32 settings each part
states, when torch.compile is skipped, and the one TensorRT engine builder export and the image share."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from gpu_check import harness
from gpu_check.agreement import compare_logits, log_probabilities
from gpu_check.harness import Backend, Check
from gpu_check.machine import compile_blocker
from triton_repository.tensorrt_engine import EngineSpec, precision_flags, tensorrt_major, trtexec_command

ROOT = Path(__file__).resolve().parents[2]


# --- agreement on logits ---------------------------------------------------------------------------------


def test_agreement_is_relative_to_the_logits_spread_and_counts_top1_flips():
    reference = np.array([[10.0, 0.0, -10.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    same = compare_logits("x", reference, reference * (1 + 1e-6), bound=1e-4)
    assert same.passed and same.relative_error < 1e-5
    shifted = compare_logits("x", reference, reference + 7.0, bound=1e-4)  # softmax's constant: no change
    assert shifted.passed and shifted.relative_error == pytest.approx(0.0, abs=1e-6)
    swapped = compare_logits("x", reference, reference[:, ::-1], bound=5e-2)
    assert (
        not swapped.passed
        and swapped.top1_disagreements == 1
        and swapped.relative_error == pytest.approx(1.0)
    )
    assert "top-1 differs on 1 of 2" in swapped.line()


def test_a_top1_flip_between_classes_the_reference_scores_alike_is_a_tie():
    reference = np.array([[1.0, 1.0 - 1e-5, -3.0]], dtype=np.float32)
    candidate = np.array([[1.0 - 1e-5, 1.0, -3.0]], dtype=np.float32)
    agreement = compare_logits("x", reference, candidate, bound=1e-4)
    assert agreement.passed and agreement.ties == 1 and agreement.top1_disagreements == 0


def test_served_probabilities_compare_as_the_logits_they_come_from():
    logits = np.random.default_rng(0).normal(0, 8, (16, 10)).astype(np.float32)
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    agreement = compare_logits("x", logits, log_probabilities(probabilities), bound=1e-4)
    assert agreement.passed, agreement.line()


# --- the cuDNN/TF32 settings each part states ---------------------------------------------------------


def test_backend_settings_are_set_and_put_back():
    before = harness.current_backend()
    with harness.backend(Backend(benchmark=True, conv_tf32=False, matmul_tf32=True)):
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    assert harness.current_backend() == before


def test_a_part_cannot_leak_its_settings_into_the_next(tmp_path: Path):
    """The training loop sets cudnn.benchmark for itself; the part after it must not inherit that."""
    check = Check(tmp_path, 60, torch.device("cpu"), harness.CPU_SIZES)
    before = harness.current_backend()

    def leaky(section):
        torch.backends.cudnn.benchmark = not before.benchmark

    try:
        assert check.run("leaky", 10, leaky).status == "passed"
    finally:
        check.close()
    assert harness.current_backend() == before


def test_float32_labels_say_whether_tf32_ran():
    assert harness.STRICT_FP32.label(on_gpu=True) == "float32 (TF32 off)"
    assert "TF32" in harness.TRAINING.label(on_gpu=True)  # PyTorch's default: TF32 convolutions
    assert harness.TRAINING.label(on_gpu=False) == "float32"


# --- torch.compile: skipped with the reason where it cannot build --------------------------------------


def test_compile_is_skipped_with_the_reason_without_a_c_compiler(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang
    monkeypatch.delenv("CXX", raising=False)
    reason = compile_blocker()
    assert reason is not None and reason.startswith("no C compiler")


def test_compile_is_available_where_a_compiler_and_python_headers_are(monkeypatch):
    import shutil
    import sysconfig

    if not shutil.which("cc") and not shutil.which("gcc"):
        pytest.skip("no C compiler on this host")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        pytest.skip("no Python headers on this host")
    assert compile_blocker() is None


# --- the one TensorRT engine builder ----------------------------------------------------------------------


def spec(tmp_path: Path, fp16: bool) -> EngineSpec:
    return EngineSpec(tmp_path / "model.onnx", "pixels", (64, 64, 3), 32, fp16)


def test_fp32_engines_are_built_without_tf32_and_fp16_ones_with_fp16():
    from export.parity import FP32_TOLERANCE
    from export.tensorrt_build import TENSORRT_FP32_TOLERANCE

    assert precision_flags(fp16=False, tensorrt_major=10) == ([], ["TF32"])
    assert precision_flags(fp16=True, tensorrt_major=10) == (["FP16"], [])
    assert precision_flags(fp16=True, tensorrt_major=11) == ([], [])  # strongly typed: no flags at all
    assert TENSORRT_FP32_TOLERANCE == FP32_TOLERANCE  # without TF32, FP32 is held to FP32's bound


def test_trtexec_builds_what_the_python_api_builds(tmp_path: Path):
    fp16 = trtexec_command("trtexec", spec(tmp_path, True), tmp_path / "model.plan", tensorrt_major=10)
    for argument in (
        f"--onnx={tmp_path / 'model.onnx'}",
        f"--saveEngine={tmp_path / 'model.plan'}",
        "--minShapes=pixels:1x64x64x3",
        "--optShapes=pixels:32x64x64x3",
        "--maxShapes=pixels:32x64x64x3",
        "--memPoolSize=workspace:1024M",  # TENSORRT_WORKSPACE_BYTES, as the Python API sets it
        "--fp16",
    ):
        assert argument in fp16
    fp32 = trtexec_command("trtexec", spec(tmp_path, False), tmp_path / "model.plan", tensorrt_major=10)
    assert "--noTF32" in fp32 and "--fp16" not in fp32


def test_tensorrt_11_builds_fp16_from_an_fp16_graph(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["pixels"], ["y"])],
        "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 64, 64, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64, 64, 3])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
        tmp_path / "model.onnx",
    )
    command = trtexec_command("trtexec", spec(tmp_path, True), tmp_path / "model.plan", tensorrt_major=11)
    assert f"--onnx={tmp_path / 'model_fp16.onnx'}" in command and "--fp16" not in command
    assert (tmp_path / "model_fp16.onnx").is_file()


def test_tensorrt_versions_read_either_way_they_are_written():
    assert (
        tensorrt_major("10.16.1.11") == 10
        and tensorrt_major("100500") == 10
        and tensorrt_major("110000") == 11
    )


def test_there_is_one_engine_builder():
    """Only triton_repository/tensorrt_engine.py creates TensorRT networks or trtexec command lines; export
    and the production image's entry point call it (they drifted apart as two copies)."""
    builders = []
    for path in sorted(ROOT.glob("[!.]*/**/*.py")):
        if "tests" in path.parts or ".venv" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        strings = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        if "create_network" in names or any(s.startswith("--saveEngine") for s in strings):
            builders.append(path.relative_to(ROOT).as_posix())
    assert builders == ["triton_repository/tensorrt_engine.py"]
    for caller in ("export/tensorrt_build.py", "serving/docker/trt_plan.py"):
        assert "tensorrt_engine" in (ROOT / caller).read_text(), caller
