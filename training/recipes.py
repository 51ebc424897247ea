"""Named training recipes for `alexnet train --recipe NAME`: each value in one place, cited to its source.

- `paper`: Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional Neural
  Networks", NIPS 2012 (section numbers below are that paper's).
- `torchvision`: how torchvision trained its AlexNet weights, per pytorch/vision
  references/classification/README.md (its table of default parameters, and "AlexNet and VGG":
  `torchrun --nproc_per_node=8 train.py --model alexnet --lr 1e-2`) and train.py's defaults.
- `quickstart`: this project's digits defaults (docs/training.md), the default recipe.
- `fashion-mnist`: this project's Fashion-MNIST settings (docs/training.md), the default with
  `--data fashion-mnist`. The bar it clears: the data set's own README (Debian's dataset-fashion-mnist puts
  it in /usr/share/doc/dataset-fashion-mnist/README.md.gz) lists "AlexNet with Triplet loss" at 0.899 test
  accuracy and VGG16 at 0.935.

A recipe's values are TrainConfig fields; a flag given on the command line overrides its field. The
learning rate is per 256 images and scales linearly with the global batch (batch size x processes), so
a recipe's rate holds whatever the number of GPUs. A learning rate, weight decay and momentum belong
to their optimizer: `--optimizer` other than the recipe's drops them for that optimizer's defaults.

This module imports only the standard library, so that `alexnet train --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.errors import TrainingError

LR_REFERENCE_BATCH = 256  # --lr is the learning rate for this many images per step (linear scaling)
# The learning rate per 256 images when neither the recipe nor --lr sets one.
DEFAULT_LR = {
    "adamw": 1.2e-3,  # 3e-4 at batch 64: the quickstart's, fastest to 95% on digits in our trials
    "sgd": 0.02,  # the paper's 0.01 at batch 128 (section 5)
}
OPTIMIZER_SETTINGS = ("lr", "weight_decay", "momentum")  # they follow the optimizer they were set for

PAPER = "Krizhevsky, Sutskever, Hinton 2012"
TORCHVISION = "pytorch/vision references/classification/README.md"


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # where the value comes from


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    settings: dict[str, Setting]
    # Values that replace `settings` for one architecture, where that network needs other ones.
    for_arch: dict[str, dict[str, Setting]] = field(default_factory=dict)
    needs_data: bool = False  # written for ImageNet: --data must name the folder

    def settings_for(self, arch: str) -> dict[str, Setting]:
        return self.settings | self.for_arch.get(arch, {})

    def values(self, arch: str) -> dict[str, Any]:
        return {name: setting.value for name, setting in self.settings_for(arch).items()}


RECIPES = {
    "paper": Recipe(
        name="paper",
        source=f"{PAPER}, ImageNet Classification with Deep Convolutional Neural Networks, NIPS 2012",
        needs_data=True,
        settings={
            "arch": Setting("paper", "section 3: LRN, overlapping pooling, two GPU columns"),
            "init_scheme": Setting("paper", "section 5: weights N(0, 0.01), biases 1 in conv2/4/5 and fc6/7"),
            "optimizer": Setting("sgd", "section 5: stochastic gradient descent"),
            "momentum": Setting(0.9, "section 5: momentum of 0.9"),
            "weight_decay": Setting(5e-4, "section 5: weight decay of 0.0005"),
            "batch_size": Setting(128, "section 5: a batch size of 128 examples"),
            "lr": Setting(0.02, "section 5: 0.01 at batch 128, i.e. 0.02 per 256 images"),
            "schedule": Setting("plateau", "section 5: /10 when the validation error stopped improving"),
            "max_lr_drops": Setting(3, "section 5: the learning rate was reduced three times"),
            "warmup_epochs": Setting(0.0, "section 5: the rate started at 0.01, no warm-up"),
            "epochs": Setting(90, "section 5: roughly 90 cycles through the 1.2 million images"),
            "image_size": Setting(224, "section 4.1: random 224x224 patches of the 256x256 images"),
            "augmentation": Setting("paper", "section 4.1: patches, horizontal reflections, PCA lighting"),
            "ten_crop": Setting(True, "section 4.1: ten patches at test time, softmax averaged"),
        },
    ),
    "torchvision": Recipe(
        name="torchvision",
        source=f"{TORCHVISION} (AlexNet and VGG) and train.py's defaults, 8 GPUs",
        needs_data=True,
        settings={
            "arch": Setting("torchvision", "torchvision.models.alexnet: one column, 64-192-384-256-256"),
            "init_scheme": Setting("pytorch", "torchvision's AlexNet keeps PyTorch's default initialisation"),
            "optimizer": Setting("sgd", "README table: --momentum 0.9 (train.py --opt sgd)"),
            "momentum": Setting(0.9, "README table: --momentum 0.9"),
            "weight_decay": Setting(1e-4, "README table: --wd 1e-4"),
            "batch_size": Setting(32, "README table: --batch_size 32 per GPU, on 8 GPUs: 256 in all"),
            "lr": Setting(0.01, "README, AlexNet and VGG: --lr 1e-2 for the global batch of 256"),
            "schedule": Setting("step", "README table: --lr-step-size 30 --lr-gamma 0.1"),
            "lr_step_epochs": Setting(30, "README table: --lr-step-size 30 (x0.1 every 30 epochs)"),
            "warmup_epochs": Setting(0.0, "train.py: --lr-warmup-epochs 0"),
            "epochs": Setting(90, "README table: --epochs 90"),
            "image_size": Setting(224, "train.py: --train-crop-size 224, --val-crop-size 224 (resize 256)"),
            "augmentation": Setting("torchvision", "train.py: RandomResizedCrop(224) and horizontal flip"),
            "ten_crop": Setting(False, "train.py: one centre crop"),
        },
    ),
    "quickstart": Recipe(
        name="quickstart",
        source="this project's digits trials, docs/training.md",
        settings={
            "data": Setting("digits", "embedded, no download"),
            "arch": Setting("torchvision", "the network torchvision's weights fit"),
            "init_scheme": Setting("he", "He et al. 2015: PyTorch's default stalls for epochs here"),
            "optimizer": Setting("adamw", "the fastest on digits of what was tried; SGD starts far slower"),
            "batch_size": Setting(64, "small batches: more steps per epoch on 1,437 images"),
            "schedule": Setting("cosine", "after a 1-epoch linear warm-up"),
            "warmup_epochs": Setting(1.0, "linear warm-up from 0"),
            "epochs": Setting(5, "enough for digits (docs/training.md)"),
            "image_size": Setting(64, "about the smallest both networks take (63): 8x8 scans need no more"),
            "ten_crop": Setting(False, "centre crop"),
        },
        for_arch={
            "paper": {
                "init_scheme": Setting("he", "the paper's N(0, 0.01) stays at chance on digits"),
                "epochs": Setting(3, "over 90% within 5 minutes on 2 cores (docs/training.md)"),
            },
        },
    ),
    "fashion-mnist": Recipe(
        name="fashion-mnist",
        source="this project's Fashion-MNIST trials, docs/training.md",
        settings={
            "data": Setting("fashion-mnist", "Debian's dataset-fashion-mnist: 60,000 train, 10,000 test"),
            "arch": Setting("torchvision", "the quickstart's network"),
            "init_scheme": Setting("he", "as the quickstart: He et al. 2015"),
            "optimizer": Setting("adamw", "as the quickstart"),
            "batch_size": Setting(128, "469 steps an epoch; no slower per image than 64 on a CPU"),
            "schedule": Setting("cosine", "after a half-epoch linear warm-up"),
            "warmup_epochs": Setting(0.5, "a short warm-up: 5 epochs leave little room"),
            "epochs": Setting(5, "above 91% test top-1 within them (docs/training.md)"),
            "image_size": Setting(96, "conv5 sees 5x5 (3x3 at 64 px, where pool5 keeps one position)"),
            "augmentation": Setting("flip", "mirror images (a mirrored shoe is one); shifts cost accuracy"),
            "ten_crop": Setting(False, "the whole image, resized"),
        },
    ),
}
DEFAULT_RECIPE = "quickstart"
# A data set with a recipe of its own gets it when --recipe is left out.
RECIPE_OF_DATA = {"fashion-mnist": "fashion-mnist"}


def recipe_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The settings of a new run: its recipe's values for the chosen architecture, then every flag given.

    `given` maps TrainConfig fields to the values given on the command line (None: not given).
    """
    explicit = {name: value for name, value in given.items() if value is not None}
    default = RECIPE_OF_DATA.get(explicit.get("data"), DEFAULT_RECIPE)
    recipe = find_recipe(explicit.setdefault("recipe", default))
    if recipe.needs_data and "data" not in explicit:
        raise TrainingError(
            f"--recipe {recipe.name} is ImageNet's: pass --data DIR (an ImageNet-style folder with train/ "
            "and val/), or --data digits to try it on the embedded digits"
        )
    values = recipe.values(explicit.get("arch", recipe.settings["arch"].value))
    if explicit.get("optimizer", values.get("optimizer")) != values.get("optimizer"):
        for name in OPTIMIZER_SETTINGS:
            values.pop(name, None)
    return values | explicit


