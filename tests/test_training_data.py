"""The data side of training: the embedded digits, ImageNet-style folders (with unreadable files), the
transforms, and `validation_pixels`, which must give exactly what serving's preprocessing gives."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.model_card import ModelCard
from training import presets
from training.data import grey_to_pil, load_data, make_loaders, validation_pixels
from training.digits import DIGIT_LABELS, load_digits_split
from training.errors import TrainingError
from triton_repository.image_preprocessing import prepare_image, resize_and_crop


@pytest.mark.pure
def test_digits_split_is_fixed_stratified_uint8_and_torch_free():
    split = load_digits_split()
    assert split.train_images.shape == (1437, 8, 8) and split.val_images.shape == (360, 8, 8)
    assert split.train_images.dtype == np.uint8 and split.train_labels.dtype == np.int64
    assert split.train_images.max() == 255 and split.train_images.min() == 0
    # Stratified: every digit is 10% of the validation split, give or take one scan.
    counts = np.bincount(split.val_labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    # The demo imports this module: it must not pull torch in, and gives the same split in a fresh process.
    code = (
        "import sys, hashlib; from training.digits import load_digits_split; s = load_digits_split(); "
        "assert 'torch' not in sys.modules; print(hashlib.sha256(s.val_images.tobytes()).hexdigest())"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import hashlib

    assert fresh.stdout.strip() == hashlib.sha256(split.val_images.tobytes()).hexdigest()
    assert DIGIT_LABELS == [str(d) for d in range(10)]


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int], seed: int) -> Path:
    """A real JPEG or PNG (by suffix): a colour with a gradient and noise, so resizing has work to do."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = np.array(colour, dtype=np.float32)
    ramp = np.linspace(-40, 40, width, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 25, (height, width, 3)).astype(np.float32)
    pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_image_folder(
    root: Path, *, per_class: int = 6, corrupt_train: int = 0, corrupt_val: int = 0
) -> Path:
    """train/ and val/ with three colour classes of JPEG and PNG files of odd sizes, plus corrupt files."""
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
    sizes = [(97, 61), (61, 97), (130, 77), (64, 64), (203, 149), (75, 75)]
    for split, count in (("train", per_class), ("val", max(2, per_class // 2))):
        for c, (name, colour) in enumerate(colours.items()):
            for i in range(count):
                suffix = ".jpg" if i % 2 == 0 else ".png"
                write_image(
                    root / split / name / f"{name}_{i}{suffix}",
                    sizes[i % len(sizes)],
                    colour,
                    seed=c * 100 + i,
                )
    for i in range(corrupt_train):
        (root / "train" / "red" / f"broken_{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for i in range(corrupt_val):
        (root / "val" / "blue" / f"broken_{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


@pytest.mark.pure
def test_validation_pixels_equal_serving_preprocessing_on_real_files(tmp_path):
    """Export calibrates and checks parity on these pixels; the server computes them with
    triton_repository.image_preprocessing. Both must agree exactly, for every size and format."""
    root = make_image_folder(tmp_path / "photos", per_class=6)
    for image_size, resize_size in ((64, 73), (64, 64), (224, 256)):
        card = ModelCard(
            "torchvision", ["blue", "green", "red"], image_size, resize_size, [0.5] * 3, [0.2] * 3
        )
        pixels, labels = validation_pixels(card, data=str(root))
        files = sorted((root / "val").rglob("*.*"))
        assert pixels.shape == (len(files), image_size, image_size, 3) and pixels.dtype == np.uint8
        by_folder = {"blue": 0, "green": 1, "red": 2}
        assert labels.tolist() == [by_folder[f.parent.name] for f in files]
        for got, path in zip(pixels, files, strict=True):
            expected = prepare_image(path.read_bytes(), resize_size=resize_size, image_size=image_size)
            np.testing.assert_array_equal(got, expected, err_msg=f"{path.name} at {image_size}/{resize_size}")


@pytest.mark.pure
def test_digits_validation_pixels_are_the_eval_transform_and_serving_resize():
    split = load_digits_split()
    card = ModelCard("torchvision", list(DIGIT_LABELS), 64, 64, [0.3] * 3, [0.3] * 3)
    pixels, labels = validation_pixels(card, data="digits", limit=40)
    assert pixels.shape == (40, 64, 64, 3) and labels.tolist() == split.val_labels[:40].tolist()
    # Validation is the same whatever the training augmentation; "none" spares rendering the 1,000
    # people-style training scans that the digits default ("people") adds.
    source = load_data("digits", image_size=64, augmentation="none")
    for index in range(0, 40, 7):
        scan = split.val_images[index]
        np.testing.assert_array_equal(
            pixels[index], resize_and_crop(grey_to_pil(scan), resize_size=64, image_size=64)
        )
        # What validation feeds the network is exactly these pixels, normalised.
        png = io.BytesIO()
        grey_to_pil(scan).save(png, format="PNG")
        served = prepare_image(png.getvalue(), resize_size=64, image_size=64)
        mean, std = torch.tensor(source.mean).view(3, 1, 1), torch.tensor(source.std).view(3, 1, 1)
        normalised = (torch.from_numpy(served.copy()).permute(2, 0, 1).float() / 255 - mean) / std
        torch.testing.assert_close(source.val[index][0], normalised, atol=1e-6, rtol=0)


@pytest.mark.pure
def test_image_folder_skips_and_counts_unreadable_files(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=4, corrupt_train=2, corrupt_val=1)
    source = load_data(str(root), image_size=64)
    assert source.labels == ["blue", "green", "red"] and source.resize_size == 73
    train, val = make_loaders(source, batch_size=5, workers=2, rank=0, world_size=1, seed=0, pin_memory=False)
    train.sampler.set_epoch(0)
    seen, skipped = 0, 0
    for images, labels, batch_skipped in train:
        assert images.shape[1:] == (3, 64, 64) and images.shape[0] == labels.shape[0]
        seen += labels.numel()
        skipped += batch_skipped
    # Training keeps full batches (the next readable image stands in), and counts each bad file once.
    assert (seen, skipped) == (14, 2)
    val_seen = sum(labels.numel() for _images, labels, _skipped in val)
    val_skipped = sum(skipped for _images, _labels, skipped in val)
    assert (val_seen, val_skipped) == (6, 1)


@pytest.mark.pure
def test_label_file_names_the_classes_in_its_order(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=2)
    (root / "labels.txt").write_text("red a red thing\nblue\ngreen something green\n")
    source = load_data(str(root), image_size=64)
    assert source.labels == ["a red thing", "blue", "something green"]
    assert source.train.samples[0][0].parent.name == "red" and source.train.samples[0][1] == 0


@pytest.mark.pure
@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "no such folder"),
        ("no-train", "has no train/ folder"),
        ("empty", "no class folders"),
        ("no-images", "no images in"),
        ("unreadable", "none of the 3 images"),
        ("unlisted", "does not list"),
    ],
)
def test_bad_data_folders_get_one_clear_error(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        (root / "val").mkdir(parents=True)
    if layout not in ("missing", "no-train"):
        (root / "train").mkdir()
    if layout in ("no-images", "unreadable", "unlisted"):
        (root / "train" / "cats").mkdir()
        (root / "train" / "cats" / "notes.txt").write_text("not an image")
    if layout == "unreadable":
        for i in range(3):
            (root / "train" / "cats" / f"{i}.jpg").write_bytes(b"garbage")
    if layout == "unlisted":
        write_image(root / "train" / "cats" / "a.png", (70, 70), (1, 2, 3), 0)
        (root / "labels.txt").write_text("dogs\n")
    with pytest.raises(TrainingError, match=message):
        load_data(str(root), image_size=64)


@pytest.mark.pure
def test_transforms_give_the_model_its_shapes():
    from training.data import DIGITS_MEAN, DIGITS_STD

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 210, 3), dtype=np.uint8))
    sizes = {"image_size": 64, "resize_size": 73, "mean": DIGITS_MEAN, "std": DIGITS_STD}
    for augmentation in presets.AUGMENTATIONS:
        assert presets.train_transform(augmentation, **sizes)(image).shape == (3, 64, 64)
    assert presets.eval_transform(**sizes)(image).shape == (3, 64, 64)
    crops = presets.ten_crop_transform(**sizes)(image)
    assert crops.shape == (10, 3, 64, 64)
    torch.testing.assert_close(crops[6], crops[0].flip(-1))  # the second five: the same of the mirror image


