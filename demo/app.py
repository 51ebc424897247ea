"""The Gradio page: upload, paste or draw an image, see what the AlexNet served by Triton says.

The page talks only to Triton, through the project's client; it imports no torch. Everything about
the model (labels, input size, name, version, data set) comes from the served model's config, so the
same page serves the digits quickstart model, a Fashion-MNIST model and an ImageNet AlexNet. Built by
`build_demo(client)` so tests hand it a real client; `launch_demo` starts it with the upload limit and the
queue.
Shaped after gradio-app/gradio demo/image_classifier: gr.Image -> gr.Label(num_top_classes=5).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from common.model_card import of_unknown_origin
from demo.drawing import drawing_image, drawing_to_digit_scan
from demo.errors import DemoError
from demo.examples import (
    digit_example_files,
    fashion_example_files,
    is_digits_model,
    is_fashion_model,
    packaged_photo_files,
)
from demo.neighbours import NEIGHBOURS, NeighbourSearch, enlarge, kernels_file, serves_embedding
from serving.client import InferenceRejected, Prediction, ServedModel, TritonClassifier
from serving.errors import ServingError
from triton_repository.image_preprocessing import ImageError, decode_image, digit_scan, prepare_decoded
from triton_repository.layout import ModelNames, base_model, companion_model

TOP_K = 5
MAX_UPLOAD = "10mb"  # Gradio refuses larger uploads before they reach us
CONCURRENCY_LIMIT = 4  # requests in flight to Triton from this page; the rest wait in the queue
QUEUE_SIZE = 64  # beyond this many waiting requests the page says "busy, try again"
STATUS_REFRESH_SECONDS = 10  # the readiness line asks Triton again this often
SCAN_PREVIEW_SIZE = 160  # the 8x8 drawing scan shown enlarged, pixel for pixel
NEIGHBOURS_HEIGHT = 400  # pixels: two rows of three neighbours with their captions
KERNELS_HEIGHT = 200  # pixels: the kernel grid (4 rows of 16, or 2 x 3 rows for the paper network)
# Digit scans are 8x8 pixels: show them large, with square pixels.
CSS = ".pixelated img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"

log = logging.getLogger(__name__)
_PROTOCOL_NAMES = {"grpc": "gRPC", "http": "HTTP"}


class _Classifier:
    """The page's side of the client: pixels in, top-5 plus the facts shown under the answer."""

    def __init__(self, client: TritonClassifier, model: ServedModel) -> None:
        self.client = client  # thread-safe: the queue runs up to CONCURRENCY_LIMIT requests at once
        self.model = model

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The model's input for a picture; a picture the input conversion finds nothing in (a blank page for
        the digits model) gets the conversion's message on the page."""
        try:
            return picture_pixels(image, self.model)
        except ImageError as error:
            message = f"{str(error).capitalize()}."
            raise gr.Error(message, title="Nothing to read", print_exception=False) from None

    def classify(self, image: Image.Image) -> tuple[dict[str, float], str]:
        pixels = self.pixels(image)
        started = time.perf_counter()
        with _triton_errors():
            predictions = self.client.classify_pixels(pixels[np.newaxis], top_k=TOP_K)[0]
        milliseconds = 1000 * (time.perf_counter() - started)
        return confidences(predictions), self._answer_details(predictions, milliseconds)

    def _answer_details(self, predictions: list[Prediction], milliseconds: float) -> str:
        best = predictions[0]
        return (
            f"**{best.label}** ({best.score:.1%}) · round trip **{milliseconds:.1f} ms** · answered by "
            f"`{self.model.name}` version {self.model.version} over {_PROTOCOL_NAMES[self.client.protocol]} "
            f"at `{self.client.url}`"
        )

    def server_status(self) -> str:
        model = self.model
        facts = (
            f"model `{model.name}` version {model.version} · {model.architecture} AlexNet · "
            f"trained on {model.dataset or 'unknown data'} · {len(model.labels)} classes · "
            f"input {model.image_size}×{model.image_size} RGB"
        )
        if self.client.is_ready():
            protocol = _PROTOCOL_NAMES[self.client.protocol]
            return f"**Triton: ready** at `{self.client.url}` ({protocol}) · {facts}"
        return (
            f"**Triton: NOT READY** at `{self.client.url}`: start it with "
            f"`alexnet serve --repository model_repository` (or `alexnet quickstart`) · last seen: {facts}"
        )


