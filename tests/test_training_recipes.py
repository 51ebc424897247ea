"""Named training recipes: a run of the paper's or torchvision's trains as they did (the optimizer and the
learning-rate schedule it really builds), every recipe value reaches the run, the quickstart's are the
defaults, flags over recipes, the learning rate that follows the optimizer, and the record in model.json."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import torch
from fixtures_training import alexnet_in_process

from common.model_card import ARCHITECTURES, ModelCard
from training.config import TrainConfig, merge_for_resume
from training.errors import TrainingError
from training.optim import build_optimizer, build_schedule
from training.recipes import RECIPES, help_summary, recipe_settings

# Tiny runs: synthetic data, one epoch of one step.
TINY = ["--data", "synthetic", "--synthetic-size", "8", "--batch-size", "8", "--epochs", "1"]


def run_settings(recipe: str, *, world_size: int = 1, **flags: Any) -> tuple[TrainConfig, Any, Any]:
    """The config, optimizer and learning-rate schedule a run of `recipe` trains with, `flags` given on the
    command line (a tiny network: the optimizer's settings do not depend on its size)."""
    if RECIPES[recipe].needs_data:
        flags.setdefault("data", "some-folder")
    config = TrainConfig(**recipe_settings({"recipe": recipe, **flags}))
    optimizer = build_optimizer(config, torch.nn.Linear(2, 2))
    return config, optimizer, build_schedule(config, steps_per_epoch=10, world_size=world_size)


def test_the_paper_recipe_trains_as_section_5_says():
    """Section 5: SGD with momentum 0.9 and weight decay 0.0005 on batches of 128 at a rate of 0.01,
    divided by 10 when the validation error stops improving, three times; ten crops at test time."""
    config, optimizer, schedule = run_settings("paper")
    assert isinstance(optimizer, torch.optim.SGD) and config.arch == "paper"
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    assert config.batch_size == 128 and schedule.lr_at(0) == pytest.approx(0.01)
    for _ in range(20):  # the validation accuracy never improves after the first epoch
        schedule.end_of_epoch(top1=0.5)
    assert schedule.lr_at(0) == pytest.approx(0.01 * 0.1**3)  # three drops, then no more
    assert config.ten_crop and config.image_size == 224


def test_the_torchvision_recipe_trains_as_its_reference_script_on_8_gpus():
    """torchvision's references: --lr 0.01 for 8 GPUs x 32 images, momentum 0.9, weight decay 1e-4, x0.1
    every 30 epochs of 90; PyTorch's own initialisation and one centre crop."""
    config, optimizer, schedule = run_settings("torchvision", world_size=8)
    assert isinstance(optimizer, torch.optim.SGD) and config.arch == "torchvision"
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 1e-4
    steps = schedule.steps_per_epoch
    rates = [schedule.lr_at(epoch * steps) for epoch in (0, 29, 30, 60, 89)]
    assert rates == pytest.approx([0.01, 0.01, 0.001, 0.0001, 0.0001])
    assert config.epochs == 90 and config.init_scheme == "pytorch" and not config.ten_crop


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_value_reaches_the_run(name):
    """What a recipe says, for each network, is what the run is configured with (a misspelt setting fails
    to configure it at all)."""
    recipe = RECIPES[name]
    for arch in ARCHITECTURES:
        config, _, _ = run_settings(name, arch=arch)
        values = recipe.values(arch) | {"arch": arch}
        assert {field: getattr(config, field) for field in values} == values


def test_quickstart_recipe_is_the_training_defaults():
    defaults = TrainConfig()
    for name, value in RECIPES["quickstart"].values("torchvision").items():
        assert getattr(defaults, name) == value, name
    # `alexnet train --arch paper`: the same recipe, adapted where the paper network needs it.
    paper = TrainConfig(**recipe_settings({"arch": "paper"}))
    assert (paper.arch, paper.data, paper.optimizer, paper.image_size) == ("paper", "digits", "adamw", 64)
    assert (paper.init_scheme, paper.epochs) == ("he", 3)


def test_train_help_shows_every_recipe_value():
    result = alexnet_in_process("train", "--recipe", "paper", "--help")
    assert result.returncode == 0, result.stderr
    flat = re.sub(r"[\s│]", "", result.stdout)  # rich wraps the help text in a box
    for recipe in RECIPES.values():
        assert re.sub(r"\s", "", help_summary(recipe.settings)) in flat, recipe.name
    assert "init_scheme" not in flat and "warmup_epochs" not in flat  # the user's words, not field names


def test_learning_rate_default_follows_the_optimizer():
    sgd, adamw = (TrainConfig(**recipe_settings({"optimizer": name})) for name in ("sgd", "adamw"))
    assert sgd.effective_lr() == 0.02 and adamw.effective_lr() == 0.0012  # per 256 images
    assert sgd.effective_weight_decay() == 5e-4 and adamw.effective_weight_decay() == 0.05
    # A recipe's rate and decay belong to its optimizer: switching optimizer takes the other's defaults.
    paper_adamw = TrainConfig(**recipe_settings({"recipe": "paper", "data": "digits", "optimizer": "adamw"}))
    assert paper_adamw.effective_lr() == 0.0012 and paper_adamw.effective_weight_decay() == 0.05
    assert paper_adamw.epochs == 90 and paper_adamw.ten_crop  # the rest of the recipe stays
    given = {"recipe": "paper", "data": "x", "optimizer": "adamw", "lr": 1e-3}
    assert TrainConfig(**recipe_settings(given)).effective_lr() == 1e-3


def test_sgd_alone_trains_with_an_sgd_sized_learning_rate(tmp_path):
    out = tmp_path / "sgd"
    result = alexnet_in_process("train", *TINY, "--image-size", "63", "--optimizer", "sgd", "--out", str(out))
    assert result.returncode == 0, result.stderr
    training = ModelCard.load(out).training
    assert training["lr_per_256_images"] == 0.02 and training["lr"] == pytest.approx(0.02 * 8 / 256)
    assert training["recipe"] == "quickstart" and training["recipe_overrides"] == {
        "data": "synthetic", "optimizer": "sgd", "batch_size": 8, "epochs": 1, "image_size": 63,
    }  # fmt: skip
    assert "recipe quickstart" in result.stdout and "lr 0.02 per 256 images" in result.stdout


def test_paper_recipe_applied_with_flags_over_it_is_printed_and_recorded(tmp_path):
    out = tmp_path / "paper"
    result = alexnet_in_process("train", "--recipe", "paper", *TINY, "--image-size", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    first_line = result.stdout.splitlines()[0]
    assert first_line.startswith("recipe paper (Krizhevsky, Sutskever, Hinton 2012")
    assert "changed: batch_size 8, epochs 1, image_size 64" in first_line
    card = ModelCard.load(out)
    assert card.architecture == "paper"
    training = card.training
    assert training["recipe"] == "paper" and "NIPS 2012" in training["recipe_source"]
    assert training["recipe_overrides"] == {"batch_size": 8, "epochs": 1, "image_size": 64}
    assert (training["optimizer"], training["momentum"], training["weight_decay"]) == ("sgd", 0.9, 5e-4)
    assert training["lr_per_256_images"] == 0.02 and training["schedule"].startswith("plateau after 0 ")
    assert training["initialisation"].startswith("the paper's initialisation")
    assert card.metrics["epoch"] == 1


def test_imagenet_recipes_ask_for_the_data(tmp_path):
    result = alexnet_in_process("train", "--recipe", "torchvision", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "error: --recipe torchvision is ImageNet's: pass --data DIR" in result.stderr
    assert not (tmp_path / "x").exists()


def test_resume_keeps_the_recipe_it_started_with(tmp_path):
    saved = dataclasses.asdict(TrainConfig(recipe="quickstart"))
    with pytest.raises(TrainingError, match="--recipe quickstart"):
        merge_for_resume({"recipe": "paper"}, saved, tmp_path / "checkpoint.pt")
    assert merge_for_resume({"epochs": 9}, saved, tmp_path / "checkpoint.pt").recipe == "quickstart"