def find_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise TrainingError(f"--recipe {name}: use one of {', '.join(RECIPES)}")
    return RECIPES[name]


def default_lr(optimizer: str) -> float:
    if optimizer not in DEFAULT_LR:
        raise TrainingError(f"--optimizer {optimizer}: use one of {', '.join(DEFAULT_LR)}")
    return DEFAULT_LR[optimizer]


def describe(config: dict[str, Any]) -> str:
    """The first line a run prints: its recipe's values, what the flags changed, the learning rate used.
    `config` is a TrainConfig as a dict."""
    recipe = find_recipe(config["recipe"])
    line = f"recipe {recipe.name} ({recipe.source}): {summary(recipe, config['arch'])}"
    changed = overrides(config)
    if changed:
        line += "; changed: " + ", ".join(f"{name} {value}" for name, value in changed.items())
    lr = config["lr"] if config["lr"] is not None else default_lr(config["optimizer"])
    return line + f"; lr {lr:g} per {LR_REFERENCE_BATCH} images"


def recipe_record(config: dict[str, Any]) -> dict[str, Any]:
    """What model.json's `training` says of the recipe."""
    return {
        "recipe": config["recipe"],
        "recipe_source": find_recipe(config["recipe"]).source,
        "recipe_overrides": overrides(config),
    }


