"""AlexNet, in the two forms people mean by the name.

`paper`: the network of Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NIPS 2012: local response normalisation, and the two-GPU split
kept as grouped convolutions (conv2, conv4 and conv5 see only their own GPU's half of the previous
layer; conv3 sees both halves) and as per-GPU response normalisation.

`torchvision`: torchvision.models.alexnet, a single-column network of 64-192-384-256-256 kernels.
torchvision credits Krizhevsky's "One weird trick for parallelizing convolutional neural networks"
(arXiv:1404.5997, 2014), whose footnote gives 64-192-384-384-256; the 256 of conv4 comes from the
single-GPU configuration of Krizhevsky's cuda-convnet2 (layers-imagenet-1gpu.cfg), by way of the Torch
reimplementation torchvision's was ported from (pytorch/vision#463 and #704). Its state-dict keys are
torchvision's, so torchvision's IMAGENET1K_V1 weights load as they are.

Both end in an adaptive average pool to 6x6, as torchvision does, so that inputs smaller than 224
pixels (down to 63) work: the quickstart trains at 64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.model_card import ARCHITECTURES
from training.errors import TrainingError
from training.weights import load_torchvision_weights


@dataclass(frozen=True)
class AlexNetConfig:
    architecture: str = "torchvision"  # "torchvision" or "paper"
    num_classes: int = 1000  # width of the last layer
    dropout: float = 0.5  # in the two hidden fully connected layers, as in the paper


class TorchvisionAlexNet(nn.Module):
    """The 64-192-384-256-256 single-column network; keys match torchvision.models.alexnet."""

    def __init__(self, config: AlexNetConfig) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=config.dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=config.dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class PerGPUResponseNorm(nn.Module):
    """The paper's local response normalisation (section 3.3), within each GPU's half of the channels.

    The window of n=5 adjacent kernel maps runs over one GPU's maps only: the paper's GPUs exchange
    activations only at conv3 and the fully connected layers, so a map on one GPU is never normalised by
    maps on the other. One LocalResponseNorm over all 96 (or 256) channels would mix the halves at their
    boundary. The paper divides by (k + alpha * sum(a^2))^beta with k=2, n=5, alpha=1e-4, beta=0.75;
    PyTorch divides by (k + alpha / n * sum(a^2))^beta, so its alpha is the paper's times n.
    """

    def __init__(self, gpus: int = 2) -> None:
        super().__init__()
        size, alpha = 5, 1e-4
        self.gpus = gpus
        self.norm = nn.LocalResponseNorm(size=size, alpha=alpha * size, beta=0.75, k=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.norm(half) for half in x.chunk(self.gpus, dim=1)], dim=1)


class PaperAlexNet(nn.Module):
    """The 96-256-384-384-256 two-column network of the 2012 paper, columns as groups=2."""

    def __init__(self, config: AlexNetConfig) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2),  # conv1
            nn.ReLU(inplace=True),
            PerGPUResponseNorm(gpus=2),
            nn.MaxPool2d(kernel_size=3, stride=2),  # overlapping pooling: z=3, s=2
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),  # conv2
            nn.ReLU(inplace=True),
            PerGPUResponseNorm(gpus=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),  # conv3: the columns talk here
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),  # conv4
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),  # conv5
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(p=config.dropout),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(p=config.dropout),
            nn.Linear(4096, config.num_classes),  # fc8
        )
        init_as_in_paper(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def init_as_in_paper(model: nn.Module) -> None:
    """Section 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fully connected
    layers (to give the ReLUs positive inputs early), 0 elsewhere. Either architecture has those 8 layers."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8 = layers
    for layer in layers:
        nn.init.normal_(layer.weight, mean=0.0, std=0.01)
        nn.init.zeros_(layer.bias)
    for layer in (conv2, conv4, conv5, fc6, fc7):
        nn.init.ones_(layer.bias)


INIT_SCHEMES = ("he", "paper", "pytorch")


