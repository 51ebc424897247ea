"""The path most users take: torchvision's ImageNet weights, no ImageNet folder, to a served photo classifier.

A state dict in torchvision's format (random weights: the real file is a download away, and its hash is
checked elsewhere) goes through the commands `alexnet pretrained` prints, as printed, to a real Triton;
a photo no export saw comes back with five ImageNet class names, from `alexnet classify` and from the page.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_training import alexnet_in_process
from test_export import tree_digest

pytestmark = pytest.mark.slow


def imagenet_categories() -> list[str]:
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> tuple[Path, str]:
    """`alexnet pretrained` on a torchvision-format state dict: (the model directory, what it printed)."""
    import torch
    import torchvision

    folder = tmp_path_factory.mktemp("imagenet")
    torch.manual_seed(0)
    weights = folder / "alexnet-torchvision-format.pth"
    torch.save(torchvision.models.alexnet().state_dict(), weights)
    out = folder / "runs" / "imagenet"
    result = alexnet_in_process("pretrained", "--out", str(out), "--weights", str(weights))
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def printed_commands(output: str) -> list[list[str]]:
    """The `alexnet ...` commands of the "next:" line, as argument lists without the program name."""
    next_line = output.split("next:", 1)[1]
    return [shlex.split(command)[1:] for command in re.findall(r"alexnet [^,\n]+", next_line)]


@pytest.fixture(scope="module")
def served_imagenet(pretrained_run, tmp_path_factory):
    """The export command as `pretrained` printed it (no image folder anywhere), then Triton on its output."""
    from serving.server import TritonServer, free_port

    _, output = pretrained_run
    export, serve = printed_commands(output)
    assert export[:2] == ["export", "onnx"] and serve[0] == "serve", output
    assert "--calibration-data" not in export
    result = alexnet_in_process(*export)
    assert result.returncode == 0, result.stderr
    assert "crops of scikit-learn's sample photos" in result.stdout  # the parity check ran on real photos
    repository = Path(serve[serve.index("--repository") + 1])
    log_file = tmp_path_factory.mktemp("triton") / "triton.log"
    with TritonServer(
        repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), log_file=log_file
    ) as server:
        yield server, repository


def a_photo_no_export_saw() -> Path:
    """A photograph that ships with an installed package and is not among export's parity photos."""
    from demo.examples import packaged_photo_files

    photos = [path for path in packaged_photo_files() if path.parent.name != "images"]  # not scikit-learn's
    if not photos:
        pytest.skip("no packaged photograph besides scikit-learn's (Gradio's test_data ships two)")
    return photos[0]


def test_alexnet_classify_names_five_imagenet_classes_for_a_photo(served_imagenet):
    server, _ = served_imagenet
    photo = a_photo_no_export_saw()
    command = [
        sys.executable,
        "-m",
        "alexnet_cli",
        "classify",
        str(photo),
        "--url",
        server.grpc_url,
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    names = [entry["label"] for entry in answer["top"]]
    assert len(names) == 5 and set(names) <= set(imagenet_categories()), names
    scores = [entry["score"] for entry in answer["top"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1


def test_the_page_shows_imagenet_labels_and_says_the_weights_are_of_unknown_origin(served_imagenet):
    import gradio as gr
    from gradio_client import Client, handle_file

    from demo.app import build_demo, launch_demo
    from serving.client import TritonClassifier
    from serving.server import free_port

    server, repository = served_imagenet
    client = TritonClassifier(server.grpc_url, protocol="grpc")
    page = build_demo(client, repository)
    try:
        texts = " ".join(
            block.value or "" for block in page.blocks.values() if isinstance(block, gr.Markdown)
        )
        assert "These weights are of unknown origin" in texts
        url = launch_demo(page, port=free_port(), quiet=True)
        label, _details = Client(url, verbose=False).predict(
            handle_file(str(a_photo_no_export_saw())), api_name="/classify_image"
        )
        names = [entry["label"] for entry in label["confidences"]]
        assert len(names) == 5 and set(names) <= set(imagenet_categories()), names
    finally:
        page.close(verbose=False)
        client.close()


def test_an_export_the_repository_cannot_take_is_refused_before_any_work(
    pretrained_run, digits_repository, tmp_path
):
    """The ImageNet model into a repository whose `alexnet` serves the 10-class digits model: refused at
    once (nothing exported), exit 2, the repository byte-identical, and the message names both ways out."""
    model_dir, _ = pretrained_run
    repository = tmp_path / "model_repository"
    shutil.copytree(digits_repository, repository, copy_function=os.link)
    before = tree_digest(repository)
    result = alexnet_in_process("export", "onnx", "--model", str(model_dir), "--repository", str(repository))
    assert result.returncode == 2
    assert "exporting" not in result.stdout  # refused before the ONNX export began
    error = result.stderr
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert "[-1, 10]" in error and "[-1, 1000]" in error  # what is served, what this model needs
    assert "--name alexnet_imagenet" in error and f"--repository {model_dir}-repository" in error
    assert tree_digest(repository) == before
    assert not list(tmp_path.glob(".model_repository.staging-*"))


def test_int8_asks_for_the_models_own_images_before_any_work(pretrained_run, tmp_path):
    model_dir, _ = pretrained_run
    result = alexnet_in_process(
        "export", "onnx", "--model", str(model_dir), "--repository", str(tmp_path / "repo"), "--int8"
    )
    assert result.returncode == 2 and "exporting" not in result.stdout
    assert "--int8 calibrates on the model's own kind of images" in result.stderr
    assert "--calibration-data DIR" in result.stderr
    assert not (tmp_path / "repo").exists()
