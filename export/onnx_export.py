"""PyTorch -> ONNX: the served graph takes uint8 RGB pixels and returns class probabilities.

The wrapper puts the cast, the layout change, the normalisation with the model card's mean/std and
the softmax inside the graph, so a client sends 1 byte per channel and cannot get the mean wrong.
Exported with torch.onnx's dynamo exporter at the opset it recommends, a dynamic batch axis,
checked with onnx.checker's full check (as timm/utils/onnx.py does), and stamped with the model
card's facts in the file's metadata.

One graph simplification, because it pays (measured with `alexnet bench-export`): below ~200 px the
last feature map is smaller than the 6x6 the classifier expects, and the adaptive average pool only
copies/averages it up to 6x6 before fc6 (at 64 px: one value per channel copied 36 times, and fc6
multiplies 9216 inputs that are 256 distinct numbers). Pool and fc6 are both linear, so they fold
exactly into one smaller layer: fc6's weights summed over the positions the pool spreads each input
to. At 64 px that removes 36M of AlexNet's ~94M multiply-adds and shrinks the file from 228 to 81 MB.
The parity check compares the folded graph with the unfolded PyTorch network.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from common.model_card import ModelCard
from export.errors import ExportError
from training.model import Fc7Features, NormalisedPixels
from triton_repository.layout import EMBEDDING_OUTPUT_NAME, INPUT_NAME, LABELS_FILE, OUTPUT_NAME

# A protobuf file cannot exceed 2 GiB; above this the weights go to model.onnx.data beside it.
EMBED_LIMIT_BYTES = 1_800_000_000


class PixelsToProbabilities(nn.Module):
    """uint8 [N, S, S, 3] RGB pixels -> FP32 [N, num_classes] probabilities, mean/std from the card."""

    def __init__(self, network: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.network = network
        self.normalise = NormalisedPixels(card.mean, card.std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(self.normalise(pixels)), dim=1)


class PixelsToFeatures(nn.Module):
    """uint8 [N, S, S, 3] RGB pixels -> FP32 [N, 4096] fc7 features: the same cast and normalisation as
    PixelsToProbabilities, the network up to fc7's ReLU (training.model.Fc7Features), no softmax."""

    def __init__(self, network: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.network = Fc7Features(network)
        self.normalise = NormalisedPixels(card.mean, card.std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalise(pixels))


class PoolFoldedAlexNet(nn.Module):
    """features -> flatten -> classifier whose first Linear absorbed the adaptive average pool."""

    def __init__(self, features: nn.Module, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@torch.no_grad()
def fold_average_pool(network: nn.Module, image_size: int) -> nn.Module | None:
    """The network with avgpool folded into fc6, or None where that would not make fc6 smaller."""
    pool = getattr(network, "avgpool", None)
    classifier = getattr(network, "classifier", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or not isinstance(classifier, nn.Sequential):
        return None
    channels, height, width = network.features(torch.zeros(1, 3, image_size, image_size)).shape[1:]
    positions = height * width
    # The pool as a matrix [positions, pooled positions]: pool each one-hot feature map.
    pooling = pool(torch.eye(positions).view(positions, 1, height, width)).view(positions, -1)
    if positions >= pooling.shape[1]:
        return None
    first = next(i for i, layer in enumerate(classifier) if isinstance(layer, nn.Linear))
    fc6 = classifier[first]
    weight = fc6.weight.view(fc6.out_features, channels, pooling.shape[1])
    folded = nn.Linear(channels * positions, fc6.out_features)
    folded.weight.copy_(torch.einsum("ocj,kj->ock", weight, pooling).reshape(fc6.out_features, -1))
    folded.bias.copy_(fc6.bias)
    layers = [*classifier[:first], folded, *classifier[first + 1 :]]
    return PoolFoldedAlexNet(network.features, nn.Sequential(*layers)).eval()


def export_onnx(network: nn.Module, card: ModelCard, path: Path, *, fold: bool = True) -> Path:
    """Export `network` (eval mode, CPU) wrapped in `PixelsToProbabilities` to `path`, checked and stamped.

    fold: fold the average pool into fc6 where that makes it smaller (see the module docstring).
    """
    return _export_wrapped(network, card, path, PixelsToProbabilities, OUTPUT_NAME, fold=fold)


def export_embedding_onnx(network: nn.Module, card: ModelCard, path: Path) -> Path:
    """The `alexnet_embedding` graph: uint8 pixels -> FP32 fc7 features (`PixelsToFeatures`), folded,
    checked and stamped like export_onnx's."""
    features = network.classifier[-1].in_features
    output = f"{EMBEDDING_OUTPUT_NAME}: float32 [batch, {features}] fc7 features (after its ReLU)"
    extra = {"output": output}
    return _export_wrapped(network, card, path, PixelsToFeatures, EMBEDDING_OUTPUT_NAME, extra=extra)


def _export_wrapped(
    network: nn.Module,
    card: ModelCard,
    path: Path,
    wrap: type[nn.Module],
    output_name: str,
    *,
    fold: bool = True,
    extra: dict[str, str] | None = None,
) -> Path:
    size = card.image_size
    folded = fold_average_pool(network, size) if fold else None
    wrapper = wrap(folded or network, card).eval()
    # torch.export specialises a dimension of size 0 or 1, so trace with a batch of 2.
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    external = parameter_bytes(network) > EMBED_LIMIT_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                wrapper,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_shapes={"pixels": {0: batch}},
                dynamo=True,
                external_data=external,
                optimize=True,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; all mean "this network did not export"
        raise ExportError(f"torch.onnx.export failed for the {card.architecture} network: {error}") from error
    program.save(str(path), external_data=external)
    folding = {"average_pool_folded_into_fc6": "yes" if folded is not None else "no"}
    stamp_metadata(path, card, folding | (extra or {}))
    check_onnx(path)
    return path


def parameter_bytes(network: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in network.parameters())


def metadata_for(card: ModelCard) -> dict[str, str]:
    """The model card facts stored in the ONNX file (metadata_props are strings)."""
    return {
        "architecture": card.architecture,
        "labels_file": LABELS_FILE,
        "num_classes": str(card.num_classes),
        "image_size": str(card.image_size),
        "resize_size": str(card.resize_size),
        "mean": ",".join(str(v) for v in card.mean),
        "std": ",".join(str(v) for v in card.std),
        "dataset": card.dataset,
        "source_weights_sha256": card.weights_sha256,
        "input": f"{INPUT_NAME}: uint8 [batch, {card.image_size}, {card.image_size}, 3] RGB",
        "output": f"{OUTPUT_NAME}: float32 [batch, {card.num_classes}] softmax",
    }


def stamp_metadata(path: Path, card: ModelCard, extra: dict[str, str] | None = None) -> None:
    """Write the card's facts (and `extra`) into the file's metadata_props, keeping what is there."""
    model = onnx.load(str(path), load_external_data=False)
    existing = {prop.key: prop.value for prop in model.metadata_props}
    onnx.helper.set_model_props(model, existing | metadata_for(card) | (extra or {}))
    model.doc_string = f"AlexNet ({card.architecture}) trained on {card.dataset or 'unknown data'}"
    # Weights stay where the exporter put them: re-saving the graph alone keeps the external file valid.
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def check_onnx(path: Path) -> None:
    """onnx.checker with the full check (includes strict shape inference); a failure is an ExportError."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"the exported graph {path.name} failed onnx.checker: {error}") from error


class _quiet_exporter:
    """Silence the exporter's progress lines and its deprecation chatter; errors still raise."""

    def __enter__(self) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
        self._warnings.__exit__(*exc)
