"""Both architectures train, torchvision-format weights load where they should (and the paper network
refuses them clearly), `alexnet pretrained` writes a usable model directory, and `bench-train` measures."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from fixtures_training import alexnet_in_process

from common.hashing import sha256_of
from common.model_card import ModelCard
from export.onnx_export import metadata_for
from training.engine import train_step
from training.model import PerGPUResponseNorm, build_model
from training.model_dir import load_model_dir
from training.optim import LRSchedule
from training.precision import Precision
from training.pretrained import published_weights, write_pretrained
from training.weights import load_torchvision_weights
from triton_repository.configs import card_parameters


@pytest.fixture(scope="module")
def torchvision_state_file(tmp_path_factory):
    """A state dict in torchvision's format (what alexnet-owt-7be5be79.pth holds), randomly initialised."""
    torch.manual_seed(1)
    reference = torchvision.models.alexnet()
    path = tmp_path_factory.mktemp("weights") / "alexnet-torchvision.pth"
    torch.save(reference.state_dict(), path)
    return path, reference.eval()


@pytest.mark.pure
@pytest.mark.parametrize("architecture", ["torchvision", "paper"])
def test_each_architecture_takes_a_training_step_at_64_pixels(architecture):
    torch.manual_seed(0)
    model = build_model(architecture, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    before = [p.detach().clone() for p in model.parameters()]
    images, labels = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    logits, loss = train_step(model, images, labels, optimizer, Precision())
    assert logits.shape == (4, 10) and torch.isfinite(loss)
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert all(changed), "every layer should get a gradient step"


@pytest.mark.pure
def test_torchvision_architecture_loads_torchvision_weights_as_they_are(torchvision_state_file):
    path, reference = torchvision_state_file
    model = build_model("torchvision", num_classes=1000)
    note = load_torchvision_weights(model, "torchvision", path)
    assert "last layer" not in note
    image = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(image), reference(image))


@pytest.mark.pure
def test_torchvision_weights_initialise_a_smaller_head_for_fine_tuning(torchvision_state_file):
    path, reference = torchvision_state_file
    model = build_model("torchvision", num_classes=10)
    note = load_torchvision_weights(model, "torchvision", path)
    assert "starts fresh for 10 classes" in note
    torch.testing.assert_close(model.features[0].weight, reference.features[0].weight)
    torch.testing.assert_close(model.classifier[4].weight, reference.classifier[4].weight)


@pytest.mark.pure
def test_paper_architecture_refuses_torchvision_weights_clearly(torchvision_state_file, tmp_path):
    path, _reference = torchvision_state_file
    out = tmp_path / "paper"
    result = alexnet_in_process(
        "train", "--arch", "paper", "--init", str(path), "--data", "synthetic", "--out", str(out)
    )
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "paper" in error and "--arch torchvision" in error
    assert not out.exists(), "a refused run must not write anything"


def test_paper_architecture_trains_and_evaluates_on_ten_crops_through_the_command_line(tmp_path):
    out = tmp_path / "paper"
    result = alexnet_in_process(
        "train", "--arch", "paper", "--data", "synthetic", "--synthetic-size", "32", "--batch-size", "16",
        "--epochs", "1", "--optimizer", "sgd", "--ten-crop", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model, card = load_model_dir(out)
    assert card.architecture == "paper" and card.num_classes == 1000 and card.training["optimizer"] == "sgd"
    # The paper's local response normalisation and two-column grouping are what was trained and saved.
    assert isinstance(model.features[2], PerGPUResponseNorm) and model.features[4].groups == 2
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["train_images"] == 32
    assert record["val_images"] == 6  # scored on ten crops each, as the paper evaluated


def test_pretrained_writes_a_model_dir_from_a_torchvision_weights_file(torchvision_state_file, tmp_path):
    path, reference = torchvision_state_file
    out = tmp_path / "imagenet"
    result = alexnet_in_process("pretrained", "--out", str(out), "--weights", str(path))
    assert result.returncode == 0, result.stderr
    model, card = load_model_dir(out)
    categories = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert card.labels == categories and len(card.labels) == 1000 and card.labels[0] == "tench"
    assert (card.image_size, card.resize_size) == (224, 256)
    assert card.mean == [0.485, 0.456, 0.406] and card.std == [0.229, 0.224, 0.225]
    assert card.architecture == "torchvision"
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference(image))
    # Randomly initialised weights are not torchvision's: of unknown origin, with no accuracy, and the
    # exported model and the served config (which the demo reads) say so.
    assert card.dataset.startswith("unknown (imported weights") and card.metrics == {}
    assert card.training["sha256"] == sha256_of(path) and "origin unknown" in card.training["provenance"]
    assert "trained on unknown (imported weights" in result.stdout and "no known accuracy" in result.stdout
    assert metadata_for(card)["dataset"] == card_parameters(card)["dataset"] == card.dataset


