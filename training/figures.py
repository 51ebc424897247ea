"""`alexnet figures`: the 2012 paper's Figures 3 and 4, drawn from your own model.

Figure 3: the first layer's kernels as a grid, each kernel stretched on its own to the full range
(torchvision's make_grid with normalize and scale_each), 16 to a row as in the paper; the `paper`
architecture's two GPU halves (the kernels conv2's two groups read) as two blocks, one above the other.
Figure 4: validation images (first column), each beside the six training images whose fc7 features
(the last hidden layer, 4096-d) are nearest in Euclidean distance, each with its label. The figure's
claim is measured over the whole validation pool: how many of those six neighbours share the query's
label. On a large data set both pools are samples drawn evenly from every class, so every query can
have neighbours of its own class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.files import atomic_write
from common.model_card import CHECKPOINT_FILE, KERNELS_FILE, NEIGHBOURS_FILE, ModelCard
from training.data import SplitImages
from training.errors import TrainingError
from training.model import Fc7Features, NormalisedPixels, first_layer_kernels, first_layer_weights

KERNELS_PER_ROW = 16  # the paper's Figure 3 is 6 rows of 16
KERNEL_ZOOM = 4  # an 11x11 kernel drawn 44x44, pixels kept square
QUERIES = 5  # rows of Figure 4
NEIGHBOURS = 6  # training images per row, as in the paper
# Figure 4's pools, sampled evenly from every class (seeded): all of the digits' 1,437 and 360; for ImageNet
# 20 training and 5 validation images of each of the 1,000 classes. The fc7 features of the pools are
# what is held in memory (20,000 x 4096 floats: 330 MB), never their pixels.
TRAIN_POOL = 20_000
QUERY_POOL = 5_000
SAMPLE_SEED = 0
DISTANCE_ROWS = 1_024  # queries per block of the distance matrix: 1,024 x 20,000 floats at a time
BATCH_SIZE = 64
GAP = 8  # pixels between Figure 3's blocks and Figure 4's columns
CAPTION = 14  # pixels under each Figure 4 tile for its label


@dataclass(frozen=True)
class KernelChange:
    """How far training moved conv1 from where it started, and how smooth the move is."""

    relative_size: float  # |after - before| / |before|
    smoothness_before: float  # neighbouring weights' correlation within a kernel (0: noise, 1: smooth)
    smoothness_after: float
    smoothness_of_change: float

    def summary(self) -> str:
        return (
            f"conv1 moved {self.relative_size:.1%} of its initial size in training; neighbouring weights "
            f"correlate {self.smoothness_of_change:.2f} in that change, {self.smoothness_after:.2f} in the "
            f"trained kernels, {self.smoothness_before:.2f} at initialisation"
        )


@dataclass(frozen=True)
class Figures:
    kernels: Path
    neighbours: Path
    agreement: float  # fraction of all validation images' 6 nearest training images with the same label
    nearest_agreement: float  # the same for the single nearest one
    validation_images: int
    training_images: int
    training_classes: int  # classes in the training pool: all of them, unless a class has no image
    kernel_change: KernelChange | None  # None where the run's initial kernels are not known

    def summary(self) -> str:
        lines = [f"wrote {self.kernels} and {self.neighbours}"]
        if self.kernel_change is not None:
            lines.append(self.kernel_change.summary())
        lines.append(
            f"nearest neighbours by fc7 ({self.validation_images} validation images among "
            f"{self.training_images} training images of {self.training_classes} classes): the nearest has "
            "the query's label for "
            f"{self.nearest_agreement:.1%}, the {NEIGHBOURS} nearest for {self.agreement:.1%}"
        )
        return "\n".join(lines)


def kernel_figure(network: torch.nn.Module, initial: torch.Tensor | None = None) -> Image.Image:
    """Figure 3: conv1's kernels, one block per group of the layer that reads them. With `initial`
    (conv1 before training), a second panel below, captioned: what training changed (after - before).
    A few epochs move conv1 little, so the kernels can look like their random start while the change is
    already structured (README.md, "What the network learned")."""
    panels = [_kernel_panel(first_layer_kernels(network))]
    if initial is None:
        return panels[0]
    change = first_layer_weights(network) - initial
    panels.append(_kernel_panel(first_layer_kernels(network, change)))
    captions = ["conv1 after training", "what training changed: after - before"]
    width = max(panel.width for panel in panels)
    figure = Image.new("RGB", (width, sum(p.height + CAPTION for p in panels) + GAP), "white")
    draw = ImageDraw.Draw(figure)
    top = 0
    for caption, panel in zip(captions, panels, strict=True):
        draw.text((2, top + 1), caption, fill="black")
        figure.paste(panel, (0, top + CAPTION))
        top += CAPTION + panel.height + GAP
    return figure


def _kernel_panel(groups: list[torch.Tensor]) -> Image.Image:
    """Each group of kernels as a grid, one above the other, each kernel stretched to the full range."""
    from torchvision.utils import make_grid

    blocks = []
    for kernels in groups:
        grid = make_grid(
            kernels, nrow=KERNELS_PER_ROW, padding=1, normalize=True, scale_each=True, pad_value=1
        )
        zoomed = (grid.shape[2] * KERNEL_ZOOM, grid.shape[1] * KERNEL_ZOOM)
        blocks.append(_to_image(grid).resize(zoomed, Image.NEAREST))
    width = max(block.width for block in blocks)
    height = sum(block.height for block in blocks) + GAP * (len(blocks) - 1)
    panel = Image.new("RGB", (width, height), "white")
    top = 0
    for block in blocks:
        panel.paste(block, (0, top))
        top += block.height + GAP
    return panel


def kernel_change(network: torch.nn.Module, initial: torch.Tensor) -> KernelChange:
    after = first_layer_weights(network)
    return KernelChange(
        relative_size=float((after - initial).norm() / initial.norm()),
        smoothness_before=smoothness(initial),
        smoothness_after=smoothness(after),
        smoothness_of_change=smoothness(after - initial),
    )


def smoothness(kernels: torch.Tensor) -> float:
    """The correlation of horizontally and vertically neighbouring weights within each kernel [K, C, h, w],
    each kernel's mean removed: about 0 for random initialisation, near 1 for smooth edges and blobs."""
    k = kernels - kernels.mean(dim=(2, 3), keepdim=True)
    pairs = (k[..., :, 1:] * k[..., :, :-1]).sum() + (k[..., 1:, :] * k[..., :-1, :]).sum()
    squares = (k[..., :, 1:] ** 2).sum() + (k[..., 1:, :] ** 2).sum()
    return float(pairs / squares)


