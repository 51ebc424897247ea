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


def test_neighbours_through_the_page_share_the_digit_for_most_validation_examples(digits_demo, page_api):
    """The page's neighbours endpoint for each of its ten validation examples: the six nearest validation
    digits by the served fc7 features, captioned "label · distance", nearest first, the example itself
    left out; most share the example's digit."""
    from gradio_client import handle_file

    from demo.neighbours import NEIGHBOURS

    agreeing = 0
    for path in digit_example_files():
        digit = path.stem.removeprefix("digit_").split("_val")[0]
        gallery = page_api.predict(handle_file(str(path)), api_name="/neighbours")
        captions = [item["caption"] for item in gallery]
        assert len(captions) == NEIGHBOURS, captions
        distances = [float(caption.split(" · ")[1]) for caption in captions]
        assert distances == sorted(distances)
        agreeing += sum(caption.split(" · ")[0] == digit for caption in captions)
    assert agreeing >= 0.8 * 10 * NEIGHBOURS, agreeing


def test_a_drawn_digit_becomes_its_scan_and_gets_tritons_answer_for_it(digits_demo, page_api, tmp_path):
    """Validation digits drawn on the sketchpad (big, black on a transparent canvas): the page shows the 8x8
    scan the model reads (like the original), answers what Triton answers for that scan, and mostly the
    digit that was drawn."""
    from gradio_client import handle_file

    from demo.drawing import drawing_to_digit_scan

    images, labels = validation_digits()
    right = 0
    for position in range(5):
        drawing = tmp_path / f"drawing_{position}.png"
        Image.fromarray(as_drawing(images[position]), mode="RGBA").save(drawing)
        value = {"background": None, "layers": [], "composite": handle_file(str(drawing))}
        label, details, preview = page_api.predict(value, api_name="/classify_drawing")

        enlarged = np.asarray(Image.open(preview).convert("L"))
        assert enlarged.shape == (160, 160)
        scan = enlarged[10::20, 10::20]  # one pixel from the middle of each 20x20 square
        assert np.array_equal(scan, drawing_to_digit_scan(as_drawing(images[position])))
        assert similarity(scan, images[position]) > 0.75, scan
        scan_file = tmp_path / f"scan_{position}.png"  # an 8x8 picture is read as the scan it is
        Image.fromarray(scan, mode="L").save(scan_file)
        (direct,) = digits_demo.client.classify_files([scan_file], top_k=1)
        assert label["label"] == direct[0].label
        assert "round trip" in details
        right += label["label"] == str(labels[position])
    assert right >= 4, right


def similarity(scan: np.ndarray, original: np.ndarray) -> float:
    """Correlation, allowing a one-column shift: the page centres a drawing, some scans sit off-centre."""
    def shifted(image: np.ndarray, columns: int) -> np.ndarray:
        return np.roll(np.pad(image, ((0, 0), (1, 1))), columns, axis=1)[:, 1:-1]

    return max(np.corrcoef(shifted(scan, dx).ravel(), original.ravel())[0, 1] for dx in (-1, 0, 1))
