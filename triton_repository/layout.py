"""Where things are in a Triton model repository: file names, tensor names, model names, version folders.

Layout for `--name alexnet`:

    REPO/alexnet/config.pbtxt, labels.txt, <version>/model.onnx        (pixels -> probabilities)
    REPO/alexnet_int8/...                                                (the same, static INT8)
    REPO/alexnet_preprocess/config.pbtxt, <version>/model.py, image_preprocessing.py
    REPO/alexnet_image/config.pbtxt, labels.txt, <version>/             (ensemble: image bytes in)
    REPO/alexnet_embedding/config.pbtxt, <version>/model.onnx           (pixels -> fc7 features)
    REPO/alexnet_embedding_image/config.pbtxt, <version>/               (ensemble: image bytes -> features)
    REPO/alexnet_trt/config.pbtxt, labels.txt, <version>/model.plan     (`alexnet export tensorrt`)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
MODEL_SOURCE_FILE = "model.py"  # what Triton's Python backend loads from a version folder
# The tensors, as the ONNX graphs, every config and the clients name them.
IMAGE_INPUT_NAME = "image"  # encoded image bytes: the preprocess model's and the ensembles' input
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
EMBEDDING_OUTPUT_NAME = "embedding"

# The Python-backend model sources, copied into version folders (Triton puts the version folder on the
# model's sys.path, so model.py imports the files beside it).
SOURCES = Path(__file__).parent
PREPROCESS_MODEL = SOURCES / "preprocess_model.py"  # `<name>_preprocess`: image bytes -> pixels
IMAGE_PREPROCESSING = SOURCES / "image_preprocessing.py"  # what it (and the classify client) runs
ONNX_SUBSTITUTE = SOURCES / "onnx_substitute.py"  # the local server's stand-in for onnxruntime/tensorrt


@dataclass(frozen=True)
class ModelNames:
    """Every model name derives from --name."""

    base: str

    @property
    def onnx(self) -> str:
        return self.base

    @property
    def int8(self) -> str:
        return f"{self.base}_int8"

    @property
    def preprocess(self) -> str:
        return f"{self.base}_preprocess"

    @property
    def image(self) -> str:
        return f"{self.base}_image"

    @property
    def trt(self) -> str:
        return f"{self.base}_trt"

    @property
    def embedding(self) -> str:
        return f"{self.base}_embedding"

    @property
    def embedding_image(self) -> str:
        return f"{self.base}_embedding_image"


# The served models beside <name> that take pixels only: export writes no ensemble and no embedding for them.
PIXELS_ONLY_SUFFIXES = (ModelNames("").int8, ModelNames("").trt)  # ("_int8", "_trt")
COMPANIONS = ("image", "embedding", "embedding_image")  # what export writes beside <name>


def companion_model(served: str, kind: str) -> str | None:
    """The model export writes beside the served model `served` for `kind` (one of COMPANIONS: "image" takes
    encoded files, the embeddings give fc7 features): `<served>_<kind>`. None for `<name>_int8` and
    `<name>_trt`, which take pixels only: there is no `alexnet_int8_image` or `alexnet_int8_embedding`."""
    if kind not in COMPANIONS:
        raise ValueError(f"unknown companion {kind!r}: one of {', '.join(COMPANIONS)}")
    if served.endswith(PIXELS_ONLY_SUFFIXES):
        return None
    return getattr(ModelNames(served), kind)


def base_model(served: str) -> str:
    """`<name>` for `<name>_int8` or `<name>_trt`; any other served name as it is."""
    for suffix in PIXELS_ONLY_SUFFIXES:
        if served.endswith(suffix):
            return served.removesuffix(suffix)
    return served


def model_dirs(repository: Path) -> list[Path]:
    """The model folders of a repository: those holding a config.pbtxt, by name."""
    return sorted(path for path in repository.iterdir() if (path / CONFIG_FILE).is_file())


def version_dirs(model_dir: Path) -> list[Path]:
    """A model's version folders (named by a positive integer), oldest first; none if it has no folder."""
    if not model_dir.is_dir():
        return []
    return sorted(
        (path for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit()),
        key=lambda path: int(path.name),
    )


def versions(model_dir: Path) -> list[int]:
    return [int(path.name) for path in version_dirs(model_dir)]


def newest_file(model_dir: Path, file_name: str) -> Path | None:
    """`file_name` in the newest version folder that holds it (what Triton serves), or None."""
    found = [version / file_name for version in version_dirs(model_dir) if (version / file_name).is_file()]
    return found[-1] if found else None


def write_preprocess_model(version_dir: Path) -> None:
    """The `<name>_preprocess` model's sources, into one of its version folders."""
    shutil.copyfile(PREPROCESS_MODEL, version_dir / MODEL_SOURCE_FILE)
    shutil.copyfile(IMAGE_PREPROCESSING, version_dir / IMAGE_PREPROCESSING.name)
