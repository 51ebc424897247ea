"""The settings of a training run: one schema, `TrainConfig`, from which `alexnet train`'s options come.

A field set by an option carries that option's help text (training/cli.py reads it from here), and
what --help says the setting is when the option is left out: the recipe's value (training/recipes.py),
the field's default, or a sentence. An option left out is None, so that the recipe, or on --resume the
checkpoint, decides. Every checkpoint stores the config; `merge_for_resume` continues it.

This module imports only the standard library, so that `alexnet train --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.model_card import MIN_IMAGE_SIZE
from training import recipes
from training.errors import TrainingError
from training.recipes import DEFAULT_RECIPE, LR_REFERENCE_BATCH, default_lr

DEFAULT_MAX_LR_DROPS = 3  # plateau: the paper reduced the rate three times (section 5)

# What --help says of an option left out (see `option`).
RECIPE = "the recipe's value"
DEFAULT = "the field's default"


def option(default: Any, help: str, *, unset: str | None = None) -> Any:
    """A TrainConfig field that `alexnet train --NAME` sets. `unset`: what the setting is when the option is
    not given: RECIPE, DEFAULT, or a sentence; None where the option has a value of its own that --help
    shows."""
    return field(default=default, metadata={"help": help, "unset": unset})


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint so `--resume` can continue it.

    The defaults are the quickstart recipe's (training/recipes.py, which cites each value): the full-width
    torchvision AlexNet on the embedded digits at 64 pixels, He-initialised, AdamW and a cosine schedule.
    """

    recipe: str = option(
        DEFAULT_RECIPE,
        "Named settings, each value cited in training/recipes.py; a flag given overrides its value. "
        + recipes.help_text(),
        unset=DEFAULT,
    )
    data: str = option(
        "digits",
        "digits (embedded, no download), fashion-mnist (Debian's dataset-fashion-mnist; its own recipe "
        "unless --recipe says otherwise), synthetic (random tensors), or an ImageNet-style folder DIR: "
        "DIR/train/<class>/ and DIR/val/<class>/ holding JPEG, PNG or WebP files (class names from the "
        "folder names, or from DIR/labels.txt or ImageNet's DIR/LOC_synset_mapping.txt: one "
        "`<folder> <name>` line per class)",
        unset=RECIPE,
    )
    data_dir: str | None = option(
        None,
        "The folder of --data fashion-mnist's four IDX files (train-images-idx3-ubyte.gz, ...)",
        unset="/usr/share/datasets/fashion-mnist, where Debian's dataset-fashion-mnist puts them",
    )
    out: str = option(
        "runs/digits",
        "Model directory: weights, model.json, checkpoints, metrics.jsonl, tb/",
        unset="runs/digits; runs/fashion-mnist with --data fashion-mnist",
    )
    arch: str = option(
        "torchvision",
        "torchvision (torchvision.models.alexnet, one column; loads torchvision's weights) or paper (NIPS "
        "2012: LRN and grouped convolutions, the two GPUs apart)",
        unset=RECIPE,
    )
    epochs: int = option(5, "Epochs to train", unset=RECIPE)
    batch_size: int = option(
        64, "Images per step per process (global batch = this x processes)", unset=RECIPE
    )
    image_size: int = option(64, f"Side of the square input, at least {MIN_IMAGE_SIZE}", unset=RECIPE)
    lr: float | None = option(
        None,
        f"Learning rate for a global batch of {LR_REFERENCE_BATCH}, scaled linearly to the real one (batch "
        "size x processes)",
        unset="the recipe's, else the optimizer's: "
        + ", ".join(f"{rate:g} for {name}" for name, rate in recipes.DEFAULT_LR.items()),
    )
    optimizer: str = option(
        "adamw",
        "adamw, or sgd (momentum 0.9); one other than the recipe's takes its own default learning rate and "
        "weight decay",
        unset=RECIPE,
    )
    momentum: float = 0.9  # SGD's
    weight_decay: float | None = None  # None: 5e-4 for SGD (the paper's), 0.05 for AdamW
    schedule: str = option(
        "cosine",
        "cosine, step (x0.1 every --lr-step-epochs) or plateau (x0.1 when top-1 stops improving, at most "
        "--max-lr-drops times, as in the paper), after the recipe's warm-up",
        unset=RECIPE,
    )
    lr_step_epochs: int | None = option(
        None,
        "With --schedule step: epochs between the x0.1 steps",
        unset="the recipe's (torchvision: 30), else a third of the run",
    )
    max_lr_drops: int = option(
        DEFAULT_MAX_LR_DROPS,
        "With --schedule plateau: the most times the rate is divided by 10 (the paper: three)",
        unset=DEFAULT,
    )
    warmup_epochs: float = 1.0  # linear warm-up from 0, per step
    augmentation: str | None = option(
        None,
        "Training transform: paper (random crop, flip, PCA lighting), torchvision (random resized crop, "
        "flip), shift (small translations), people (shift, and 1,000 digits drawn as people write and type "
        "them, read by the served model's digit-scan conversion), shift-flip (and horizontal flips), flip "
        "(horizontal flips only, for Fashion-MNIST) or none",
        unset="people for digits, flip for fashion-mnist, else paper or torchvision after --arch",
    )
    ten_crop: bool = option(
        False,
        "Validate on the paper's ten patches, or the centre crop",
        unset=f"the recipe's; {DEFAULT_RECIPE}: centre crop",
    )
    workers: int | None = option(
        None, "DataLoader processes per training process", unset="0 for digits/synthetic, else up to 8"
    )
    device: str = option("auto", "auto (CUDA if there is a GPU), cpu or cuda")
    amp: bool = option(True, "On CUDA: bf16 autocast (fp16 + GradScaler without bf16)")
    channels_last: bool = True  # on CUDA
    compile: bool = option(False, "torch.compile the model (pays off on GPUs)")
    init: str | None = option(
        None, "Start from a torchvision AlexNet state dict (.pth), e.g. alexnet-owt-7be5be79.pth"
    )
    init_scheme: str = "he"  # without --init: "he", "paper" (N(0, 0.01), biases 1) or "pytorch" (its default)
    seed: int = option(0, "Random seed", unset=DEFAULT)
    synthetic_size: int = option(1280, "Training images per epoch with --data synthetic", unset=DEFAULT)
    resume: bool = option(False, "Continue the run in --out from its checkpoint.pt, with its settings")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def effective_lr(self) -> float:
        """Per 256 images: the one given, else the optimizer's default (training/recipes.py)."""
        return self.lr if self.lr is not None else default_lr(self.optimizer)

    def effective_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05


