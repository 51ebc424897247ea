"""One process or many: the device, the process group, and the few collective operations the loop needs.

`torchrun --nproc_per_node=N -m training ...` sets RANK, LOCAL_RANK and WORLD_SIZE; without them
this is a single process of world size 1 and every collective below is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from training.errors import TrainingError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 prints, logs and writes files."""
        return self.rank == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto`: CUDA where there is a GPU, else the CPU. `cuda` without a GPU is an error that says so."""
    if requested not in ("auto", "cpu", "cuda"):
        raise TrainingError(f"--device {requested}: use auto, cpu or cuda")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainingError(
            "--device cuda, but PyTorch sees no CUDA GPU on this machine (no driver, no device, or "
            "CUDA_VISIBLE_DEVICES hides it): use --device cpu, or run on a machine with an NVIDIA GPU"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise TrainingError(
            f"process {local_rank} of this node has no GPU of its own ({count} visible): "
            f"start at most {count} processes per node (torchrun --nproc_per_node={count})"
        )
    return torch.device("cuda", local_rank)


def start(requested_device: str) -> Runtime:
    """Join the process group if torchrun started us (NCCL on GPUs, gloo on CPUs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return Runtime(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], runtime: Runtime) -> list[float]:
    """Element-wise sum over ranks (float64, so image counts stay exact)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(runtime))
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True on every rank if it is true on one: so all ranks stop at the same step."""
    if not runtime.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=_collective_device(runtime))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def all_gather(value: Any, runtime: Runtime) -> list[Any]:
    """Every rank's `value`, in rank order (a list of one without torchrun)."""
    if not runtime.distributed:
        return [value]
    gathered: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def _collective_device(runtime: Runtime) -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    return runtime.device if runtime.device.type == "cuda" else torch.device("cpu")