@pytest.mark.pure
def test_paper_patches_come_from_the_central_square_of_the_image():
    # Section 2: a 64x96 image is cut to its central 64x64 square before the ten patches (section 4.1).
    from training.data import DIGITS_MEAN, DIGITS_STD

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    sizes = {"image_size": 48, "resize_size": 64, "mean": DIGITS_MEAN, "std": DIGITS_STD}
    crops = presets.ten_crop_transform(**sizes)(image)
    torch.testing.assert_close(crops, presets.ten_crop_transform(**sizes)(image.crop((16, 0, 80, 64))))


@pytest.mark.pure
def test_pca_lighting_moves_colours_along_imagenet_principal_components():
    torch.manual_seed(0)
    lighting = presets.PCALighting(std=0.1)
    image = torch.full((3, 4, 4), 0.5)
    shifts = torch.stack([lighting(image)[:, 0, 0] - 0.5 for _ in range(4000)])
    # One shift per image (all pixels alike), with covariance P diag(0.1 * lambda)^2 P^T.
    eigenvalues = torch.tensor(presets.IMAGENET_EIGENVALUES)
    eigenvectors = torch.tensor(presets.IMAGENET_EIGENVECTORS)
    expected = eigenvectors @ torch.diag((0.1 * eigenvalues) ** 2) @ eigenvectors.T
    torch.testing.assert_close(torch.cov(shifts.T), expected, atol=3e-5, rtol=0.1)
    out = lighting(torch.rand(3, 5, 5))
    assert out.shape == (3, 5, 5)