def picture_pixels(image: Image.Image, model: ServedModel) -> np.ndarray:
    """What the page sends for a picture (an upload, a drawing): the model's input, prepared by the code the
    server runs on uploaded images (input conversion, resize, crop), so the page and the image endpoint give
    one answer for one picture."""
    return prepare_decoded(
        image, resize_size=model.resize_size, image_size=model.image_size,
        input_conversion=model.input_conversion,
    )  # fmt: skip


@contextlib.contextmanager
def _triton_errors() -> Iterator[None]:
    """Triton's refusals and silences as the page's error toasts (the messages say what to do)."""
    try:
        yield
    except InferenceRejected as error:
        log.warning("Triton refused a request: %s", error)
        raise gr.Error(f"{error}", title="Triton refused the request", print_exception=False) from None
    except ServingError as error:  # nothing answers: the message names the command that starts it
        log.warning("Triton is not answering: %s", error)
        raise gr.Error(f"{error}", title="Triton is not answering", print_exception=False) from None


def origin_warning(dataset: str) -> str:
    """A plain warning for weights nobody here can vouch for (empty for a known data set)."""
    if not of_unknown_origin(dataset):
        return ""
    return (
        f"\n\n**These weights are of unknown origin** ({dataset or 'the model card names no data set'}): "
        "nobody here knows what they were trained on or how accurate they are. Treat the answers with care."
    )


def confidences(predictions: list[Prediction]) -> dict[str, float]:
    """gr.Label's value: label -> score, best first."""
    return {prediction.label: prediction.score for prediction in predictions}


def read_upload(upload: Any) -> Image.Image:
    """The uploaded file (Gradio's FileData dict or a path) decoded by the serving package's one decoder."""
    path = upload.get("path") if isinstance(upload, dict) else getattr(upload, "path", upload)
    if not path:
        raise gr.Error("The upload did not arrive: try again.", title="No image", print_exception=False)
    try:
        return decode_image(Path(path).read_bytes())
    except ImageError as error:
        raise gr.Error(
            f"That file is not an image we can read: {error}.", title="Not an image", print_exception=False
        ) from None


def scan_preview(scan: np.ndarray) -> np.ndarray:
    """The 8x8 scan enlarged with square pixels, so the user sees what the model sees."""
    return enlarge(scan, SCAN_PREVIEW_SIZE)


class _PageActions:
    """What the page's events run: each takes what Gradio hands over and returns the values of the
    components it updates."""

    def __init__(self, classifier: _Classifier, search: NeighbourSearch | None) -> None:
        self.classifier, self.search = classifier, search

    def classify_image(self, upload: Any) -> tuple[dict[str, float] | None, str]:
        if upload is None:
            return None, ""
        return self.classifier.classify(read_upload(upload))

    def neighbours_of_image(self, upload: Any) -> list | None:
        if upload is None or self.search is None:
            return None
        try:
            pixels = self.classifier.pixels(read_upload(upload))
        except gr.Error:  # the answer beside it already says why, in one message
            return None
        with _triton_errors():
            return self.search.nearest(pixels)

    def classify_drawing(self, drawing: dict | None) -> tuple[dict[str, float], str, np.ndarray]:
        composite = (drawing or {}).get("composite")
        if composite is None:
            raise gr.Error(
                "The sketchpad is empty: draw a digit first.", title="Nothing drawn", print_exception=False
            )
        try:
            scan = drawing_to_digit_scan(composite)
        except DemoError as error:
            message = f"{str(error).capitalize()}."
            raise gr.Error(message, title="Nothing drawn", print_exception=False) from None
        label, details = self.classifier.classify(drawing_image(composite))
        return label, details, scan_preview(scan)

    def neighbours_of_drawing(self, drawing: dict) -> list:
        with _triton_errors():  # classify_drawing checked that there is a drawing
            return self.search.nearest(self.classifier.pixels(drawing_image(drawing["composite"])))

    def scan_of_image(self, upload: Any) -> np.ndarray | None:
        if upload is None:
            return None
        try:
            return scan_preview(digit_scan(read_upload(upload)))
        except (gr.Error, ImageError):  # the answer beside it says why
            return None


@dataclass
class _Components:
    """The page's components that events read or update (None where this model's page has none)."""

    status: gr.Markdown
    image: gr.Image
    answer: gr.Label
    details: gr.Markdown
    neighbours: gr.Gallery | None
    sketchpad: gr.Sketchpad | None = None
    draw_button: gr.Button | None = None
    scan: gr.Image | None = None


