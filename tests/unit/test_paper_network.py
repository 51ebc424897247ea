"""The paper's network keeps its two GPUs apart where the paper did (training/model.py)."""

from __future__ import annotations

import torch

from training.model import PerGPUResponseNorm, build_model


def test_response_normalisation_never_reaches_across_the_two_gpus():
    """Channel 47 is the first GPU's last kernel map, 48 the second GPU's first: a change in 48 must not
    move 47's normalised value (one LRN over all 96 maps would: its window 45..49 spans both)."""
    norm = PerGPUResponseNorm(gpus=2)
    x = torch.rand(1, 96, 4, 4) * 10
    louder = x.clone()
    louder[:, 48] *= 50
    before, after = norm(x), norm(louder)
    assert torch.equal(before[:, :48], after[:, :48])
    assert not torch.allclose(before[:, 49], after[:, 49])  # within the second GPU it does normalise

    across = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    assert not torch.allclose(across(x)[:, 47], across(louder)[:, 47])  # what the per-GPU form avoids


def test_the_paper_network_normalises_per_gpu_after_conv1_and_conv2():
    network = build_model("paper", num_classes=10)
    norms = [m for m in network.features if isinstance(m, PerGPUResponseNorm)]
    assert len(norms) == 2 and all(norm.gpus == 2 for norm in norms)
    assert network(torch.rand(2, 3, 64, 64)).shape == (2, 10)
