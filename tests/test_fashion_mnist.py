"""Fashion-MNIST from Debian's dataset-fashion-mnist: the missing-package error, and a small subset of it
trained, exported, served by Triton and shown on the page with its ten class names (`alexnet quickstart`)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from fixtures_training import alexnet_command, alexnet_in_process

from training import fashion_mnist
from training.errors import TrainingError

SUBSET = {"train": 1200, "test": 300}  # images of each split
# Two epochs of 38 steps: about 70% top-1 on the subset's test photos (10% is chance; the quickstart's
# self-check wants 50%), in about half a minute on 2 idle cores.
SUBSET_TRAINING = ["--epochs", "2", "--batch-size", "32"]


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes, gzip-compressed, as the data set ships them."""
    header = b"\0\0\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory) -> Path:
    """The first images of each split of Debian's Fashion-MNIST, as a folder of the four IDX files."""
    try:
        source = fashion_mnist.check_files()
    except TrainingError as error:
        pytest.fail(f"{error} (`make setup-test` installs it)")
    folder = tmp_path_factory.mktemp("fashion-mnist-subset")
    for split, count in SUBSET.items():
        for name in fashion_mnist.FILES[split]:
            write_idx(folder / name, fashion_mnist.read_idx(source / name)[:count])
    return folder


@pytest.mark.pure
def test_without_the_files_one_error_line_names_the_package_and_the_files(tmp_path, monkeypatch):
    result = alexnet_in_process(
        "train", "--data", "fashion-mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "model")
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --data fashion-mnist:") and str(tmp_path) in line
    assert all(name in line for pair in fashion_mnist.FILES.values() for name in pair)
    assert "dataset-fashion-mnist" in line
    assert not (tmp_path / "model").exists()

    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", tmp_path / "absent")  # as where the package is missing
    result = alexnet_in_process("train", "--data", "fashion-mnist", "--out", str(tmp_path / "model"))
    assert result.returncode == 2
    assert "apt-get install -y dataset-fashion-mnist" in result.stderr


@pytest.mark.pure
def test_the_fashion_recipe_is_the_default_for_its_data_and_writes_its_own_folder():
    from training.config import default_out
    from training.recipes import recipe_settings

    settings = recipe_settings({"data": "fashion-mnist"})
    assert settings["recipe"] == "fashion-mnist"
    assert default_out("fashion-mnist") == "runs/fashion-mnist"


@pytest.mark.slow
def test_a_subset_is_trained_exported_served_and_shown_with_its_class_names(fashion_subset, tmp_path):
    model = tmp_path / "runs" / "fashion-mnist"
    trained = alexnet_command("train", "--data", "fashion-mnist", "--data-dir", str(fashion_subset),
                              "--out", str(model), *SUBSET_TRAINING)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert f"{SUBSET['train']} train / {SUBSET['test']} val images, 10 classes" in trained.stdout

    repository = tmp_path / "model_repository"
    ports = ["--port", "0", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    check = alexnet_command(
        "quickstart", "--check", "--data", "fashion-mnist", "--data-dir", str(fashion_subset),
        "--model-dir", str(model), "--repository", str(repository), *ports, timeout=600,
    )  # fmt: skip
    output = check.stdout + check.stderr
    assert check.returncode == 0, output
    assert "HTTP and gRPC agree" in output
    assert f"served top-1 on the {SUBSET['test']} Fashion-MNIST test photos" in output
    assert "the page classified fashion_3.png" in output  # a dress, one of the page's ten examples
    assert (repository / "alexnet" / "labels.txt").read_text().splitlines() == fashion_mnist.LABELS
