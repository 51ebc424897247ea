"""`alexnet figures`: the paper's Figures 3 and 4 from the session's digits model, and Figure 4's claim."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from fixtures_training import alexnet_in_process
from PIL import Image

from common.model_card import KERNELS_FILE, MODEL_JSON, NEIGHBOURS_FILE, WEIGHTS_FILE
from training import figures
from training.figures import (
    CAPTION,
    GAP,
    KERNEL_ZOOM,
    KERNELS_PER_ROW,
    NEIGHBOURS,
    QUERIES,
    class_balanced_sample,
    kernel_figure,
    nearest_training_images,
)
from training.model import build_model


def grid_side(kernels: int, per_row: int, kernel: int = 11) -> tuple[int, int]:
    """make_grid's size with padding 1: (width, height) in pixels, before the zoom."""
    rows = -(-kernels // per_row)
    return per_row * (kernel + 1) + 1, rows * (kernel + 1) + 1


@pytest.mark.slow
def test_figures_of_the_digits_model_and_the_neighbours_claim(digits_model_dir, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in (MODEL_JSON, WEIGHTS_FILE):  # the session's model stays as it is
        os.symlink(digits_model_dir / name, model / name)
    result = alexnet_in_process("figures", "--model", str(model))
    assert result.returncode == 0, result.stderr

    kernels = Image.open(model / KERNELS_FILE)
    width, height = grid_side(64, KERNELS_PER_ROW)  # torchvision's conv1: 64 kernels, one block
    assert kernels.format == "PNG" and kernels.size == (width * KERNEL_ZOOM, height * KERNEL_ZOOM)
    neighbours = Image.open(model / NEIGHBOURS_FILE)
    tile = 64  # the model's input size
    assert neighbours.size == ((1 + NEIGHBOURS) * tile + GAP, QUERIES * (tile + CAPTION))

    # Figure 4's claim, measured over all 360 validation digits among the 1,437 training digits.
    claim = (
        r"360 validation images among 1437 training images of 10 classes\): the nearest has the query's "
        r"label for "
        rf"([\d.]+)%, the {NEIGHBOURS} nearest for ([\d.]+)%"
    )
    match = re.search(claim, result.stdout)
    assert match, result.stdout
    nearest, six = (float(value) / 100 for value in match.groups())
    assert nearest >= 0.9 and six >= 0.9, result.stdout


@pytest.mark.pure
def test_the_paper_architecture_shows_its_two_gpu_halves_as_two_blocks():
    torch.manual_seed(0)
    network = build_model("paper", num_classes=10)
    figure = np.asarray(kernel_figure(network))
    width, height = grid_side(48, KERNELS_PER_ROW)  # 96 kernels: 48 per GPU, 3 rows of 16 each
    block = height * KERNEL_ZOOM
    assert figure.shape == (2 * block + GAP, width * KERNEL_ZOOM, 3)
    assert (figure[block : block + GAP] == 255).all()  # white between the halves

    # The top block is exactly the first GPU's 48 kernels: change one of the second half's, and only the
    # bottom block changes.
    conv1 = network.features[0]
    with torch.no_grad():
        conv1.weight[48:] = torch.randn_like(conv1.weight[48:])
    changed = np.asarray(kernel_figure(network))
    assert (changed[:block] == figure[:block]).all()
    assert not (changed[block + GAP :] == figure[block + GAP :]).all()


@pytest.mark.slow
def test_figures_of_a_model_whose_data_is_elsewhere_say_what_to_pass(digits_model_dir, tmp_path):
    result = alexnet_in_process("figures", "--model", str(digits_model_dir), "--data", str(tmp_path / "none"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --data {tmp_path / 'none'} is not a folder: pass --data DIR")


@pytest.mark.slow
def test_the_kernel_figure_shows_what_training_changed_and_that_it_is_structured(digits_model_dir, tmp_path):
    """A few epochs on digits move conv1 little: the trained kernels still look like their random start,
    while the change training made is smooth (edges and blobs). The run's checkpoint knows the start."""
    model = tmp_path / "model"
    model.mkdir()
    for name in (MODEL_JSON, WEIGHTS_FILE, "checkpoint.pt"):
        os.symlink(digits_model_dir / name, model / name)
    result = alexnet_in_process("figures", "--model", str(model))
    assert result.returncode == 0, result.stderr

    width, height = grid_side(64, KERNELS_PER_ROW)
    panel = (width * KERNEL_ZOOM, height * KERNEL_ZOOM)
    assert Image.open(model / KERNELS_FILE).size == (panel[0], 2 * (CAPTION + panel[1]) + GAP)
    match = re.search(
        r"conv1 moved ([\d.]+)% of its initial size in training; neighbouring weights correlate (-?[\d.]+) "
        r"in that change, (-?[\d.]+) in the trained kernels, (-?[\d.]+) at initialisation",
        result.stdout,
    )
    assert match, result.stdout
    moved, change, _trained, initial = (float(value) for value in match.groups())
    assert 0 < moved < 100
    assert change >= 0.5 and abs(initial) <= 0.2, result.stdout  # structured change, random start


@pytest.mark.pure
def test_the_pools_take_every_class_evenly_at_random_and_the_same_each_time():
    labels = np.repeat(np.arange(1000), 30)  # ImageNet-like: sorted by class, as an image folder lists it
    chosen = class_balanced_sample(labels, 20_000)
    assert len(chosen) == 20_000 and (np.bincount(labels[chosen], minlength=1000) == 20).all()
    assert (np.diff(chosen) > 0).all()
    assert (chosen == class_balanced_sample(labels, 20_000)).all()  # seeded
    assert not (chosen == class_balanced_sample(labels, 20_000, seed=1)).all()
    assert len(set(chosen % 30)) == 30  # not the first 20 of each class: random within it

    uneven = np.array([0, 0, 1, 2, 2, 2, 2, 2, 2, 2])
    assert np.bincount(uneven[class_balanced_sample(uneven, 5)]).tolist() == [2, 1, 2]
    assert (class_balanced_sample(uneven, 50) == np.arange(10)).all()


@pytest.mark.pure
def test_neighbours_are_found_a_block_of_queries_at_a_time(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    queries, training = torch.randn(37, 16, generator=generator), torch.randn(100, 16, generator=generator)
    whole = torch.cdist(queries, training).topk(NEIGHBOURS, dim=1, largest=False).indices
    monkeypatch.setattr(figures, "DISTANCE_ROWS", 5)
    assert (nearest_training_images(queries, training) == whole).all()


def test_figure4_of_an_image_folder_draws_its_training_pool_from_every_class(tmp_path, monkeypatch):
    """An ImageNet-style folder, listed class by class, with a pool smaller than the training split: the
    pool still spans every class (the first images in folder order would span two), the same each run."""
    from common.model_card import ModelCard
    from training.model_dir import save_model_dir

    classes, per_class = 8, 4
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 1)):
        for label in range(classes):
            folder = tmp_path / "data" / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 64, (72, 72, 3), dtype=np.uint8) + np.uint8(24 * label)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    torch.manual_seed(0)
    card = ModelCard("torchvision", [f"class{i}" for i in range(classes)], 64, 72, [0.5] * 3, [0.25] * 3)
    model_dir = save_model_dir(build_model("torchvision", classes), card, tmp_path / "model")
    monkeypatch.setattr(figures, "TRAIN_POOL", classes)

    first = figures.write_figures(model_dir, str(tmp_path / "data"))
    assert (first.training_images, first.training_classes, first.validation_images) == (
        classes,
        classes,
        classes,
    )
    drawn = (model_dir / NEIGHBOURS_FILE).read_bytes()
    again = figures.write_figures(model_dir, str(tmp_path / "data"))
    assert (model_dir / NEIGHBOURS_FILE).read_bytes() == drawn and again.agreement == first.agreement