def default_out(data: str | None) -> str:
    """The model directory when --out is left out: the data set's own for Fashion-MNIST, so that training it
    never replaces the digits quickstart model."""
    return "runs/fashion-mnist" if data == "fashion-mnist" else TrainConfig.out


def option_help(name: str) -> tuple[str, str | None]:
    """`--NAME`'s help text, and what it says the setting is when the option is left out (None: nothing)."""
    spec = {f.name: f for f in fields(TrainConfig)}[name]
    unset = spec.metadata["unset"]
    if unset == RECIPE:
        quickstart = recipes.RECIPES[DEFAULT_RECIPE].values("torchvision")[name]
        unset = f"the recipe's; {DEFAULT_RECIPE}: {quickstart}"
    elif unset == DEFAULT:
        unset = str(spec.default)
    return spec.metadata["help"], unset


# Settings a resumed run must share with the checkpoint: the network and what it learns from.
STRUCTURAL = ("recipe", "arch", "image_size", "data")


def merge_for_resume(given: dict[str, Any], saved: dict[str, Any], checkpoint: Path) -> TrainConfig:
    """The saved run's settings, overridden by those given now; structural ones must not change."""
    names = {f.name for f in fields(TrainConfig)}
    merged = {name: value for name, value in saved.items() if name in names}
    for name, value in given.items():
        if name not in names:
            raise TypeError(f"unknown training setting {name!r}")
        if value is None:
            continue
        if (
            name in STRUCTURAL
            and name in merged
            and _normalise(name, value) != _normalise(name, merged[name])
        ):
            flag = "--" + name.replace("_", "-")
            raise TrainingError(
                f"{checkpoint} was trained with {flag} {merged[name]}, not {value}: resume with "
                f"{flag} {merged[name]}, or start a new run in another --out folder"
            )
        merged[name] = value
    merged["resume"] = True
    return TrainConfig(**merged)


def _normalise(name: str, value: Any) -> Any:
    if name == "data" and value not in ("digits", "fashion-mnist", "synthetic"):
        return str(Path(value).expanduser().resolve())
    return value
