"""The GPU paths, as far as a CPU can check them: the prepared GPU check's tiny CPU version run for real
through `make gpu-check` (its comparisons, the faults they must catch, its hard stop, what it does where
`python3` has no torch), and the parts of the GPU code whose decisions do not need a GPU (TensorRT's
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

NOT_ON_THE_GPU_MACHINE = ("tritonclient", "gradio", "pytriton", "tensorrt")


def make_gpu_check(out: Path, args: str = "", **variables: str) -> subprocess.CompletedProcess:
    """`make gpu-check` as the GPU machine runs it (PYTHONPATH=., OUT, ARGS), with the GPUs hidden: the tiny
    CPU version on every host."""
    settings = [f"{name}={value}" for name, value in {"PYTHON": sys.executable, **variables}.items()]
    return subprocess.run(
        ["make", "--no-print-directory", "gpu-check", *settings, f"ARGS={args}"],
        cwd=REPO,
        env={**os.environ, "OUT": str(out), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )


def sections_of(out: Path) -> tuple[dict, dict[str, dict]]:
    report = json.loads((out / "gpu_check.json").read_text())
    return report, {section["name"]: section for section in report["sections"]}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_gpu_check_cpu_version_runs_through_make(tmp_path: Path, digits_model_dir: Path):
    """Every part runs or says why not. The comparisons use a confident model (the session's digits model,
    which --model hands over) on real images: the validation digits and crops of two colour photographs."""
    out = tmp_path / "out"
    result = make_gpu_check(out, f"--model {digits_model_dir}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report, sections = sections_of(out)
    assert report["mode"] == "cpu" and report["passed"] and report["injected_fault"] is None, report
    from gpu_check.harness import PARTS

    assert list(sections) == list(PARTS), "every part runs, or is skipped with its reason"
    for name in ("machine", "training loop", "ddp", "inference", "onnx export", "training throughput"):
        assert sections[name]["status"] == "passed", sections[name]
    for section in sections.values():
        assert section["status"] != "skipped" or section["reason"], f"{section['name']}: skipped, no reason"
    loop = sections["training loop"]["results"]
    assert loop["epochs"] == [1, 2] and "folder" in loop["data_path"] and "JPEGs" in loop["data_path"]
    assert sections["ddp"]["results"]["max_weight_diff"] == 0.0
    inference = sections["inference"]["results"]
    assert inference["compared"]["model"] == str(digits_model_dir)
    assert inference["compared"]["median top probability, digits"] > 0.9, "a confident model"
    for key in ("float32, batch 1", "float32, batch 4"):
        assert inference[key]["digits"]["passed"] and inference[key]["photos"]["passed"], inference[key]
        assert inference[key]["digits"]["images"] == 64 and inference[key]["photos"]["images"] == 16
    onnx = sections["onnx export"]["results"]["onnxruntime cpu, batch 3"]
    assert onnx["digits"]["relative_error"] <= 1e-4 and onnx["photos"]["passed"], onnx
    assert sections["jpeg decode"]["results"]["cpu_pillow_images_per_s"] > 0
    # The GPU machine has none of these: the check must not need them, even where they are installed.
    assert not set(report["environment"]["imported"]) & set(NOT_ON_THE_GPU_MACHINE), report["environment"]
    log = (out / "gpu_check.log").read_text()
    assert "PASSED" in log and "training loop" in log
    assert "PASSED" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_an_injected_fault_fails_the_inference_and_onnx_parts(tmp_path: Path, digits_model_dir: Path):
    """The comparisons can fail: a swapped channel order (BGR pixels) in the compared side fails both parts,
    and the failure names the images and the measure that disagreed. A channel swap is invisible on grey
    digits, which is why the photographs are compared too. (The other faults' size against the bounds:
    test_the_bounds_separate_precision_noise_from_bugs.)"""
    fault = "swap-channels"
    out = tmp_path / "out"
    result = make_gpu_check(
        out, f"--inject-fault {fault} --model {digits_model_dir} --parts inference,onnx-export"
    )
    assert result.returncode != 0, result.stdout[-4000:]
    report, sections = sections_of(out)
    assert report["injected_fault"] == fault and not report["passed"]
    for name in ("inference", "onnx export"):
        reason = sections[name]["reason"]
        assert sections[name]["status"] == "failed" and "photos: logits differ by" in reason, reason
        assert "of their spread" in reason and "top-1 differs on" in reason
    inference = sections["inference"]["results"]["float32, batch 4"]
    assert inference["photos"]["relative_error"] > 0.1 and inference["photos"]["top1_disagreements"] > 0
    assert inference["digits"]["passed"], inference  # grey: the swap changes nothing
    assert "FAILED" in result.stdout and "inference: Failure: disagrees with CPU float32" in result.stdout


def test_a_fault_only_a_gpu_can_show_is_refused_on_the_cpu(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "gpu_check", "--inject-fault", "stale-graph-input",
         "--out", str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "stale-graph-input needs a GPU" in result.stderr


@pytest.mark.slow
def test_the_hard_stop_keeps_what_the_running_part_found(tmp_path: Path):
    """A part still running at the hard stop is reported failed, with the results it had. (4 s: the training
    loop's two sessions, each writing a 700 MB checkpoint, take longer on any CPU host.)"""
    result = subprocess.run(
        [sys.executable, "-m", "gpu_check", "--parts", "training-loop", "--hard-stop-s", "4",
         "--out", str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report, sections = sections_of(tmp_path)
    assert list(sections) == ["training loop"] and not report["passed"]
    loop = sections["training loop"]
    assert loop["status"] == "failed" and loop["reason"].startswith("hard stop"), loop
    assert "JPEGs" in loop["results"]["data_path"], "what the part had found before the stop"
    assert "FAILED: hard stop after 4 s" in result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_gpu_check_without_torch_says_what_to_do(tmp_path: Path):
    """Where `python3` has no torch: the project's virtual environment if there is one, else one line that
    says what to do."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages
    (bare / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bare}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}

    def make(*variables: str) -> subprocess.CompletedProcess:
        command = ["make", "--no-print-directory", "gpu-check", "ARGS=--parts machine", *variables]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    missing = make(f"VENV={tmp_path / 'no-venv'}")
    assert missing.returncode == 2 and missing.stderr.startswith("error: python3 has no torch"), (
        missing.stderr
    )
    assert "make setup" in missing.stderr and "PYTHON=" in missing.stderr
    own = [line for line in missing.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    assert own == [
        missing.stderr.splitlines()[0]
    ], "one line, beside make's own"
    venv = Path(sys.executable).parent.parent  # the environment running these tests has torch
    found = make(f"VENV={venv}")
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"PYTHONPATH=. {venv}/bin/python -m gpu_check --parts machine" in found.stdout


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
    joined = commands.replace("\\\n", " ")  # a command continued over lines with a backslash
    docker_run = next(line for line in joined.splitlines() if line.startswith("docker run"))
    assert (
        "-e ALEXNET_TRT_PLAN=build" in docker_run and "-v alexnet-trt-cache:/var/cache/alexnet" in docker_run
    )


@pytest.mark.slow
def test_the_bounds_separate_precision_noise_from_bugs(digits_model_dir: Path):
    """With a confident model on real images, bf16's noise stays within the loosest bound and every fault the
    check can inject lands far outside it (docs/gpu.md has the full table, from `--calibrate`)."""
    from gpu_check.agreement import calibrate

    _compared, results = calibrate(digits_model_dir, digits=64, photos=16)
    verdicts = {(case, agreement.images): agreement for case, agreement in results}
    for images in ("digits", "photos"):
        assert verdicts["bf16 autocast", images].passed, verdicts["bf16 autocast", images].line()
        for fault in ("wrong-mean", "stale-graph-input"):
            agreement = verdicts[fault, images]
            assert agreement.relative_error > 5 * agreement.bound, agreement.line()
    assert verdicts["swap-channels", "photos"].relative_error > 5 * verdicts["swap-channels", "photos"].bound
    assert verdicts["swap-channels", "digits"].relative_error < 1e-6, "grey digits cannot show a channel swap"
