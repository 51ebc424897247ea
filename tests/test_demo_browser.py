"""The demo page in a real headless Chromium, in front of a real Triton serving the digits model."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from demo.examples import digit_example_files

pytestmark = pytest.mark.slow

TOP_LABEL = '#answer [data-testid="label-output-value"]'
CONFIDENCES = '#answer [data-testid$="-confidence-set"]'
UPLOAD = "#input-image input[type=file]"
NEIGHBOUR_CAPTIONS = "#neighbours .caption-label"
TOAST_FADE_IN_MS = 600  # Gradio's error toast is "visible" at once but fades in: wait before a screenshot


def true_digit(path: Path) -> str:
    return path.stem.removeprefix("digit_").split("_val")[0]  # digit_3_val17.png -> "3"


def surest_validation_digit(client) -> tuple[Path, str]:
    """Of the page's ten validation examples, the one the served model is surest of and gets right.

    The session's model is trained to >= 90% top-1 (fixtures_training): if it gets fewer than 7 of the
    ten right, no page can show the right digit and the failure belongs to training, so say that.
    """
    files = digit_example_files()
    answers = client.classify_files(files, top_k=1)
    right = [(top[0].score, path) for path, top in zip(files, answers, strict=True)
             if top[0].label == true_digit(path)]
    assert len(right) >= 7, f"the session's digits model gets only {len(right)} of 10 validation digits right"
    path = max(right)[1]
    return path, true_digit(path)


def upload_surest_digit(demo, page) -> str:
    """Upload the validation digit the model is surest of; its digit, once the page shows it as the answer."""
    path, digit = surest_validation_digit(demo.client)
    page.goto(demo.url)
    expect(page.locator("#server-status")).to_contain_text("Triton: ready")
    page.set_input_files(UPLOAD, str(path))
    expect(page.locator(TOP_LABEL)).to_have_text(digit)
    return digit


def test_uploaded_validation_digit_gets_the_right_answer(digits_demo, browser_page, artifacts_dir):
    page = browser_page
    upload_surest_digit(digits_demo, page)
    expect(page.locator(CONFIDENCES)).to_have_count(5)
    details = page.locator("#answer-details")
    expect(details).to_contain_text("round trip")
    expect(details).to_contain_text("answered by alexnet version 1 over gRPC")
    page.screenshot(path=artifacts_dir / "demo_digits_upload.png", full_page=True)


def test_the_neighbours_of_a_validation_digit_are_mostly_that_digit(digits_demo, browser_page, artifacts_dir):
    """The panel under the answer: six validation digits nearest by the served fc7 features (the paper's
    Figure 4), and the first-layer kernels export drew beside the served model (its Figure 3)."""
    from demo.neighbours import NEIGHBOURS

    page = browser_page
    digit = upload_surest_digit(digits_demo, page)
    captions = page.locator(NEIGHBOUR_CAPTIONS)
    expect(captions).to_have_count(NEIGHBOURS)
    labels = [caption.split(" · ")[0] for caption in captions.all_inner_texts()]
    assert sum(label == digit for label in labels) > NEIGHBOURS // 2, labels
    kernels = page.locator("#kernels img")
    expect(kernels).to_be_visible()
    assert kernels.evaluate("image => image.naturalWidth") > 0  # the PNG export wrote, loaded
    page.locator("#network-sees").scroll_into_view_if_needed()
    page.screenshot(path=artifacts_dir / "demo_neighbours.png", full_page=True)


def test_a_seven_drawn_dark_on_light_paper_is_read_as_a_seven(digits_demo, browser_page, tmp_path,
                                                               artifacts_dir):
    """The issue's visitor: a black 7 drawn on white paper, 300x300, uploaded. The page shows the right digit,
    and the 8x8 scan the model read (the served model's digit-scan conversion)."""
    from PIL import Image, ImageDraw

    paper = Image.new("RGB", (300, 300), "white")
    ImageDraw.Draw(paper).line([(85, 60), (215, 60), (125, 245)], fill="black", width=12, joint="curve")
    upload = tmp_path / "seven_on_paper.png"
    paper.save(upload)
    page = browser_page
    page.goto(digits_demo.url)
    expect(page.locator("#server-status")).to_contain_text("Triton: ready")
    page.set_input_files(UPLOAD, str(upload))
    expect(page.locator(TOP_LABEL)).to_have_text("7")
    expect(page.locator("#drawing-scan img")).to_be_visible()
    page.screenshot(path=artifacts_dir / "demo_paper_digit.png", full_page=True)


def test_clicking_an_example_classifies_it(digits_demo, browser_page):
    path, digit = surest_validation_digit(digits_demo.client)
    page = browser_page
    page.goto(digits_demo.url)
    page.get_by_role("button", name=f"{digit} (validation #", exact=False).first.click()
    expect(page.locator(TOP_LABEL)).to_have_text(digit)


def test_a_file_that_is_not_an_image_gets_a_readable_message(digits_demo, browser_page, tmp_path,
                                                             artifacts_dir):
    fake = tmp_path / "notes.png"
    fake.write_text("these are my notes, not a picture")
    page = browser_page
    page.goto(digits_demo.url)
    expect(page.locator("#server-status")).to_contain_text("Triton: ready")
    page.set_input_files(UPLOAD, str(fake))

    expect(page.get_by_text("That file is not an image we can read")).to_be_visible()
    expect(page.get_by_text("Traceback")).to_have_count(0)
    page.wait_for_timeout(TOAST_FADE_IN_MS)
    page.screenshot(path=artifacts_dir / "demo_not_an_image.png", full_page=True)


def test_an_upload_over_the_size_limit_is_refused(digits_demo, browser_page, tmp_path):
    from demo.app import MAX_UPLOAD

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (11 * 1024 * 1024))
    assert MAX_UPLOAD == "10mb"
    page = browser_page
    page.goto(digits_demo.url)
    expect(page.locator("#server-status")).to_contain_text("Triton: ready")
    page.set_input_files(UPLOAD, str(huge))

    expect(page.get_by_text("exceed the maximum allowed size of 10.0 Mb")).to_be_visible()


