"""`alexnet train`, `alexnet pretrained` and `alexnet bench-train`: thin layers over training.loop,
training.pretrained and training.bench. torch is imported inside the commands, so `alexnet --help`
stays fast. `torchrun --nproc_per_node=N -m training ...` runs the same `train` command with DDP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from training import recipes

Architecture = Literal["torchvision", "paper"]
Device = Literal["auto", "cpu", "cuda"]
RecipeName = Literal["quickstart", "paper", "torchvision"]


def _recipes_default(name: str) -> str:
    """The `[default: ...]` of a flag a recipe sets: the recipe's value (the quickstart's shown)."""
    value = recipes.RECIPES[recipes.DEFAULT_RECIPE].values("torchvision")[name]
    return f"  \\[default: the recipe's; {recipes.DEFAULT_RECIPE}: {value}]"


def _lr_default() -> str:
    by_optimizer = ", ".join(f"{rate:g} for {name}" for name, rate in recipes.DEFAULT_LR.items())
    return f"  \\[default: the recipe's, else the optimizer's: {by_optimizer}]"


def train(
    recipe: Annotated[
        RecipeName | None,
        typer.Option(
            help="Named settings, each value cited in training/recipes.py; a flag given overrides its value. "
            + recipes.help_text().replace("[", "\\[")
            + f"  \\[default: {recipes.DEFAULT_RECIPE}]",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="digits (embedded, no download), synthetic (random tensors), or an ImageNet-style folder "
            "DIR with DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (class names from the folder names, "
            "or from DIR/labels.txt: one `<folder> <name>` line per class)" + _recipes_default("data"),
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Model directory: weights, model.json, checkpoints, metrics.jsonl, tb/")
    ] = Path("runs/digits"),
    arch: Annotated[
        Architecture | None,
        typer.Option(
            help="torchvision (one weird trick; loads torchvision's weights) or paper (NeurIPS 2012: LRN, "
            "grouped convolutions)" + _recipes_default("arch"),
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs to train" + _recipes_default("epochs"), show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Images per step per process (global batch = this x processes)"
            + _recipes_default("batch_size"),
            show_default=False,
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Side of the square input, at least 63" + _recipes_default("image_size"), show_default=False
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help=f"Learning rate for a global batch of {recipes.LR_REFERENCE_BATCH}, scaled linearly to the "
            "real one (batch size x processes)" + _lr_default(),
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --out from its checkpoint.pt, with its settings"),
    ] = False,
    device: Annotated[Device, typer.Option(help="auto (CUDA if there is a GPU), cpu or cuda")] = "auto",
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from a torchvision AlexNet state dict (.pth), e.g. alexnet-owt-7be5be79.pth"
        ),
    ] = None,
    optimizer: Annotated[
        Literal["adamw", "sgd"] | None,
        typer.Option(
            help="adamw, or sgd (momentum 0.9); one other than the recipe's takes its own default "
            "learning rate and weight decay" + _recipes_default("optimizer"),
            show_default=False,
        ),
    ] = None,
    schedule: Annotated[
        Literal["cosine", "step", "plateau"] | None,
        typer.Option(
            help="cosine, step (x0.1 every third of the run) or plateau (x0.1 when top-1 stops improving, as "
            "in the paper), after the recipe's warm-up" + _recipes_default("schedule"),
            show_default=False,
        ),
    ] = None,
    augmentation: Annotated[
        Literal["paper", "torchvision", "shift", "none"] | None,
        typer.Option(
            help="Training transform: paper (random crop, flip, PCA lighting), torchvision (random resized "
            "crop, flip), shift (small translations, for digits) or none  \\[default: shift for digits, else "
            "paper or torchvision after --arch]",
            show_default=False,
        ),
    ] = None,
    ten_crop: Annotated[
        bool | None,
        typer.Option(
            "--ten-crop/--centre-crop",
            help="Validate on the paper's ten patches, or the centre crop  \\[default: the recipe's; "
            "quickstart: centre crop]",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="DataLoader processes per training process  \\[default: 0 for digits/synthetic, "
            "else up to 8]",
            show_default=False,
        ),
    ] = None,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (pays off on GPUs)")
    ] = False,
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="On CUDA: bf16 autocast (fp16 + GradScaler without bf16)")
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Random seed  \\[default: 0]", show_default=False)] = None,
    synthetic_size: Annotated[
        int | None,
        typer.Option(
            help="Training images per epoch with --data synthetic  \\[default: 1280]", show_default=False
        ),
    ] = None,
) -> None:
    """Train AlexNet and write a model directory (model.safetensors + model.json) for export.

    --recipe picks the settings (printed at the start and recorded in model.json); flags override them.
    The default, quickstart, trains the full-width torchvision AlexNet on the embedded digits at 64 px,
    He-initialised, with AdamW and a cosine schedule for 5 epochs: about 97% validation top-1 in one to
    three minutes on 2 CPU cores (--arch paper: the paper's network, likewise).
    --recipe paper and --recipe torchvision reproduce ImageNet training (docs/training.md).
    Each epoch writes checkpoint.pt (and checkpoint_best.pt), metrics.jsonl and TensorBoard scalars;
    Ctrl-C saves a checkpoint that --resume continues.
    For several processes (DDP: NCCL on GPUs, gloo on CPUs): torchrun --nproc_per_node=N -m training ...

    Example: alexnet train --data digits --out runs/digits
    Example: alexnet train --recipe paper --data /data/imagenet --out runs/imagenet-paper
    """
    from training.loop import run_command

    given = {
        "recipe": recipe, "data": data, "out": str(out), "arch": arch, "epochs": epochs,
        "batch_size": batch_size, "image_size": image_size, "lr": lr, "device": device,
        "init": str(init) if init else None, "optimizer": optimizer, "schedule": schedule,
        "augmentation": augmentation, "ten_crop": ten_crop, "workers": workers, "compile": compile or None,
        "amp": amp, "seed": seed, "synthetic_size": synthetic_size,
    }  # fmt: skip
    run_command(given, resume=resume)


def pretrained(
    out: Annotated[Path, typer.Option(help="Model directory to write (model.safetensors + model.json)")],
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Local copy of torchvision's alexnet-owt-7be5be79.pth (else torchvision downloads it), or "
            "another torchvision-format AlexNet state dict"
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="What the weights were trained on, for a file that is not torchvision's published one  "
            "\\[default: unknown origin]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write torchvision-format AlexNet weights as a model directory: 1,000 ImageNet classes, 224 px.

    The file's SHA-256 is checked against the hash torchvision publishes for its IMAGENET1K_V1 weights:
    on a match, model.json takes torchvision's record of them (class names, sizes, mean/std, published
    accuracy); any other file is recorded as of unknown origin, with no accuracy, unless --dataset names
    what it was trained on.

    Example: alexnet pretrained --out runs/imagenet --weights alexnet-owt-7be5be79.pth
    """
    from training.pretrained import write_pretrained

    card = write_pretrained(out, weights, dataset=dataset)
    accuracy = f"published top-1 {card.metrics['top1']:.1%}" if card.metrics else "no known accuracy"
    typer.echo(
        f"wrote {out} (torchvision AlexNet, {card.num_classes} ImageNet classes, {card.image_size} px, "
        f"trained on {card.dataset}, {accuracy}); next: alexnet export onnx --model {out} "
        "--repository model_repository"
    )


def bench_train(
    arch: Annotated[str, typer.Option(help="Comma-separated architectures to time")] = "torchvision,paper",
    device: Annotated[Device, typer.Option(help="auto (CUDA if there is a GPU), cpu or cuda")] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(help="Images per step  \\[default: 32 on CPU, 256 on CUDA]", show_default=False),
    ] = None,
    image_size: Annotated[int, typer.Option(help="Side of the square input")] = 224,
    steps: Annotated[
        int | None,
        typer.Option(help="Timed steps after warm-up  \\[default: 5 on CPU, 50 on CUDA]", show_default=False),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file")
    ] = None,
) -> None:
    """Training throughput (images/s) of both architectures on synthetic data (on CUDA: float32, and
    bf16 autocast + channels_last). Times forward, backward and one SGD step on a batch already on the device.

    Example: alexnet bench-train --arch torchvision,paper --image-size 224 --json bench_train.json
    """
    from common.model_card import ARCHITECTURES
    from training.bench import bench_train as run_bench
    from training.bench import format_table
    from training.errors import TrainingError

    architectures = [name.strip() for name in arch.split(",") if name.strip()]
    unknown = [name for name in architectures if name not in ARCHITECTURES]
    if unknown or not architectures:
        raise TrainingError(f"--arch {arch}: use a comma-separated list of {', '.join(ARCHITECTURES)}")
    report = run_bench(
        architectures, device=device, batch_size=batch_size, image_size=image_size, steps=steps
    )
    typer.echo(format_table(report))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(f"wrote {json_out}")


def figures(
    model: Annotated[
        Path, typer.Option(help="Model directory (model.safetensors + model.json) from `alexnet train`")
    ] = Path("runs/digits"),
    data: Annotated[
        str | None,
        typer.Option(
            help="Where the training and validation images are: digits, synthetic or an ImageNet-style "
            "folder  \\[default: the data set model.json names]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw the 2012 paper's Figure 3 (the first layer's kernels; the paper architecture's two GPU halves
    as two blocks) and Figure 4 (five validation images, each with the six training images nearest by
    their fc7 features) for this model, as PNG files beside it, and measure Figure 4's claim: how often
    the neighbours share the query's label, over the whole validation split.

    Example: alexnet figures --model runs/digits
    """
    from training.figures import write_figures

    typer.echo(write_figures(model, data).summary())
