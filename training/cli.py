"""`alexnet train`, `alexnet pretrained` and `alexnet bench-train`: thin layers over training.loop,
training.pretrained and training.bench. torch is imported inside the commands, so `alexnet --help`
stays fast. `torchrun --nproc_per_node=N -m training ...` runs the same `train` command with DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from training import config
from training.config import TrainConfig

Architecture = Literal["torchvision", "paper"]
Device = Literal["auto", "cpu", "cuda"]
RecipeName = Literal["quickstart", "fashion-mnist", "paper", "torchvision"]
Augmentation = Literal["paper", "torchvision", "shift", "people", "shift-flip", "flip", "none"]


def option(name: str, *flags: str) -> Any:
    """The Typer option for TrainConfig's field `name`: its help from training/config.py, and what the
    setting is when the option is left out."""
    help, unset = config.option_help(name)
    help = help.replace("[", "\\[")  # rich markup
    if unset is None:
        return typer.Option(*flags, help=help)
    return typer.Option(*flags, help=f"{help}  \\[default: {unset}]", show_default=False)


def train(
    recipe: Annotated[RecipeName | None, option("recipe")] = None,
    data: Annotated[str | None, option("data")] = None,
    data_dir: Annotated[Path | None, option("data_dir")] = None,
    out: Annotated[Path | None, option("out")] = None,
    arch: Annotated[Architecture | None, option("arch")] = None,
    epochs: Annotated[int | None, option("epochs")] = None,
    batch_size: Annotated[int | None, option("batch_size")] = None,
    image_size: Annotated[int | None, option("image_size")] = None,
    lr: Annotated[float | None, option("lr")] = None,
    resume: Annotated[bool, option("resume", "--resume")] = TrainConfig.resume,
    device: Annotated[Device, option("device")] = TrainConfig.device,
    init: Annotated[Path | None, option("init")] = None,
    optimizer: Annotated[Literal["adamw", "sgd"] | None, option("optimizer")] = None,
    schedule: Annotated[Literal["cosine", "step", "plateau"] | None, option("schedule")] = None,
    lr_step_epochs: Annotated[int | None, option("lr_step_epochs")] = None,
    max_lr_drops: Annotated[int | None, option("max_lr_drops")] = None,
    augmentation: Annotated[Augmentation | None, option("augmentation")] = None,
    ten_crop: Annotated[bool | None, option("ten_crop", "--ten-crop/--centre-crop")] = None,
    workers: Annotated[int | None, option("workers")] = None,
    compile: Annotated[bool, option("compile", "--compile")] = TrainConfig.compile,
    amp: Annotated[bool, option("amp", "--amp/--no-amp")] = TrainConfig.amp,
    seed: Annotated[int | None, option("seed")] = None,
    synthetic_size: Annotated[int | None, option("synthetic_size")] = None,
) -> None:
    """Train AlexNet and write a model directory (model.safetensors + model.json) for export.

    --recipe picks the settings (printed at the start and recorded in model.json); flags override them.
    The default, quickstart, trains the full-width torchvision AlexNet on the embedded digits at 64 px,
    He-initialised, with AdamW and a cosine schedule for 5 epochs: about 98% validation top-1 in a few
    minutes on 2 CPU cores (--arch paper: the paper's network, likewise).
    --recipe paper and --recipe torchvision reproduce ImageNet training (docs/training.md).
    Each epoch writes checkpoint.pt (and checkpoint_best.pt), metrics.jsonl and TensorBoard scalars;
    Ctrl-C saves a checkpoint that --resume continues (run the same command again with --resume: under
    torchrun too, so the global batch stays the same).
    For several processes (DDP: NCCL on GPUs, gloo on CPUs): torchrun --nproc_per_node=N -m training ...

    Example: alexnet train --data digits --out runs/digits
    Example: alexnet train --data fashion-mnist --out runs/fashion-mnist
    Example: alexnet train --recipe paper --data /data/imagenet --out runs/imagenet-paper
    """
    given = dict(locals())  # the options, named as TrainConfig's fields (None: not given)
    given |= {"out": str(out or config.default_out(data)), "compile": compile or None}
    given["init"] = str(init) if init else None
    given["data_dir"] = str(data_dir) if data_dir else None
    del given["resume"]
    from training.loop import run_command

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
    from common.model_card import repository_beside

    repository = repository_beside(out)
    typer.echo(
        f"wrote {out} (torchvision AlexNet, {card.num_classes} ImageNet classes, {card.image_size} px, "
        f"trained on {card.dataset}, {accuracy}); next: alexnet export onnx --model {out} "
        f"--repository {repository}, then alexnet serve --repository {repository}"
    )


def bench_train(
    arch: Annotated[str, typer.Option(help="Comma-separated architectures to time")] = "torchvision,paper",
    device: Annotated[Device, option("device")] = TrainConfig.device,
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
    """Training throughput (images/s) of both architectures on synthetic data.

    Times forward, backward and one SGD step on a batch already on the device (no data loading); on CUDA
    in float32 and in bf16 autocast + channels_last.

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
        from common.files import write_json

        write_json(json_out, report)
        typer.echo(f"wrote {json_out}")


def figures(
    model: Annotated[
        Path, typer.Option(help="Model directory (model.safetensors + model.json) from `alexnet train`")
    ] = Path("runs/digits"),
    data: Annotated[
        str | None,
        typer.Option(
            help="Where the training and validation images are: digits, fashion-mnist, synthetic or an "
            "ImageNet-style folder  \\[default: the data set model.json names]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw the 2012 paper's Figures 3 and 4 from this model, as PNG files beside it.

    Figure 3: the first layer's kernels (the paper architecture's two GPU halves as two blocks). Figure 4:
    five validation images, each with the six training images nearest by their fc7 features; and how often
    the neighbours share the query's label, measured over the whole validation split (on a large data
    set, over 5,000 validation and 20,000 training images sampled evenly from every class).

    Example: alexnet figures --model runs/digits
    """
    from training.figures import write_figures

    typer.echo(write_figures(model, data).summary())