def test_pretrained_recognises_the_published_weights_by_their_hash(torchvision_state_file, tmp_path):
    path, _reference = torchvision_state_file
    record = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    assert published_weights() == {"7be5be79": record}  # the prefix in torchvision's file name
    # This file stands for torchvision's: a table that publishes its hash (shipping the real weights
    # is not an option).
    digest = sha256_of(path)
    card = write_pretrained(tmp_path / "published", path, published={digest[:8]: record})
    assert card.dataset == "torchvision:AlexNet_Weights.IMAGENET1K_V1"
    assert card.metrics == pytest.approx({"top1": 0.56522, "top5": 0.79066})
    assert "matches torchvision's published alexnet-owt-7be5be79.pth" in card.training["provenance"]
    # Against a table whose published hash differs in one digit, the same file is of unknown origin.
    other = digest[:7] + ("0" if digest[7] != "0" else "1")
    card = write_pretrained(tmp_path / "other", path, published={other: record})
    assert card.dataset.startswith("unknown") and card.metrics == {}


def test_pretrained_records_the_dataset_the_user_names(torchvision_state_file, tmp_path):
    path, _reference = torchvision_state_file
    out = tmp_path / "named"
    result = alexnet_in_process(
        "pretrained", "--out", str(out), "--weights", str(path), "--dataset", "places365"
    )
    assert result.returncode == 0, result.stderr
    card = ModelCard.load(out)
    assert card.dataset == "places365" and card.metrics == {}
    assert "trained on places365, as the user says (--dataset)" in card.training["provenance"]


@pytest.mark.pure
def test_pretrained_without_internet_says_to_pass_weights(tmp_path, monkeypatch):
    # An empty torch.hub cache and a proxy that refuses connections: the download fails at once.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    result = alexnet_in_process("pretrained", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "no internet? pass --weights PATH" in result.stderr
    assert not (tmp_path / "x").exists()


def test_bench_train_reports_images_per_second_for_both_architectures(tmp_path):
    report_file = tmp_path / "bench.json"
    result = alexnet_in_process(
        "bench-train", "--device", "cpu", "--batch-size", "2", "--image-size", "64", "--steps", "1",
        "--json", str(report_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    assert [row["architecture"] for row in report["results"]] == ["torchvision", "paper"]
    assert all(row["images_per_s"] > 0 and row["device"] == "cpu" for row in report["results"])
    assert "img/s" in result.stdout and "paper" in result.stdout


@pytest.mark.pure
def test_learning_rate_schedules_warm_up_then_decay():
    cosine = LRSchedule("cosine", 0.1, steps_per_epoch=10, epochs=4, warmup_epochs=1)
    assert cosine.lr_at(0) == pytest.approx(0.01) and cosine.lr_at(9) == pytest.approx(0.1)
    assert cosine.lr_at(39) < 0.001
    step = LRSchedule("step", 0.1, steps_per_epoch=10, epochs=6, warmup_epochs=0)
    assert [step.lr_at(e * 10) for e in (0, 1, 2, 4)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    plateau = LRSchedule("plateau", 0.1, steps_per_epoch=10, epochs=9, warmup_epochs=0)
    for top1 in (0.5, 0.6, 0.6, 0.6):
        plateau.end_of_epoch(top1)
    assert plateau.lr_at(50) == pytest.approx(0.01)  # two epochs without improvement: divided by 10
