"""Export's pure parts on tiny random-weight networks: the folded pool computes what the pool did, the
in-graph normalisation is the model card's, and the parity comparison counts what differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_export import fold_average_pool
from export.parity import compare_outputs
from training.model import NormalisedPixels, build_model


@pytest.mark.parametrize("architecture", ["torchvision", "paper"])
def test_the_folded_pool_gives_the_networks_own_answers(architecture):
    torch.manual_seed(0)
    network = build_model(architecture, num_classes=10).eval()
    folded = fold_average_pool(network, image_size=64)
    assert folded is not None  # at 64 px one position is pooled up to 6x6: folding makes fc6 36x smaller
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(pixels), network(pixels), rtol=1e-4, atol=1e-5)


def test_the_pool_is_not_folded_where_that_would_not_shrink_fc6():
    network = build_model("torchvision", num_classes=10).eval()
    assert fold_average_pool(network, image_size=224) is None  # 6x6 positions pooled to 6x6


def test_normalised_pixels_are_the_cards_mean_and_std_in_channel_first_order():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    mean_, std_ = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    expected = (pixels.float().permute(0, 3, 1, 2) / 255 - mean_) / std_
    torch.testing.assert_close(NormalisedPixels(mean, std)(pixels), expected, rtol=1e-5, atol=1e-5)


def test_parity_counts_disagreements_apart_from_ties_within_tolerance():
    reference = np.array([[0.7, 0.2, 0.1], [0.5, 0.49995, 0.00005], [0.1, 0.1, 0.8]], dtype=np.float32)
    candidate = np.array([[0.7, 0.2, 0.1], [0.49995, 0.5, 0.00005], [0.8, 0.1, 0.1]], dtype=np.float32)
    check = compare_outputs("onnx", reference, candidate, tolerance=1e-4)
    assert (check.images, check.ties, check.disagreements) == (3, 1, 1)
    assert check.top1_agreement == pytest.approx(1 / 3)
    assert check.max_abs_diff == pytest.approx(0.7)
    with pytest.raises(ValueError, match="shapes differ"):
        compare_outputs("onnx", reference, candidate[:2], tolerance=1e-4)


def test_two_classes_that_swap_within_the_tolerance_are_a_tie():
    """Each score moved by less than the tolerance, yet the top two swapped: their gap was under twice it."""
    reference = np.array([[0.500075, 0.499925, 0.0]], dtype=np.float32)
    candidate = np.array([[0.49998, 0.50002, 0.0]], dtype=np.float32)
    check = compare_outputs("int8", reference, candidate, tolerance=1e-4)
    assert (check.ties, check.disagreements) == (1, 0) and check.passed


def test_smoothness_tells_random_kernels_from_smooth_ones():
    from training.figures import smoothness

    torch.manual_seed(0)
    random = torch.randn(64, 3, 11, 11)
    ramp = torch.linspace(-1, 1, 11)
    edges = (ramp.view(1, 1, 1, 11) * torch.randn(64, 3, 1, 1)).expand(64, 3, 11, 11)
    assert abs(smoothness(random)) < 0.1
    assert smoothness(edges) > 0.9


# -- the repository commit: durable, and whole models only --------------------------------------------------


def _staged_update(repository):
    """An update of `repository` staging version 1 of a new model `m` (a file and its config)."""
    from tritonclient.grpc import model_config_pb2 as mc

    from export.repository import RepositoryUpdate

    update = RepositoryUpdate(repository)
    (update.version_dir("m", 1) / "model.onnx").write_bytes(b"graph")
    update.add_config(mc.ModelConfig(name="m", backend="python"), labels=False)
    return update


def test_commit_puts_every_file_on_disk_before_the_first_rename_and_the_renames_after(tmp_path, monkeypatch):
    """A crash or a power cut must never leave a renamed folder whose files were still in the page cache."""
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(source, target):
        events.append(("rename", str(target)))
        real_rename(source, target)

    repository = tmp_path / "repository"
    with _staged_update(repository) as update:
        staged_file = str(update.staging / "m" / "1" / "model.onnx")
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        update.commit()
    first_rename = next(i for i, (kind, _) in enumerate(events) if kind == "rename")
    synced_before = {path for kind, path in events[:first_rename] if kind == "fsync"}
    assert staged_file in synced_before and str(Path(staged_file).parent) in synced_before
    synced_after = {path for kind, path in events[first_rename:] if kind == "fsync"}
    assert str(repository) in synced_after, "the rename into REPO must be made durable too"
    assert (repository / "m" / "1" / "model.onnx").read_bytes() == b"graph"


def test_a_new_model_arrives_whole_with_its_config(tmp_path, monkeypatch):
    """A model folder without config.pbtxt stops the image's Triton: a new model is one rename, so a crash
    leaves it either absent or complete."""
    import os

    repository = tmp_path / "repository"
    repository.mkdir()
    real_rename = os.rename
    renames = []

    def rename(source, target):
        renames.append(Path(target))
        real_rename(source, target)

    with _staged_update(repository) as update:
        monkeypatch.setattr(os, "rename", rename)
        update.commit()
    assert renames == [repository / "m"]
    assert (repository / "m" / "config.pbtxt").is_file()


@pytest.mark.parametrize("int8, embedding", [(False, False), (True, False), (True, True)])
def test_each_planned_model_is_named_for_what_it_is_and_has_its_files_written(int8, embedding):
    """export_repository writes each model's files by its kind into the folder of its config's name, and
    commits exactly the planned configs: the kind and the name must be one model, every model that is not an
    ensemble must have a writer, for every choice of --int8 and --no-embedding."""
    from common.model_card import ModelCard
    from export.pipeline import _ModelFiles, planned_models
    from triton_repository.layout import ModelNames

    card = ModelCard(architecture="torchvision", labels=["a", "b"], image_size=64, resize_size=64,
                     mean=[0.5] * 3, std=[0.25] * 3)  # fmt: skip
    names = ModelNames("digits")
    planned = planned_models(
        names, card, features=4096, int8=int8, embedding=embedding, device="cpu", fp16=False,
        max_batch_size=8, queue_delay_us=0,
    )  # fmt: skip
    assert all(model.name == getattr(names, model.kind) for model in planned)
    kinds = [model.kind for model in planned]
    assert ("int8" in kinds, "embedding" in kinds, "embedding_image" in kinds) == (int8, embedding, embedding)
    without_files = {model.kind for model in planned if model.config.platform == "ensemble"}
    assert set(kinds) - without_files <= set(_ModelFiles.WRITERS)
