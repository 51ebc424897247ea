"""The data the loop trains on: ImageNet-style folders, the embedded digits, Fashion-MNIST, or synthetic
tensors.

Every dataset yields (image tensor, label, skipped) where `skipped` counts unreadable files that
an item replaced, so the loop can report them. Folder layout (what ImageNet users already have):

    DIR/train/<class>/*.JPEG    DIR/val/<class>/*.JPEG    [DIR/labels.txt]

Class names are the folder names (sorted, as torchvision's ImageFolder does), or come from
DIR/labels.txt (or ImageNet's LOC_synset_mapping.txt): one line per class, in class order,
`<folder> [human-readable name]`.

`validation_pixels` gives export the validation images exactly as evaluation sees them, as uint8.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler

from common.model_card import ModelCard
from training import fashion_mnist, presets
from training.digits import DIGIT_LABELS, load_digits_split
from training.errors import TrainingError
from training.people_digits import training_scans

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LABEL_FILES = ("labels.txt", "LOC_synset_mapping.txt")
# Mean and standard deviation of the digits' training pixels once resized to 64 (grey, so equal per channel).
DIGITS_MEAN, DIGITS_STD = (0.3055,) * 3, (0.3247,) * 3
# The same for Fashion-MNIST's 60,000 training images (0.2860 and 0.3530 at their own 28 pixels).
FASHION_MEAN, FASHION_STD = (0.2836,) * 3, (0.3369,) * 3
# `--augmentation people` (the digits' default) adds this many digits per class drawn as people write and type
# them (the people_digits generator's training stream, never its test split), read by the digit-scan
# conversion: 1,000 beside the 1,437 scans (docs/training.md).
PEOPLE_SCANS_PER_DIGIT = 100
# The data sets named by a word rather than a folder; the small greyscale ones are resized straight to the
# model's size.
NAMED_DATA = ("digits", fashion_mnist.NAME, "synthetic")
SMALL_IMAGES = ("digits", fashion_mnist.NAME, "synthetic")
SYNTHETIC_CLASSES = 1000  # ImageNet's shape: synthetic data is for throughput runs
SYNTHETIC_SEED = 1234
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class DataSource:
    """What `--data` resolved to: the two datasets and the facts model.json records."""

    name: str  # "digits", "fashion-mnist", "synthetic" or the folder's absolute path
    train: Dataset
    val: Dataset
    labels: list[str]
    image_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str
    data_dir: str | None = None  # where fashion-mnist's files were read from
    input_conversion: str = "none"  # model.json's: "digit-scan" for the digits, whose inputs are scans


def default_resize_size(data: str, image_size: int) -> int:
    """Digits and Fashion-MNIST are tiny: resize straight to the model's size. Photos: the usual 256/224."""
    if data in SMALL_IMAGES:
        return image_size
    return round(image_size * 256 / 224)


def default_augmentation(data: str, architecture: str) -> str:
    if data == "digits":
        return "people"
    if data == fashion_mnist.NAME:
        return "flip"
    if data == "synthetic":
        return "none"
    return "paper" if architecture == "paper" else "torchvision"


