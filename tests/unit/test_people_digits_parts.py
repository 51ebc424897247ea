"""The digit-scan input conversion and the people-style digits it is measured on: no model, no server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.model_card import INPUT_CONVERSIONS
from training.digits import load_digits_split
from training.people_digits import STYLES, people_digits
from triton_repository import image_preprocessing
from triton_repository.image_preprocessing import ImageError, digit_scan, prepare_image


def test_the_model_card_and_the_server_know_the_same_conversions():
    assert INPUT_CONVERSIONS == image_preprocessing.CONVERSIONS


def test_people_digits_are_the_same_for_the_same_seed_and_differ_between_splits():
    first = people_digits("photo", "test", per_digit=1)
    again = people_digits("photo", "test", per_digit=1)
    tuned = people_digits("photo", "tune", per_digit=1)
    assert [d.label for d in first] == list(range(10))
    assert all(a.encoded() == b.encoded() for a, b in zip(first, again, strict=True))
    pairs = zip(first, tuned, strict=True)
    assert not any(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in pairs)


def test_every_style_draws_a_picture_the_conversion_reads():
    for style in STYLES:
        for picture in people_digits(style, "test", per_digit=1):
            scan = digit_scan(picture.image)
            assert scan.shape == (8, 8) and scan.dtype == np.uint8
            coverage = scan.sum() / (255 * scan.size)
            assert 0.2 < coverage < 0.45, (style, picture.label, coverage)  # the UCI scans' pen: 30%
            assert scan[0].max() > 0 and scan[-1].max() > 0, (style, picture.label)  # the full height


def digit_seven(ink: int, paper: int, size: int = 300) -> Image.Image:
    """A clean 7, like the one the issue's visitor drew on paper."""
    picture = Image.new("RGB", (size, size), (paper,) * 3)
    draw = ImageDraw.Draw(picture)
    draw.line([(90, 70), (220, 70), (130, 240)], fill=(ink,) * 3, width=14, joint="curve")
    return picture


def test_dark_on_light_and_light_on_dark_give_one_scan_like_the_uci_sevens():
    dark_on_light, light_on_dark = digit_scan(digit_seven(0, 255)), digit_seven(255, 0)
    assert np.array_equal(dark_on_light, digit_scan(light_on_dark))
    split = load_digits_split()
    correlation_with = [
        np.corrcoef(dark_on_light.ravel(), images.mean(axis=0).ravel())[0, 1]
        for images in (split.train_images[split.train_labels == digit] for digit in range(10))
    ]
    assert int(np.argmax(correlation_with)) == 7, correlation_with
    assert dark_on_light.max() == 255 and dark_on_light[:, 0].max() < 255  # full height, a margin aside


def test_uneven_light_does_not_change_what_is_read():
    even = digit_seven(30, 230)
    pixels = np.asarray(even, dtype=np.float32)
    ramp = np.linspace(1.0, 0.45, pixels.shape[1])[None, :, None]  # light falling off to the right
    uneven = Image.fromarray(np.rint(pixels * ramp).astype(np.uint8))
    difference = np.abs(digit_scan(even).astype(int) - digit_scan(uneven).astype(int))
    assert difference.mean() < 8, difference


def test_an_8x8_scan_is_taken_as_it_is_and_an_inverted_one_turned_back():
    scan = load_digits_split().val_images[0]
    assert np.array_equal(digit_scan(Image.fromarray(scan, mode="L")), scan)
    assert np.array_equal(digit_scan(Image.fromarray(255 - scan, mode="L").convert("RGB")), scan)


def test_a_transparent_canvas_is_white_paper():
    rgba = np.zeros((200, 200, 4), np.uint8)  # transparent black, as the sketchpad's canvas
    rgba[40:160, 95:105, 3] = 255  # a black "1"
    scan = digit_scan(Image.fromarray(rgba, mode="RGBA"))
    assert scan[:, 3:5].min() > 100 and scan[:, 0].max() == 0


@pytest.mark.parametrize("colour", [0, 255, 128])
def test_a_picture_without_ink_says_what_to_send(colour):
    with pytest.raises(ImageError, match="no digit found"):
        digit_scan(Image.new("RGB", (120, 90), (colour,) * 3))


def test_prepare_image_applies_the_conversion_before_the_resize(tmp_path):
    import io

    buffer = io.BytesIO()
    digit_seven(0, 255).save(buffer, format="PNG")
    plain = prepare_image(buffer.getvalue(), resize_size=64, image_size=64)
    converted = prepare_image(buffer.getvalue(), resize_size=64, image_size=64, input_conversion="digit-scan")
    assert plain.shape == converted.shape == (64, 64, 3)
    assert plain.mean() > 200 and converted.mean() < 128  # white paper as it is; the scan is dark around ink
    with pytest.raises(ImageError, match="unknown input conversion"):
        prepare_image(buffer.getvalue(), resize_size=64, image_size=64, input_conversion="sharpen")