def build_demo(client: TritonClassifier, repository: Path | None = None) -> gr.Blocks:
    """The page for whatever model `client` reaches; raises ServingError if Triton cannot describe it.
    `repository`: the model repository Triton serves, where export wrote the first-layer kernels."""
    model = client.model_info()
    classifier = _Classifier(client, model)
    kind = example_kind(model)
    reads_scans = model.input_conversion == "digit-scan"  # the sketchpad and the scan preview need it
    search = NeighbourSearch(client, model, kind) if serves_embedding(client, model) else None
    with gr.Blocks(
        title=f"AlexNet on Triton: {model.name}",
        analytics_enabled=False,
        delete_cache=(3600, 3600),  # uploads older than an hour leave Gradio's cache, checked hourly
    ) as demo:
        gr.Markdown(introduction(model, kind, reads_scans))
        status = gr.Markdown("Asking Triton…", elem_id="server-status")
        with gr.Row():
            with gr.Column():
                image = _upload_tab(model, kind)
                sketchpad, draw_button = _drawing_tab() if reads_scans else (None, None)
            with gr.Column():
                answer = gr.Label(num_top_classes=TOP_K, label="Top 5", elem_id="answer")
                details = gr.Markdown(elem_id="answer-details")
                scan = _scan_preview_image() if reads_scans else None
                with gr.Accordion("What the network sees", open=True, elem_id="network-sees"):
                    neighbours = _what_the_network_sees(model, search, kernels_file(repository, model))
        page = _Components(status, image, answer, details, neighbours, sketchpad, draw_button, scan)
        _connect_events(demo, page, _PageActions(classifier, search), classifier)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def example_kind(model: ServedModel) -> str:
    """What the page's examples (and neighbours) are: "digits", "fashion-mnist" or "photos"."""
    if is_digits_model(model.labels, model.dataset):
        return "digits"
    return "fashion-mnist" if is_fashion_model(model.labels, model.dataset) else "photos"


def introduction(model: ServedModel, kind: str, reads_scans: bool) -> str:
    """The line under the page's title: what to give this model."""
    if reads_scans:
        what = (
            "Upload a photo of a digit written on paper (dark on light or light on dark), click a real "
            "validation scan, or draw one."
        )
    elif kind == "digits":
        what = "Upload a picture of a handwritten digit or click a real validation scan."
    elif kind == "fashion-mnist":
        what = (
            "Upload a photo of one piece of clothing, a shoe or a bag (the model learned from "
            "Fashion-MNIST's: one item, light on black, centred), or click one of its test photos."
        )
    else:
        what = "Upload or paste a picture, or click one of the examples."
    return (
        f"# AlexNet on Triton\nWhat the `{model.name}` model served by NVIDIA Triton says about your image. "
        + what
        + origin_warning(model.dataset)
    )


def _upload_tab(model: ServedModel, kind: str) -> gr.Image:
    with gr.Tab("Upload or paste"):
        image = gr.Image(
            type="filepath",
            image_mode=None,
            sources=["upload", "clipboard"],
            label="Image (JPEG, PNG or WebP)",
            elem_id="input-image",
            elem_classes=["pixelated"] if kind != "photos" else None,
            height=320,
        )
        example_files, examples_title = _examples(kind)
        if example_files:
            gr.Examples(
                examples=[[str(path)] for path in example_files],
                inputs=image,
                label=examples_title,
                example_labels=[_example_label(path, model.labels) for path in example_files],
                examples_per_page=10,
            )
    return image


def _drawing_tab() -> tuple[gr.Sketchpad, gr.Button]:
    with gr.Tab("Draw a digit"):
        sketchpad = gr.Sketchpad(
            type="numpy",
            image_mode="RGBA",
            canvas_size=(400, 400),
            layers=False,
            brush=gr.Brush(default_size=24, colors=["#000000"], color_mode="fixed"),
            label="Draw one digit, large, in the middle",
            elem_id="sketchpad",
        )
        draw_button = gr.Button("Classify the drawing", variant="primary")
    return sketchpad, draw_button


def _scan_preview_image() -> gr.Image:
    return gr.Image(
        label="What the model sees: your picture as an 8×8 scan, like those it learned from",
        interactive=False,
        format="png",  # exact pixels, not webp's approximation
        height=SCAN_PREVIEW_SIZE + 40,
        elem_id="drawing-scan",
    )