def initial_kernels(model_dir: Path) -> torch.Tensor | None:
    """conv1 as it was before training, from the run's checkpoint; None where there is none (weights from
    `alexnet pretrained`, a model directory copied without its checkpoint, or a run from before this)."""
    path = Path(model_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError):
        return None  # a truncated checkpoint: the figure does without the change
    return checkpoint.get("run", {}).get("initial_kernels")


def _to_image(grid: torch.Tensor) -> Image.Image:
    return Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


@torch.inference_mode()
def fc7_features(
    network: torch.nn.Module, card: ModelCard, images: SplitImages, indices: np.ndarray
) -> tuple[torch.Tensor, np.ndarray]:
    """[n, 4096] fc7 features of the readable items among `indices` of a split, read a batch at a time
    and normalised as the model card says; and the indices they belong to."""
    normalise = NormalisedPixels(card.mean, card.std)
    features = Fc7Features(network).eval()
    outputs, kept = [], []
    for start in range(0, len(indices), BATCH_SIZE):
        pixels, readable = images.pixels(indices[start : start + BATCH_SIZE])
        if len(readable):
            outputs.append(features(normalise(torch.from_numpy(pixels))))
            kept.append(readable)
    if not outputs:
        return torch.zeros(0, 0), np.zeros(0, np.int64)
    return torch.cat(outputs), np.concatenate(kept)


