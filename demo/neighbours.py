"""What the network sees: the uploaded image's nearest neighbours by the served fc7 features (the paper's
Figure 4, live), and the first-layer kernels (its Figure 3) that export wrote beside the served model.

The gallery is searched through the served `<model>_embedding` (never torch): the digits validation split
for the digits model, Fashion-MNIST test photos for a Fashion-MNIST model, else the pictures shipped with
installed packages. Their features are asked for once, at the first search.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.model_card import KERNELS_FILE  # standard library only
from demo.examples import fashion_test_images, packaged_photo_files, validation_digits
from serving.client import ServedModel, TritonClassifier
from serving.errors import ServingError
from triton_repository.image_preprocessing import prepare_image, resize_and_crop
from triton_repository.layout import companion_model

NEIGHBOURS = 6  # as many as the paper's Figure 4 shows
FASHION_GALLERY_PER_CLASS = 30  # Fashion-MNIST test photos searched, per class
SAME_IMAGE = 1e-3  # features this close to the query are the query itself, not a neighbour
TILE = 96  # gallery thumbnails of digit scans, pixels kept square


@dataclass(frozen=True)
class Gallery:
    """The searchable pictures: what the page shows for each, its label, and its served features."""

    name: str  # "validation digits", "Fashion-MNIST test photos" or "pictures from installed packages"
    pictures: list  # numpy RGB arrays or file paths, as gr.Gallery takes them
    labels: list[str]
    features: np.ndarray  # [N, D] from <model>_embedding


def enlarge(scan: np.ndarray, side: int) -> np.ndarray:
    """A small grey image (an 8x8 scan, a 28x28 photo) shown `side` pixels wide, each pixel a square."""
    return np.asarray(Image.fromarray(scan, mode="L").resize((side, side), Image.NEAREST))


def scan_pixels(scan: np.ndarray, model: ServedModel) -> np.ndarray:
    """A grey scan as the model's uint8 RGB input, the way the page classifies a drawing."""
    image = Image.fromarray(scan, mode="L").convert("RGB")
    return resize_and_crop(image, resize_size=model.resize_size, image_size=model.image_size)


def digits_gallery(client: TritonClassifier, model: ServedModel) -> Gallery:
    scans, labels = validation_digits()
    features = client.embed_pixels(np.stack([scan_pixels(scan, model) for scan in scans]))
    pictures = [enlarge(scan, TILE) for scan in scans]
    return Gallery("validation digits", pictures, [model.labels[int(label)] for label in labels], features)


def fashion_gallery(client: TritonClassifier, model: ServedModel) -> Gallery:
    found = fashion_test_images(per_class=FASHION_GALLERY_PER_CLASS)
    if found is None:  # Debian's dataset-fashion-mnist is not installed where the page runs
        return photos_gallery(client, model)
    images, labels = found
    features = client.embed_pixels(np.stack([scan_pixels(image, model) for image in images]))
    pictures = [enlarge(image, TILE) for image in images]
    names = [model.labels[int(label)] for label in labels]
    return Gallery("Fashion-MNIST test photos", pictures, names, features)


def photos_gallery(client: TritonClassifier, model: ServedModel) -> Gallery:
    files = packaged_photo_files()
    size = {"resize_size": model.resize_size, "image_size": model.image_size}
    pixels = [prepare_image(path.read_bytes(), **size) for path in files]
    features = client.embed_pixels(np.stack(pixels)) if pixels else np.zeros((0, 0), np.float32)
    return Gallery("pictures from installed packages", [str(path) for path in files],
                   [path.stem.removesuffix("-copy") for path in files], features)  # fmt: skip


def serves_embedding(client: TritonClassifier, model: ServedModel) -> bool:
    """Whether Triton serves <model>_embedding (exports before it, or with --no-embedding, do not; nor is
    there one for <name>_int8 or <name>_trt)."""
    embedding = companion_model(model.name, "embedding")
    if embedding is None:
        return False
    try:
        client.max_batch_size(embedding)
    except ServingError:
        return False
    return True


def kernels_file(repository: Path | None, model: ServedModel) -> Path | None:
    """The served version's first-layer kernels, as export wrote them into the repository."""
    if repository is None:
        return None
    path = Path(repository) / model.name / model.version / KERNELS_FILE
    return path if path.is_file() else None


class NeighbourSearch:
    """Nearest gallery pictures to a query image, by Euclidean distance of the served fc7 features."""

    def __init__(self, client: TritonClassifier, model: ServedModel, kind: str) -> None:
        """`kind`: "digits", "fashion-mnist" or "photos", the gallery searched."""
        self.client, self.model, self.kind = client, model, kind
        self._gallery: Gallery | None = None
        self._lock = threading.Lock()

    @property
    def gallery(self) -> Gallery:
        with self._lock:  # the first searches may arrive together: ask Triton once
            if self._gallery is None:
                galleries = {"digits": digits_gallery, "fashion-mnist": fashion_gallery}
                build = galleries.get(self.kind, photos_gallery)
                self._gallery = build(self.client, self.model)
            return self._gallery

    def nearest(self, pixels: np.ndarray, k: int = NEIGHBOURS) -> list[tuple[object, str]]:
        """(picture, "label · distance") of the k nearest, nearest first; the query itself left out."""
        gallery = self.gallery
        query = self.client.embed_pixels(pixels[np.newaxis])[0]
        distances = np.linalg.norm(gallery.features - query, axis=1)
        order = [int(i) for i in np.argsort(distances, kind="stable") if distances[i] > SAME_IMAGE][:k]
        return [(gallery.pictures[i], f"{gallery.labels[i]} · {distances[i]:.1f}") for i in order]
