"""Example images the page offers to click, all from packages already installed (nothing downloaded).

Digits model: one real validation scan per class, written once as 8x8 PNGs into a cache folder
(exactly the pixels the model was validated on; the server scales them like training did).
Fashion-MNIST model: one test photo per class, as 28x28 PNGs, where Debian's dataset-fashion-mnist is.
Any other model: the photographs that ship with scikit-learn (and Gradio's own test pictures).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES_DIR = Path(tempfile.gettempdir()) / "alexnet-demo-examples"


def is_digits_model(labels: list[str], dataset: str) -> bool:
    """The embedded digits model: the sketchpad and the digit examples only make sense for it."""
    from training.digits import DIGIT_LABELS  # torch-free

    return dataset == "digits" or list(labels) == list(DIGIT_LABELS)


def is_fashion_model(labels: list[str], dataset: str) -> bool:
    from training import fashion_mnist  # torch-free

    return dataset == fashion_mnist.NAME or list(labels) == fashion_mnist.LABELS


def fashion_test_images(per_class: int = 1) -> tuple[np.ndarray, np.ndarray] | None:
    """The first `per_class` Fashion-MNIST test photos of each class (uint8 [N, 28, 28], light on dark)
    and their labels, from Debian's folder; None where the package is not installed."""
    from training import fashion_mnist  # torch-free
    from training.errors import TrainingError

    try:
        return fashion_mnist.examples_per_class(per_class=per_class)
    except TrainingError:
        return None


def fashion_example_files(folder: Path = EXAMPLES_DIR) -> list[Path]:
    """One Fashion-MNIST test photo per class as a PNG (fashion_<class index>.png), in class order; none
    where Debian's dataset-fashion-mnist is not installed."""
    found = fashion_test_images()
    if found is None:
        return []
    images, labels = found
    folder = folder / hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, label in zip(images, labels, strict=True):
        path = folder / f"fashion_{label}.png"
        if not path.is_file():
            _write_png_atomically(Image.fromarray(image, mode="L"), path)
        paths.append(path)
    return paths


def validation_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits validation split: uint8 [N, 8, 8] scans (ink bright on dark) and their int labels."""
    from training.digits import load_digits_split  # torch-free

    split = load_digits_split()
    return np.asarray(split.val_images, dtype=np.uint8), np.asarray(split.val_labels)


def digit_example_files(folder: Path = EXAMPLES_DIR, per_class: int = 1) -> list[Path]:
    """Write the first `per_class` validation scans of each digit as PNGs; return their paths, 0 to 9.

    The files live in a subfolder named after the split's content, so a changed split never reuses them.
    """
    images, labels = validation_digits()
    folder = folder / hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for digit in sorted(set(labels.tolist())):
        for position in np.flatnonzero(labels == digit)[:per_class]:
            path = folder / f"digit_{digit}_val{position}.png"
            if not path.is_file():
                _write_png_atomically(Image.fromarray(images[position], mode="L"), path)
            paths.append(path)
    return paths


def packaged_photo_files() -> list[Path]:
    """Photographs that ship inside installed packages: scikit-learn's sample images, Gradio's cheetahs."""
    candidates = []
    for package, names in (
        ("sklearn.datasets", ("images/china.jpg", "images/flower.jpg")),
        ("gradio", ("test_data/cheetah1-copy.jpg", "test_data/cheetah2.jpg")),
        ("skimage", ("data/chelsea.png", "data/coffee.png", "data/astronaut.png")),
    ):
        spec = importlib.util.find_spec(package.split(".")[0]) and importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        candidates.extend(root / name for name in names)
    return [path for path in candidates if path.is_file()]


def _write_png_atomically(image: Image.Image, path: Path) -> None:
    """Several demo processes may share the cache folder: never let one read a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