def load_data(
    data: str,
    *,
    image_size: int,
    architecture: str = "torchvision",
    augmentation: str | None = None,
    ten_crop: bool = False,
    synthetic_size: int = 1280,
    data_dir: str | None = None,
) -> DataSource:
    """Resolve `--data` (digits, fashion-mnist, synthetic or an ImageNet-style folder) into train and val
    datasets. `data_dir`: where fashion-mnist's IDX files are (default: Debian's package's folder)."""
    augmentation = augmentation or default_augmentation(data, architecture)
    resize_size = default_resize_size(data, image_size)
    if data == "digits":
        mean, std, labels = DIGITS_MEAN, DIGITS_STD, list(DIGIT_LABELS)
    elif data == fashion_mnist.NAME:
        mean, std, labels = FASHION_MEAN, FASHION_STD, list(fashion_mnist.LABELS)
        data_dir = str(fashion_mnist.check_files(data_dir))
    elif data == "synthetic":
        mean, std = presets.IMAGENET_MEAN, presets.IMAGENET_STD
        labels = [f"class_{index:03d}" for index in range(SYNTHETIC_CLASSES)]
    else:
        mean, std = presets.IMAGENET_MEAN, presets.IMAGENET_STD
        root = Path(data).expanduser().resolve()
        class_folders, labels = find_classes(root)
    sizes = {"image_size": image_size, "resize_size": resize_size, "mean": mean, "std": std}
    train_tf = presets.train_transform(augmentation, **sizes)
    eval_tf = presets.ten_crop_transform(**sizes) if ten_crop else presets.eval_transform(**sizes)
    if data == "digits":
        split = load_digits_split()
        train = DigitsDataset(split.train_images, split.train_labels, train_tf)
        if augmentation == "people":
            scans, scan_labels = training_scans(PEOPLE_SCANS_PER_DIGIT)
            train = ConcatDataset([train, DigitsDataset(scans, scan_labels, train_tf)])
        val = DigitsDataset(split.val_images, split.val_labels, eval_tf)
    elif data == fashion_mnist.NAME:
        train = FashionMNISTDataset(data_dir, "train", train_tf)
        val = FashionMNISTDataset(data_dir, "test", eval_tf)
    elif data == "synthetic":
        normalise = presets.normalise_transform(mean=mean, std=std)
        train = SyntheticDataset(synthetic_size, image_size, "train", normalise)
        val = SyntheticDataset(max(1, synthetic_size // 5), image_size, "val", normalise)
    else:
        train = ImageFolderDataset(
            scan_split(root, "train", class_folders), train_tf, substitute_unreadable=True
        )
        train.check_something_readable()
        val = ImageFolderDataset(scan_split(root, "val", class_folders), eval_tf, substitute_unreadable=False)
        val.check_something_readable()
        data = str(root)
    return DataSource(
        data, train, val, labels, image_size, resize_size, mean, std, augmentation,
        data_dir=data_dir if data == fashion_mnist.NAME else None,
        input_conversion="digit-scan" if data == "digits" else "none",
    )  # fmt: skip


# --- the embedded digits --------------------------------------------------------------------------


def grey_to_pil(scan: np.ndarray) -> Image.Image:
    """A uint8 grey image (an 8x8 digit scan, a 28x28 Fashion-MNIST photo) as the RGB picture a user would
    upload."""
    return Image.fromarray(np.ascontiguousarray(scan), mode="L").convert("RGB")


class DigitsDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(grey_to_pil(self.images[index])), int(self.labels[index]), 0


# --- Fashion-MNIST ---------------------------------------------------------------------------------


def read_fashion_mnist(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] (light on dark) and int64 labels [N] of a split ("train" or "test"), read by
    torchvision.datasets.FashionMNIST. It wants all four files uncompressed under ROOT/FashionMNIST/raw/
    (where its download puts them); Debian ships them compressed, so they are unpacked into a temporary
    folder, the split is read into memory and the folder removed."""
    import gzip
    import shutil
    import tempfile

    from torchvision.datasets import FashionMNIST

    folder = fashion_mnist.check_files(data_dir)
    with tempfile.TemporaryDirectory(prefix="fashion-mnist-") as root:
        raw = Path(root) / FashionMNIST.__name__ / "raw"
        raw.mkdir(parents=True)
        for name in (name for pair in fashion_mnist.FILES.values() for name in pair):
            with gzip.open(folder / name, "rb") as packed, open(raw / name.removesuffix(".gz"), "wb") as out:
                shutil.copyfileobj(packed, out)
        try:
            dataset = FashionMNIST(root, train=split == "train", download=False)
        except (RuntimeError, OSError, ValueError) as error:
            raise TrainingError(
                f"{folder}: the {split} files cannot be read as Fashion-MNIST ({error}): reinstall "
                f"{fashion_mnist.APT_PACKAGE} or copy the files again"
            ) from error
        return dataset.data, dataset.targets.to(torch.int64)


class FashionMNISTDataset(Dataset):
    """One split of Fashion-MNIST, held in memory (47 MB for the training split)."""

    def __init__(self, data_dir: str | Path, split: str, transform: Callable) -> None:
        self.images, self.labels = read_fashion_mnist(data_dir, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(grey_to_pil(self.images[index].numpy())), int(self.labels[index]), 0


# --- synthetic data -------------------------------------------------------------------------------


class SyntheticDataset(Dataset):
    """Random uint8 pictures and labels, the same ones every time (seeded by split and index)."""

    def __init__(self, size: int, image_size: int, split: str, normalise: Callable | None = None) -> None:
        self.size, self.image_size, self.normalise = size, image_size, normalise
        self.offset = 0 if split == "train" else 10_000_000

    def __len__(self) -> int:
        return self.size

    def pixels(self, index: int) -> tuple[torch.Tensor, int]:
        """uint8 [3, S, S] and its label."""
        generator = torch.Generator().manual_seed(SYNTHETIC_SEED + self.offset + index)
        image = torch.randint(
            0, 256, (3, self.image_size, self.image_size), dtype=torch.uint8, generator=generator
        )
        label = int(torch.randint(0, SYNTHETIC_CLASSES, (), generator=generator))
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label = self.pixels(index)
        return self.normalise(image) if self.normalise else image, label, 0


# --- ImageNet-style folders -----------------------------------------------------------------------


def find_classes(root: Path) -> tuple[list[str], list[str]]:
    """(class folder names in class order, human-readable labels) for an ImageNet-style folder."""
    if not root.is_dir():
        raise TrainingError(
            f"--data {root}: no such folder. Pass `digits`, `synthetic`, or a folder with "
            "train/<class>/*.jpg and val/<class>/*.jpg"
        )
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise TrainingError(
            f"--data {root} has no train/ folder: lay it out as {root}/train/<class>/*.jpg and "
            f"{root}/val/<class>/*.jpg (the ImageNet layout)"
        )
    if not (root / "val").is_dir():
        raise TrainingError(
            f"--data {root} has no val/ folder: put the validation images in {root}/val/<class>/*.jpg "
            "with the same class folders as train/"
        )
    on_disk = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir())
    mapping = next((root / name for name in LABEL_FILES if (root / name).is_file()), None)
    if mapping is None:
        if not on_disk:
            raise TrainingError(
                f"{train_dir} has no class folders: put each class's images in {train_dir}/<class>/"
            )
        return on_disk, list(on_disk)
    folders, labels = read_label_file(mapping)
    unknown = sorted(set(on_disk) - set(folders))
    if unknown:
        raise TrainingError(
            f"{train_dir} has class folders that {mapping.name} does not list ({', '.join(unknown[:5])}): "
            f"add a line `<folder> <name>` for each to {mapping}, or remove the folders"
        )
    return folders, labels


def read_label_file(path: Path) -> tuple[list[str], list[str]]:
    folders, labels = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        folder, _, label = line.strip().partition(" ")
        folders.append(folder)
        labels.append(label.strip() or folder)
    if not folders:
        raise TrainingError(f"{path} lists no classes: write one line `<folder> <name>` per class")
    if len(set(folders)) != len(folders):
        raise TrainingError(f"{path} lists a class folder twice: each folder once, in class order")
    return folders, labels


def scan_split(root: Path, split: str, class_folders: list[str]) -> list[tuple[Path, int]]:
    """(image path, class index) for every image file under root/split/<class>/, in a stable order."""
    samples = []
    for index, folder in enumerate(class_folders):
        class_dir = root / split / folder
        if not class_dir.is_dir():
            continue
        for dirpath, _dirs, files in sorted(os.walk(class_dir, followlinks=True)):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((Path(dirpath) / name, index))
    if not samples:
        raise TrainingError(
            f"no images in {root / split}: put JPEG/PNG files in {root / split}/<class>/ "
            f"(one folder per class: {', '.join(class_folders[:3])}"
            f"{', ...' if len(class_folders) > 3 else ''})"
        )
    return samples


def read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")  # decodes fully: a truncated file fails here, not later


class ImageFolderDataset(Dataset):
    """Images from class folders. An unreadable file is counted and, for training, replaced by the next
    readable one (so every rank keeps full batches and DDP stays in step); for validation it is dropped."""

    def __init__(
        self, samples: list[tuple[Path, int]], transform: Callable, *, substitute_unreadable: bool
    ) -> None:
        self.samples, self.transform, self.substitute = samples, transform, substitute_unreadable

    def __len__(self) -> int:
        return len(self.samples)

    def check_something_readable(self) -> None:
        """Fail now, with the reason, if not a single image can be decoded."""
        first_error = None
        for path, _label in self.samples:
            try:
                read_rgb(path)
                return
            except UNREADABLE as error:
                first_error = first_error or f"{path}: {error}"
        folder = self.samples[0][0].parent.parent
        raise TrainingError(
            f"none of the {len(self.samples)} images in {folder} can be read (first: {first_error}): "
            "replace them with JPEG or PNG files"
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int]:
        skipped = 0
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = read_rgb(path)
            except UNREADABLE:
                if attempt == 0:
                    skipped = 1  # count each unreadable file once, when its own index comes up
                if not self.substitute:
                    return None, label, skipped
                continue
            return self.transform(image), label, skipped
        raise TrainingError(
            f"none of the {len(self.samples)} images can be read any more: were they deleted?"
        )


# --- loaders --------------------------------------------------------------------------------------


def collate_skipping(batch: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the readable items; count the unreadable ones."""
    skipped = sum(item[2] for item in batch)
    kept = [item for item in batch if item[0] is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    images = torch.stack([item[0] for item in kept])
    labels = torch.tensor([item[1] for item in kept], dtype=torch.int64)
    return images, labels, skipped


class ShardSampler(Sampler[int]):
    """Rank r evaluates items r, r + W, r + 2W, ...: every item exactly once, none padded or repeated."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableSampler(Sampler[int]):
    """A per-epoch seeded shuffle (DistributedSampler's, also for one process) that can skip what an
    interrupted epoch already trained on."""

    def __init__(self, dataset: Dataset, *, rank: int, world_size: int, seed: int) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def make_loaders(
    source: DataSource,
    *,
    batch_size: int,
    workers: int,
    rank: int,
    world_size: int,
    seed: int,
    pin_memory: bool,
) -> tuple[DataLoader, DataLoader]:
    """Train loader (shuffled per epoch, sharded across ranks) and validation loader (sharded, in order)."""
    common = {"num_workers": workers, "pin_memory": pin_memory, "collate_fn": collate_skipping}
    if workers > 0:
        common.update(prefetch_factor=4, worker_init_fn=_leave_ctrl_c_to_the_trainer)
    train_sampler = ResumableSampler(source.train, rank=rank, world_size=world_size, seed=seed)
    # Worker seeds come from this generator, reseeded every epoch, so a resumed epoch augments alike.
    train = DataLoader(
        source.train, batch_size=batch_size, sampler=train_sampler, generator=torch.Generator(), **common
    )
    val = DataLoader(
        source.val, batch_size=batch_size, sampler=ShardSampler(len(source.val), rank, world_size), **common
    )
    return train, val


def _leave_ctrl_c_to_the_trainer(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; a worker that died of it would break the loader while the
    # training process is still finishing its step and saving a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers(data: str, world_size: int) -> int:
    """In-memory data (digits, synthetic) is cheapest in the training process; files need decoders, and
    Fashion-MNIST's 60,000 images need their augmentation off the training process."""
    if data in ("digits", "synthetic"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(1, world_size)))


# --- for export: the validation images as evaluation sees them ------------------------------------


def validation_pixels(
    card: ModelCard, data: str = "digits", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, S, S, 3] RGB validation images after the evaluation resize and crop (not normalised),
    and their int64 labels. `data` is "digits", "fashion-mnist" (its test split), "synthetic" or an
    ImageNet-style folder (its val/ split)."""
    return split_pixels(card, data, "val", limit)


@dataclass(frozen=True)
class SplitImages:
    """One split of a data set as evaluation sees it, read on demand: every item's label, and any item's
    uint8 [S, S, 3] RGB pixels (None for a file that cannot be read). Listing a split reads no image, so
    a sample of a split of any size costs only the images sampled."""

    labels: np.ndarray  # int64 [N]
    read: Callable[[int], np.ndarray | None]
    image_size: int

    def pixels(self, indices: Iterable[int], limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [n, S, S, 3] pixels, int64 [n] indices) of the readable items among `indices`, in order,
        at most `limit` of them."""
        kept, pixels = [], []
        for index in indices:
            if limit is not None and len(kept) >= limit:
                break
            image = self.read(int(index))
            if image is not None:
                kept.append(int(index))
                pixels.append(image)
        size = self.image_size
        stacked = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
        return stacked, np.asarray(kept, np.int64)


def split_images(card: ModelCard, data: str, split_name: str, synthetic_size: int = 256) -> SplitImages:
    """The "train" or "val" split of `data` (digits, fashion-mnist, synthetic or an ImageNet-style folder),
    read as evaluation sees it: resized and centre-cropped to the model's size, not normalised."""
    to_pixels = presets.eval_pixels(image_size=card.image_size, resize_size=card.resize_size)
    if data == "digits":
        split = load_digits_split()
        train = split_name == "train"
        scans = split.train_images if train else split.val_images
        labels = split.train_labels if train else split.val_labels
        return SplitImages(
            np.asarray(labels, np.int64),
            lambda i: np.asarray(to_pixels(grey_to_pil(scans[i])), np.uint8),
            card.image_size,
        )
    if data == fashion_mnist.NAME:
        # Where the model was trained from (model.json), else Debian's folder.
        data_dir = card.training.get("data_dir") if card.dataset == fashion_mnist.NAME else None
        images, labels = read_fashion_mnist(data_dir, "train" if split_name == "train" else "test")
        return SplitImages(
            labels.numpy().astype(np.int64),
            lambda i: np.asarray(to_pixels(grey_to_pil(images[i].numpy())), np.uint8),
            card.image_size,
        )
    if data == "synthetic":
        dataset = SyntheticDataset(synthetic_size, card.image_size, split_name)
        labels = [dataset.pixels(index)[1] for index in range(len(dataset))]
        return SplitImages(
            np.asarray(labels, np.int64),
            lambda i: dataset.pixels(i)[0].permute(1, 2, 0).numpy(),
            card.image_size,
        )
    root = Path(data).expanduser().resolve()
    class_folders, _names = find_classes(root)
    if len(class_folders) != card.num_classes:
        raise TrainingError(
            f"{root} has {len(class_folders)} classes but the model has {card.num_classes}: "
            "pass the folder the model was trained on"
        )
    samples = scan_split(root, split_name, class_folders)

    def read(index: int) -> np.ndarray | None:
        try:
            return np.asarray(to_pixels(read_rgb(samples[index][0])), dtype=np.uint8)
        except UNREADABLE:
            return None

    return SplitImages(np.asarray([label for _, label in samples], np.int64), read, card.image_size)


def split_pixels(
    card: ModelCard, data: str, split_name: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """validation_pixels for either split ("train" or "val"): the first `limit` readable images."""
    images = split_images(card, data, split_name, synthetic_size=limit or 256)
    pixels, kept = images.pixels(range(len(images.labels)), limit)
    if not len(pixels) and data not in NAMED_DATA:
        raise TrainingError(f"no readable images in {Path(data) / split_name}: add JPEG or PNG files")
    return pixels, images.labels[kept]
