"""The demo's API through gradio_client, against a real Triton, compared with the real `alexnet classify`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from fixtures_demo import as_drawing
from PIL import Image

from demo.examples import digit_example_files, validation_digits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page_api(digits_demo):
    from gradio_client import Client

    return Client(digits_demo.url, verbose=False)


def test_page_api_gives_the_same_top5_as_alexnet_classify(digits_demo, page_api):
    from gradio_client import handle_file

    files = digit_example_files()
    command = [sys.executable, "-m", "alexnet_cli", "classify", *map(str, files),
               "--url", digits_demo.triton_grpc_url, "--top-k", "5", "--json"]
    cli = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)

    for path, want in zip(files, expected, strict=True):
        label, details = page_api.predict(handle_file(str(path)), api_name="/classify_image")
        got = [(entry["label"], entry["confidence"]) for entry in label["confidences"]]
        assert [name for name, _ in got] == [entry["label"] for entry in want["top"]], path.name
        want_scores = [entry["score"] for entry in want["top"]]
        assert [score for _, score in got] == pytest.approx(want_scores, abs=1e-6)
        assert label["label"] == want["top"][0]["label"]
        assert "round trip" in details and "ms" in details


def test_drawn_digits_are_read_like_the_scans(page_api, tmp_path):
    """A validation digit drawn on the sketchpad must get the answer its scan gets."""
    from gradio_client import handle_file

    images, labels = validation_digits()
    right = 0
    for position in range(10):
        drawing = tmp_path / f"drawing_{position}.png"
        Image.fromarray(as_drawing(images[position]), mode="RGBA").save(drawing)
        value = {"background": None, "layers": [], "composite": handle_file(str(drawing))}
        label, _, scan = page_api.predict(value, api_name="/classify_drawing")
        right += label["label"] == str(labels[position])
        assert np.asarray(Image.open(scan)).shape[:2] == (160, 160)  # the 8x8 scan, enlarged
    assert right >= 8, f"only {right} of 10 drawn validation digits read right"