def initialise(model: nn.Module, architecture: str, *, scheme: str, weights: str | None = None) -> str:
    """Set the starting weights: torchvision-format `weights` if given, else `scheme`'s; returns how, for
    the log and model.json.

    "he" (He et al. 2015, as torchvision initialises its VGGs and ResNets) is the quickstart's: from
    scratch on digits, PyTorch's default (which shrinks the signal about sixfold per layer) stalls for
    several epochs and the paper's N(0, 0.01) stays at chance; He gets 90% validation top-1 in two.
    """
    if weights:
        return load_torchvision_weights(model, architecture, Path(weights))
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if scheme == "paper":
        init_as_in_paper(model)
        return "the paper's initialisation: weights N(0, 0.01), biases 1 in conv2/4/5 and fc6/7, else 0"
    if scheme == "pytorch":
        for layer in layers:
            layer.reset_parameters()
        return "PyTorch's default initialisation (as torchvision's AlexNet)"
    if scheme != "he":
        raise TrainingError(f"init scheme {scheme!r}: use one of {', '.join(INIT_SCHEMES)}")
    for layer in layers[:-1]:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    nn.init.normal_(layers[-1].weight, mean=0.0, std=0.01)  # small logits: start near uniform predictions
    nn.init.zeros_(layers[-1].bias)
    return "He initialisation (kaiming_normal, fan_in, ReLU gain; last layer N(0, 0.01))"


def build_model(
    architecture: str = "torchvision", num_classes: int = 1000, dropout: float = 0.5
) -> nn.Module:
    """A freshly initialised AlexNet of the given architecture."""
    config = AlexNetConfig(architecture=architecture, num_classes=num_classes, dropout=dropout)
    if architecture == "torchvision":
        return TorchvisionAlexNet(config)
    if architecture == "paper":
        return PaperAlexNet(config)
    raise TrainingError(f"unknown architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}")


# batch_norm divides by sqrt(var + eps). torch 2.11 refuses eps=0 ("batch_norm eps must be positive");
# this one vanishes in float32 against any variance in pixel units above 1e-4 (a std of 0.00004), so the
# normalisation is still exactly (x - mean) / std.
PIXEL_VARIANCE_EPS = 1e-12


class NormalisedPixels(nn.Module):
    """uint8 [N, S, S, 3] RGB pixels -> the normalised float [N, 3, S, S] the network takes, with the model
    card's mean/std: the first step of every served graph (export/onnx_export.py) and of the figures."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        # In pixel units (0-255), as the running statistics of an inference-mode batch norm.
        self.register_buffer("mean", 255.0 * torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("var", (255.0 * torch.tensor(std, dtype=torch.float32)) ** 2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Cast before the transpose: TensorRT handles uint8 only at the input and in a Cast.
        x = pixels.to(torch.float32).permute(0, 3, 1, 2)
        # (x - mean) / std as one BatchNormalization node rather than a Sub and a Div (or Mul and Add):
        # ONNX Runtime runs the INT8 graph channels-last, where a per-channel Mul/Add broadcasts over the
        # innermost 3 values and took a fifth of the INT8 model's time (docs/export.md, "INT8").
        return F.batch_norm(x, self.mean, self.var, training=False, eps=PIXEL_VARIANCE_EPS)


class Fc7Features(nn.Module):
    """The network up to fc7 and its ReLU: the 4096 features whose Euclidean neighbours the paper's
    Figure 4 shows (the last hidden layer; fc8 and its softmax left out). Shares the network's modules."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.features = network.features
        self.avgpool = getattr(network, "avgpool", nn.Identity())  # folded into fc6 in an export
        self.hidden = network.classifier[:-1]  # dropout layers are identities in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(torch.flatten(self.avgpool(self.features(x)), 1))


def first_layer_weights(network: nn.Module) -> torch.Tensor:
    """conv1's kernels [K, 3, h, w], on the CPU."""
    return next(m for m in network.modules() if isinstance(m, nn.Conv2d)).weight.detach().cpu()


def first_layer_kernels(network: nn.Module, weights: torch.Tensor | None = None) -> list[torch.Tensor]:
    """conv1's kernels [K, 3, h, w] (or `weights` of that shape), split into the groups the next
    convolution reads: the paper's two GPU halves (conv2 has groups=2), or one group for the single-column
    network."""
    conv2 = [m for m in network.modules() if isinstance(m, nn.Conv2d)][1]
    return list((first_layer_weights(network) if weights is None else weights).chunk(conv2.groups))
