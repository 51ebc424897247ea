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


def test_drawn_digits_are_read_like_the_scans(digits_demo, page_api, tmp_path):
    """A validation digit drawn on the sketchpad (big, black on transparent) must mostly get the answer
    that its own 8x8 scan gets from Triton: the drawing becomes a scan like the training data."""
    from gradio_client import handle_file

    images, _ = validation_digits()
    scans, drawings = [], []
    for position in range(10):
        scans.append(tmp_path / f"scan_{position}.png")
        Image.fromarray(images[position], mode="L").save(scans[-1])
        drawings.append(tmp_path / f"drawing_{position}.png")
        Image.fromarray(as_drawing(images[position]), mode="RGBA").save(drawings[-1])
    scan_answers = [top[0].label for top in digits_demo.client.classify_files(scans, top_k=1)]

    same = 0
    for drawing, scan_answer in zip(drawings, scan_answers, strict=True):
        value = {"background": None, "layers": [], "composite": handle_file(str(drawing))}
        label, details, preview = page_api.predict(value, api_name="/classify_drawing")
        same += label["label"] == scan_answer
        assert "round trip" in details
        assert np.asarray(Image.open(preview)).shape[:2] == (160, 160)  # the 8x8 scan, enlarged
    assert same >= 8, f"only {same} of 10 drawn digits got their scan's answer"