def nearest_training_images(query: torch.Tensor, training: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """Indices [Q, k] of the k training features nearest to each query, by Euclidean distance, a block of
    queries at a time so the distance matrix never exceeds DISTANCE_ROWS rows."""
    blocks = [
        torch.cdist(query[start : start + DISTANCE_ROWS], training).topk(k, dim=1, largest=False).indices
        for start in range(0, len(query), DISTANCE_ROWS)
    ]
    return torch.cat(blocks)


def class_balanced_sample(labels: np.ndarray, limit: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """At most `limit` indices of `labels`, as evenly spread over the classes as their sizes allow, chosen
    at random within each class (seeded), in index order. All of them when there are no more than `limit`."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    # Each item's rank among its class's shuffled items: taking ranks 0, 1, 2... fills every class evenly.
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    starts = np.searchsorted(labels[order], labels[order], side="left")
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - starts
    chosen = np.lexsort((rng.random(len(labels)), rank))[:limit]
    return np.sort(chosen)


def neighbour_figure(
    query_pixels: np.ndarray,
    query_labels: np.ndarray,
    neighbour_pixels: np.ndarray,
    neighbour_labels: np.ndarray,
    labels: list[str],
) -> Image.Image:
    """Figure 4: a row per query (its image, then its neighbours' [Q, k] images), a label under each tile."""
    size = query_pixels.shape[1]
    tile = max(size, 64)
    columns = 1 + neighbour_pixels.shape[1]
    figure = Image.new("RGB", (columns * tile + GAP, len(query_pixels) * (tile + CAPTION)), "white")
    draw = ImageDraw.Draw(figure)
    rows = zip(query_pixels, query_labels, neighbour_pixels, neighbour_labels, strict=True)
    for row, (pixels, label, found_pixels, found_labels) in enumerate(rows):
        top = row * (tile + CAPTION)
        tiles = [(pixels, label)] + list(zip(found_pixels, found_labels, strict=True))
        for column, (image, image_label) in enumerate(tiles):
            left = column * tile + (GAP if column else 0)
            figure.paste(Image.fromarray(image).resize((tile, tile), Image.NEAREST), (left, top))
            colour = "black" if column == 0 or image_label == label else "red"
            draw.text((left + 2, top + tile + 1), labels[int(image_label)], fill=colour)
    return figure


def query_rows(labels: np.ndarray, classes: int, count: int = QUERIES) -> list[int]:
    """`count` validation images of classes spread over the label range: the first of each."""
    rows = []
    for wanted in np.linspace(0, classes - 1, count).round().astype(int):
        matches = np.flatnonzero(labels == wanted)
        if len(matches):
            rows.append(int(matches[0]))
    return rows or list(range(min(count, len(labels))))


def write_png(image: Image.Image, path: Path) -> Path:
    with atomic_write(path) as f:
        image.save(f, format="PNG")
    return path


def write_figures(model_dir: Path, data: str | None = None) -> Figures:
    """Both figures as PNG files in `model_dir`, from its weights and its data set's two splits."""
    from training.data import NAMED_DATA, split_images
    from training.model_dir import load_model_dir

    network, card = load_model_dir(model_dir, device="cpu")
    where = (
        f"--data {data} is not a folder"
        if data
        else (f"{model_dir} was trained on {card.dataset or 'an unknown data set'}, which is not here")
    )
    data = data or card.dataset
    if not (data in NAMED_DATA or Path(data).is_dir()):
        raise TrainingError(
            f"{where}: pass --data DIR, a folder with DIR/train/<class>/ and DIR/val/<class>/ images of "
            "the model's classes"
        )
    train, val = split_images(card, data, "train"), split_images(card, data, "val")
    train_features, train_rows = fc7_features(
        network, card, train, class_balanced_sample(train.labels, TRAIN_POOL)
    )
    val_features, val_rows = fc7_features(network, card, val, class_balanced_sample(val.labels, QUERY_POOL))
    if len(train_rows) < NEIGHBOURS or len(val_rows) == 0:
        raise TrainingError(f"{data} has too few images for Figure 4: it needs {NEIGHBOURS} training images")
    initial = initial_kernels(model_dir)
    kernels = write_png(kernel_figure(network, initial), model_dir / KERNELS_FILE)
    found = train_rows[nearest_training_images(val_features, train_features).numpy()]  # split indices
    val_labels = val.labels[val_rows]
    same = train.labels[found] == val_labels[:, np.newaxis]
    shown = query_rows(val_labels, card.num_classes)
    query_pixels, _ = val.pixels(val_rows[shown])
    neighbour_pixels = np.stack([train.pixels(found[row])[0] for row in shown])
    figure = neighbour_figure(
        query_pixels, val_labels[shown], neighbour_pixels, train.labels[found[shown]], card.labels
    )
    return Figures(
        kernels=kernels,
        neighbours=write_png(figure, model_dir / NEIGHBOURS_FILE),
        agreement=float(same.mean()),
        nearest_agreement=float(same[:, 0].mean()),
        validation_images=len(val_rows),
        training_images=len(train_rows),
        training_classes=len(np.unique(train.labels[train_rows])),
        kernel_change=None if initial is None else kernel_change(network, initial),
    )