def _connect_events(
    demo: gr.Blocks, page: _Components, actions: _PageActions, classifier: _Classifier
) -> None:
    """Each input to its action; after every request the status line says what Triton's state now is."""
    refresh_status = {"fn": classifier.server_status, "outputs": page.status, "api_name": False}
    image = page.image
    classified = image.change(
        actions.classify_image,
        inputs=image,
        outputs=[page.answer, page.details],
        preprocess=False,
        api_name="classify_image",
    )
    events = [classified]
    if actions.search is not None:
        image.change(
            actions.neighbours_of_image,
            inputs=image,
            outputs=page.neighbours,
            preprocess=False,
            api_name="neighbours",
            show_progress="minimal",
        )
    if page.sketchpad is not None:
        image.change(
            actions.scan_of_image,
            inputs=image,
            outputs=page.scan,
            preprocess=False,
            api_name=False,
            show_progress="hidden",
        )
        events.append(
            page.draw_button.click(
                actions.classify_drawing,
                inputs=page.sketchpad,
                outputs=[page.answer, page.details, page.scan],
                api_name="classify_drawing",
            )
        )
        if actions.search is not None:
            events[-1].success(actions.neighbours_of_drawing, page.sketchpad, page.neighbours, api_name=False)
    for event in events:  # the status line follows what the last request found
        event.success(**refresh_status)
        event.failure(**refresh_status)
    demo.load(classifier.server_status, outputs=page.status, api_name="server_status")
    gr.Timer(STATUS_REFRESH_SECONDS).tick(**refresh_status, show_progress="hidden")


def _what_the_network_sees(model: ServedModel, search: NeighbourSearch | None, kernels: Path | None):
    """The panel under the answer: the neighbours gallery (None where no embedding is served) and conv1."""
    neighbours = None
    embedding = f"`{ModelNames(model.name).embedding}`"
    if search is not None:
        pictures = {"digits": "validation digits", "fashion-mnist": "Fashion-MNIST test photos"}.get(
            search.kind, "pictures from installed packages"
        )
        gr.Markdown(
            f"The {NEIGHBOURS} {pictures} nearest to your image by the network's last hidden layer "
            f"(fc7, {embedding} on Triton, Euclidean distance under each): the paper's Figure 4, live."
        )
        neighbours = gr.Gallery(
            label="Nearest neighbours", columns=NEIGHBOURS // 2, rows=2, height=NEIGHBOURS_HEIGHT,
            object_fit="contain", allow_preview=False, elem_id="neighbours",
        )  # fmt: skip
    elif companion_model(model.name, "embedding") is None:
        base = base_model(model.name)
        gr.Markdown(
            f"`{model.name}` has no embedding model: start the page with `--model {base}` to see the "
            f"neighbours by `{ModelNames(base).embedding}`."
        )
    else:
        gr.Markdown(f"Triton does not serve {embedding}: export with `alexnet export onnx` to see these.")
    if kernels is not None:
        gr.Image(
            value=str(kernels), label="First-layer kernels (the paper's Figure 3)", interactive=False,
            height=KERNELS_HEIGHT, elem_id="kernels", elem_classes=["pixelated"],
        )  # fmt: skip
    else:
        gr.Markdown("Start the page with `--repository` to see the first-layer kernels export drew.")
    return neighbours


def _examples(kind: str) -> tuple[list[Path], str]:
    """The example files the page offers for this kind of model, and their title."""
    if kind == "digits":
        return digit_example_files(), "Validation digits (8×8 scans)"
    fashion = fashion_example_files() if kind == "fashion-mnist" else []
    if fashion:
        return fashion, "Fashion-MNIST test photos (28×28)"
    return packaged_photo_files(), "Pictures shipped with installed packages"


def _example_label(path: Path, labels: list[str]) -> str:
    if path.stem.startswith("digit_"):  # digit_3_val17.png
        digit, position = path.stem.removeprefix("digit_").split("_val")
        return f"{digit} (validation #{position})"
    if path.stem.startswith("fashion_"):  # fashion_4.png: class 4
        return labels[int(path.stem.removeprefix("fashion_"))]
    return path.stem.removesuffix("-copy")  # gradio ships cheetah1-copy.jpg


def launch_demo(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, quiet: bool = False) -> str:
    """Start serving the page without blocking; returns its URL. Stop it with demo.close()."""
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            max_file_size=MAX_UPLOAD,
            show_error=False,  # only gr.Error messages (written for users) reach the page, never tracebacks
            ssr_mode=False,
            quiet=quiet,
            css=CSS,
        )
    except OSError as error:  # Gradio's "Cannot find empty port": taken since the CLI checked it
        raise DemoError(
            f"the page cannot listen on {host}:{port} ({error}): stop what listens there or choose another "
            "port with --port"
        ) from None
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown_host}:{port}/"
