"""`Precision`, how the forward pass runs on the device, and `to_device`, which puts a batch there in the
memory format it asks for."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class Precision:
    """How the forward pass runs: float32 on the CPU; bf16 autocast on CUDA (fp16 + scaler on old GPUs)."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False
    device_type: str = "cpu"
    # torch.compile runs the model: batches get a dynamic batch axis (and only that), so that one graph
    # serves the shorter last batch too, instead of a recompile inside the epoch's timed steps.
    compiled: bool = False

    @classmethod
    def choose(cls, device: torch.device, *, amp: bool, channels_last: bool) -> Precision:
        if device.type != "cuda":
            return cls()
        dtype = None
        scaler = None
        if amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return cls(dtype, scaler, channels_last, "cuda")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        precision = {
            None: "float32",
            torch.bfloat16: "bf16 autocast",
            torch.float16: "fp16 autocast + GradScaler",
        }
        return precision[self.dtype] + (" + channels_last" if self.channels_last else "")


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, precision: Precision):
    memory_format = (
        torch.channels_last if precision.channels_last and images.dim() == 4 else torch.contiguous_format
    )
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    if precision.compiled and images.shape[0] > 1:  # a batch of 1 always gets a graph of its own
        torch._dynamo.mark_dynamic(images, 0)
    return images, labels.to(device, non_blocking=True)
