"""Named training recipes: the paper's and torchvision's values as published, the quickstart's as the
defaults, flags over recipes, the learning rate that follows the optimizer, and the record in model.json."""

from __future__ import annotations

import dataclasses
import re

import pytest
from fixtures_training import alexnet_in_process

from common.model_card import ModelCard
from training.config import TrainConfig, merge_for_resume
from training.errors import TrainingError
from training.recipes import RECIPES, help_summary, recipe_settings

# Krizhevsky, Sutskever, Hinton 2012, read from the paper (section 5 unless noted).
PAPER_AS_PUBLISHED = {
    "arch": "paper",  # section 3
    "init_scheme": "paper",  # N(0, 0.01), biases 1 in conv2/4/5 and fc6/7
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "batch_size": 128,
    "lr": 0.01 * 256 / 128,  # 0.01 at batch 128, as a rate per 256 images
    "schedule": "plateau",  # divided by 10 when the validation error stopped improving
    "max_lr_drops": 3,  # "reduced three times prior to termination"
    "warmup_epochs": 0.0,
    "epochs": 90,
    "image_size": 224,  # section 4.1
    "augmentation": "paper",  # section 4.1: crops, reflections, PCA lighting
    "ten_crop": True,  # section 4.1: ten patches at test time
}
# pytorch/vision references/classification/README.md ("AlexNet and VGG", its defaults table) and train.py.
TORCHVISION_AS_PUBLISHED = {
    "arch": "torchvision",
    "init_scheme": "pytorch",
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 32,  # per GPU, on 8 GPUs
    "lr": 0.01 * 256 / (32 * 8),
    "schedule": "step",  # x0.1 every 30 epochs of 90
    "lr_step_epochs": 30,  # --lr-step-size 30
    "warmup_epochs": 0.0,
    "epochs": 90,
    "image_size": 224,
    "augmentation": "torchvision",
    "ten_crop": False,
}
# Tiny runs: synthetic data, one epoch of one step.
TINY = ["--data", "synthetic", "--synthetic-size", "8", "--batch-size", "8", "--epochs", "1"]


def test_paper_recipe_is_the_published_one_and_cites_its_sections():
    recipe = RECIPES["paper"]
    assert recipe.values("paper") == PAPER_AS_PUBLISHED
    assert all(re.search(r"section \d", s.source) for s in recipe.settings.values()), recipe.settings


def test_torchvision_recipe_is_its_reference_scripts():
    recipe = RECIPES["torchvision"]
    assert recipe.values("torchvision") == TORCHVISION_AS_PUBLISHED
    assert all(re.search(r"README|train\.py|torchvision", s.source) for s in recipe.settings.values())


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