def overrides(config: dict[str, Any]) -> dict[str, Any]:
    """The run's values that differ from its recipe's: the flags that changed it. (A value dropped with the
    optimizer is None, the optimizer's default, and not listed.)"""
    values = find_recipe(config["recipe"]).values(config["arch"])
    return {
        name: config[name]
        for name, value in values.items()
        if config.get(name) is not None and config[name] != value
    }


def summary(recipe: Recipe, arch: str | None = None) -> str:
    """One line of a recipe's values, as `--help` and the start of a run show them."""
    settings = recipe.settings_for(arch or recipe.settings["arch"].value)
    return ", ".join(f"{name} {_shown(setting.value)}" for name, setting in settings.items())


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text() -> str:
    """--recipe's help: every recipe's values, from the table above, as the flags that set them."""
    return "; ".join(_help_line(recipe) for recipe in RECIPES.values())


def _help_line(recipe: Recipe) -> str:
    default = " (default)" if recipe.name == DEFAULT_RECIPE else ""
    line = f"{recipe.name}{default}: {help_summary(recipe.settings)}"
    for arch, settings in recipe.for_arch.items():
        line += f" (with --arch {arch}: {help_summary(settings)})"
    return line


# Settings that no flag sets, in words (the others read as the flag that sets them: `--epochs 90`).
_IN_WORDS = {
    "init_scheme": {
        "paper": "the paper's initialisation",
        "pytorch": "PyTorch's default initialisation",
        "he": "He initialisation",
    },
    "momentum": "momentum {:g}",
    "weight_decay": "weight decay {:g}",
    "warmup_epochs": "{:g} warm-up epoch(s)",
}


def help_summary(settings: dict[str, Setting]) -> str:
    """Recipe values in a user's words: the flag that sets each (`--batch-size 128`), or a few words."""
    return ", ".join(_in_words(name, setting.value) for name, setting in settings.items())


def _in_words(name: str, value: Any) -> str:
    words = _IN_WORDS.get(name)
    if isinstance(words, dict):
        return words[value]
    if name == "warmup_epochs" and not value:
        return "no warm-up"
    if words is not None:
        return words.format(value)
    if name == "ten_crop":
        return "--ten-crop" if value else "--centre-crop"
    return f"--{name.replace('_', '-')} {_shown(value)}"
