"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 70,000 28x28 greyscale photos of ten kinds of clothing,
shoes and bags, as Debian's `dataset-fashion-mnist` package installs them (the data set's own IDX files).

    /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz   60,000 training images
    /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
    /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz    10,000 test images
    /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

Training reads them with torchvision.datasets.FashionMNIST (training/data.py). This module is the
torch-free part, so that the demo can import it: the file names, the class names, the check that says
what to install, and a numpy reader for the few test images the demo page offers as examples.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from training.errors import TrainingError

NAME = "fashion-mnist"  # what --data, model.json's `dataset` and the served config call it
APT_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package puts the files
# The classes in label order, as the data set's README and torchvision's FashionMNIST.classes name them.
LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# split -> (images, labels); "t10k" is the data set's name for its test split, which we validate on.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_SIDE = 28


def data_dir_or_default(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir else DEFAULT_DIR


def check_files(data_dir: str | Path | None = None) -> Path:
    """The folder holding the four IDX files; a TrainingError naming the package and the files if not."""
    folder = data_dir_or_default(data_dir)
    names = [name for pair in FILES.values() for name in pair]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        where = (
            f"install them with `apt-get install -y {APT_PACKAGE}` (Debian/Ubuntu), or pass --data-dir DIR"
            if folder == DEFAULT_DIR
            else f"put them there, or install Debian's {APT_PACKAGE} and leave --data-dir out"
        )
        raise TrainingError(
            f"--data {NAME}: {folder} lacks {', '.join(missing)} (Fashion-MNIST's IDX files): {where}"
        )
    return folder


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed, unsigned bytes) as a numpy array of its declared shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise TrainingError(f"{path} is not an IDX file of unsigned bytes: reinstall {APT_PACKAGE}")
    dimensions = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def examples_per_class(
    data_dir: str | Path | None = None, per_class: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` test images of each class (uint8 [N, 28, 28], light on dark) and their labels,
    class by class: the demo's examples."""
    folder = check_files(data_dir)
    images_file, labels_file = FILES["test"]
    images, labels = read_idx(folder / images_file), read_idx(folder / labels_file)
    chosen = [index for label in range(len(LABELS)) for index in np.flatnonzero(labels == label)[:per_class]]
    return images[chosen], labels[chosen].astype(np.int64)