def test_a_drawing_is_classified_and_shown_as_the_model_sees_it(digits_demo, browser_page, artifacts_dir):
    page = browser_page
    page.goto(digits_demo.url)
    page.get_by_role("tab", name="Draw a digit").click()
    page.locator('#sketchpad button[aria-label="Brush"]').first.click()
    box = page.locator("#sketchpad canvas").first.bounding_box()
    x, top, height = box["x"] + box["width"] / 2, box["y"] + 0.15 * box["height"], 0.7 * box["height"]
    page.mouse.move(x, top)
    page.mouse.down()
    page.mouse.move(x, top + height, steps=4)  # a "1": one stroke down the middle (each step redraws)
    page.mouse.up()
    page.get_by_role("button", name="Classify the drawing").click()

    expect(page.locator("#drawing-scan img")).to_be_visible()
    expect(page.locator(CONFIDENCES)).to_have_count(5)
    expect(page.locator("#answer-details")).to_contain_text("round trip")
    page.screenshot(path=artifacts_dir / "demo_drawing.png", full_page=True)


def test_with_triton_stopped_the_page_says_so(digits_repository, browser_page, artifacts_dir):
    from demo.app import build_demo, launch_demo
    from serving.client import NO_RETRY, TritonClassifier
    from serving.server import TritonServer, free_port

    server = TritonServer(
        digits_repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        client = TritonClassifier(server.grpc_url, retry=NO_RETRY)  # the default retries for 30 s first
        demo = build_demo(client)
    # the server is stopped now; the page was built while it ran, as when Triton dies under a running demo
    url = launch_demo(demo, port=free_port(), quiet=True)
    try:
        page = browser_page
        page.goto(url)
        expect(page.locator("#server-status")).to_contain_text("Triton: NOT READY")
        page.set_input_files(UPLOAD, str(digit_example_files()[0]))

        expect(page.get_by_text(f"no Triton server answers at {server.grpc_url}").first).to_be_visible()
        expect(page.locator("#server-status")).to_contain_text("alexnet serve --repository")
        expect(page.get_by_text("Traceback")).to_have_count(0)
        page.wait_for_timeout(TOAST_FADE_IN_MS)
        page.screenshot(path=artifacts_dir / "demo_triton_down.png", full_page=True)
    finally:
        demo.close(verbose=False)
        client.close()
