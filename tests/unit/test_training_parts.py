"""Parts of the training loop whose decisions a CPU can check on tiny networks: resuming a run whose
optimizer state was saved in another memory format than the parameters now have."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.checkpointing import CheckpointSaver, RunState, load_checkpoint
from training.config import TrainConfig
from training.distributed import Runtime
from training.optim import LRSchedule, build_optimizer, match_parameter_layout
from training.precision import Precision

STEPS = 3


def tiny_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def train(model: nn.Module, optimizer: torch.optim.Optimizer, channels_last: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        images = torch.randn(4, 3, 12, 12, generator=generator)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(images), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_a_run_resumed_with_channels_last_continues_exactly(tmp_path: Path, optimizer_name: str):
    """A run started NCHW (on the CPU) and resumed channels_last (as on a GPU) trains as if never stopped.
    The loop's fused optimizers pair state and parameters element by element in memory: without the
    conversion the CPU kernel silently updates the wrong elements (and CUDA's refuses to run)."""
    config = TrainConfig(out=str(tmp_path), optimizer=optimizer_name, lr=0.05, epochs=2)
    model = tiny_network()
    optimizer = build_optimizer(config, model)
    for group in optimizer.param_groups:
        group["lr"] = 0.01
    train(model, optimizer, channels_last=False)
    schedule = LRSchedule("cosine", 0.01, steps_per_epoch=10, epochs=2, warmup_epochs=0)
    cpu, labels = Runtime(torch.device("cpu")), ["a", "b", "c"]
    CheckpointSaver(config, cpu, labels, model, optimizer, schedule, Precision()).save(
        RunState(), epoch=0, step_in_epoch=STEPS
    )

    uninterrupted, uninterrupted_optimizer = copy.deepcopy((model, optimizer))  # one memo: still paired
    train(uninterrupted, uninterrupted_optimizer, channels_last=False)

    resumed = tiny_network().to(memory_format=torch.channels_last)
    resumed_optimizer = build_optimizer(config, resumed)
    precision = Precision(channels_last=True)
    saver = CheckpointSaver(config, cpu, labels, resumed, resumed_optimizer, schedule, precision)
    saver.restore(load_checkpoint(tmp_path / "checkpoint.pt"))
    conv = resumed[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for value in resumed_optimizer.state[conv].values():
        if value.shape == conv.shape:
            assert value.stride() == conv.stride(), "the restored state keeps the checkpoint's layout"
    train(resumed, resumed_optimizer, channels_last=True)
    for expected, got in zip(uninterrupted.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_matching_the_layout_leaves_matching_state_alone():
    model = tiny_network()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    train(model, optimizer, channels_last=False)
    assert match_parameter_layout(optimizer) == 0
    model.to(memory_format=torch.channels_last)  # in place: the optimizer's parameters change format
    assert match_parameter_layout(optimizer) == 4  # exp_avg and exp_avg_sq of the two 4-d kernels
    assert match_parameter_layout(optimizer) == 0
