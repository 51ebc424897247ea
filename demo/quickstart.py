"""`alexnet quickstart`: from a fresh clone to a page in the browser, each stage run like a user would.

Choose the ports (a taken one falls back to a free one, said at once), train the digits model (or with
`--data fashion-mnist` the Fashion-MNIST one) if there is none, export it unless the repository already
serves these weights, start Triton, classify the same images over HTTP and gRPC as a self-check (for the
digits and Fashion-MNIST models, their whole validation split too), then open the demo and serve until
Ctrl-C. Training and export run as `alexnet` subprocesses (the quickstart itself never imports torch);
`--check` does it all once, checks the page through its API, and exits.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.signals import stop_signals_interrupt
from demo.errors import DemoError

if TYPE_CHECKING:
    from common.model_card import ModelCard

SCORE_TOLERANCE = 1e-3  # HTTP+pixels and gRPC+server-side preprocessing must agree to this
TOP1_TOLERANCE = 0.01  # served vs recorded validation top-1 (ONNX Runtime may flip a borderline image or two)
MIN_SERVED_TOP1 = 0.5  # below this the model has not learned its classes (chance is 10%): the check fails
WEAK_SERVED_TOP1 = 0.8  # below this the quickstart says the model is weak and how to train it better


@dataclass(frozen=True)
class QuickstartData:
    """What the quickstart trains on, and what it calls things."""

    name: str  # --data: "digits" or "fashion-mnist"
    model: str  # "the digits model"
    images: str  # what the self-check classifies: "validation digits"
    model_dir: Path  # the defaults of --model-dir and --repository
    repository: Path


DATA = {
    "digits": QuickstartData(
        "digits", "the digits model", "validation digits", Path("runs/digits"), Path("model_repository")
    ),
    "fashion-mnist": QuickstartData(
        "fashion-mnist", "the Fashion-MNIST model", "Fashion-MNIST test photos", Path("runs/fashion-mnist"),
        Path("model_repository_fashion_mnist"),
    ),
}  # fmt: skip


def quickstart_data(name: str) -> QuickstartData:
    if name not in DATA:
        raise DemoError(f"--data {name}: the quickstart trains on {' or '.join(DATA)}")
    return DATA[name]


@dataclass(frozen=True)
class QuickstartSettings:
    model_dir: Path = Path("runs/digits")
    repository: Path = Path("model_repository")
    data: str = "digits"  # a key of DATA
    data_dir: Path | None = None  # --data-dir for fashion-mnist (default: Debian's folder)
    name: str = "alexnet"
    host: str = "127.0.0.1"  # where the page listens; Triton always listens on 127.0.0.1 here
    http_port: int = 8000  # 0: any free port; a taken port falls back to a free one
    grpc_port: int = 8001
    metrics_port: int = 8002
    page_port: int = 7860


class Stopwatch:
    """Prints each stage with the seconds it took, so a slow step is obvious."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.started = time.monotonic()

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.say(f"==> {title}")
        begun = time.monotonic()
        yield
        self.say(f"    done in {time.monotonic() - begun:.1f} s")

    def total(self) -> float:
        return time.monotonic() - self.started


def run_alexnet(*arguments: str) -> None:
    """Run an `alexnet` command in a subprocess (its output goes straight to the terminal)."""
    command = [sys.executable, "-m", "alexnet_cli", *arguments]
    sys.stdout.flush()  # our lines first, then the subprocess's, also when the output is a pipe
    status = subprocess.run(command, stdin=subprocess.DEVNULL).returncode
    if status != 0:
        raise DemoError(f"`alexnet {' '.join(arguments)}` failed with status {status}: see its output above")


def ensure_trained(settings: QuickstartSettings, say: Callable[[str], None]) -> None:
    from common.model_card import ModelCard  # standard library only, no torch

    model_dir = settings.model_dir
    if (model_dir / "model.json").is_file():
        say(f"    using the trained model in {model_dir} (delete it to train again)")
        card = ModelCard.load(model_dir)
        if card.dataset == "digits" and card.input_conversion == "none":
            say(
                f"    note: {model_dir} was trained before models named their input conversion: it reads "
                f"photos and drawings of digits badly; `rm -r {model_dir}` and run this again to retrain it"
            )
        return
    data = quickstart_data(settings.data)
    say(f"    no model.json in {model_dir}: training {data.model}")
    where = ["--data-dir", str(settings.data_dir)] if settings.data_dir else []
    run_alexnet("train", "--data", data.name, *where, "--out", str(model_dir))


def served_weights_sha256(repository: Path, name: str) -> dict[str, str]:
    """source_weights_sha256 of the ONNX model and the ensemble, as their configs say ('' where missing)."""
    from triton_repository.configs import read_config
    from triton_repository.layout import CONFIG_FILE, ModelNames

    found = {}
    for model in (name, ModelNames(name).image):
        config_dir = repository / model
        if not (config_dir / CONFIG_FILE).is_file():
            found[model] = ""
            continue
        parameter = read_config(config_dir).parameters.get("source_weights_sha256")
        found[model] = parameter.string_value if parameter is not None else ""
    return found


def repository_is_current(repository: Path, name: str, weights_sha256: str) -> bool:
    """True when the repository's models were exported from exactly these weights."""
    served = served_weights_sha256(repository, name)
    return bool(weights_sha256) and all(sha == weights_sha256 for sha in served.values())


def ensure_exported(model_dir: Path, repository: Path, name: str, say: Callable[[str], None]) -> ModelCard:
    """Export unless the repository already serves these weights; the model's card."""
    from common.model_card import ModelCard  # standard library only, no torch

    card = ModelCard.load(model_dir)
    if repository_is_current(repository, name, card.weights_sha256):
        say(
            f"    {repository} already serves these weights (sha256 {card.weights_sha256[:12]}…): "
            "not exporting"
        )
        return card
    say(f"    exporting {model_dir} to the Triton repository {repository}")
    run_alexnet(
        "export",
        "onnx",
        "--model",
        str(model_dir),
        "--repository",
        str(repository),
        "--name",
        name,
        "--device",
        "cpu",
    )
    if not repository_is_current(repository, name, card.weights_sha256):
        raise DemoError(
            f"{repository} does not name the weights of {model_dir} after the export: remove {repository} "
            f"and run `alexnet export onnx --model {model_dir} --repository {repository}`"
        )
    return card


def port_or_free(port: int, say: Callable[[str], None], host: str = "127.0.0.1") -> int:
    """`port` if a server can listen there; otherwise (or for 0) a free one."""
    from common.ports import free_port, listen_problem

    if port == 0:
        return free_port()
    why = listen_problem(host, port)
    if why is None:
        return port
    if why != "taken":
        raise DemoError(f"cannot listen on {host}:{port}: {why}; check --host")
    chosen = free_port()
    say(f"    port {port} is taken: using {chosen}")
    return chosen


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int
    page: int


def choose_ports(settings: QuickstartSettings, say: Callable[[str], None]) -> Ports:
    """The four ports, settled before any slow work: a taken one falls back to a free one, said at once."""
    chosen: list[int] = []
    for port, host in (
        (settings.http_port, "127.0.0.1"),
        (settings.grpc_port, "127.0.0.1"),
        (settings.metrics_port, "127.0.0.1"),
        (settings.page_port, settings.host),
    ):
        picked = port_or_free(port, say, host)
        if picked in chosen:
            given_twice = picked
            while picked in chosen:  # (free ports picked by the kernel are unlikely to repeat, but may)
                picked = port_or_free(0, say)
            say(f"    port {given_twice} is given twice: using {picked}")
        chosen.append(picked)
    return Ports(*chosen)


def validation_images(card: ModelCard) -> tuple[np.ndarray, np.ndarray] | None:
    """The split training validated on, as uint8 grey images [N, H, W] and labels: the digits' validation
    scans, or Fashion-MNIST's test split from the folder the model was trained from; None for other
    models (the quickstart does not read image folders)."""
    if card.dataset == "fashion-mnist":
        from training import fashion_mnist  # torch-free

        folder = fashion_mnist.check_files(card.training.get("data_dir"))
        images_file, labels_file = fashion_mnist.FILES["test"]
        return fashion_mnist.read_idx(folder / images_file), fashion_mnist.read_idx(folder / labels_file)
    if is_digits_card(card):
        from demo.examples import validation_digits

        return validation_digits()
    return None


def self_check(http_url: str, grpc_url: str, name: str, card: ModelCard, say: Callable[[str], None]) -> None:
    """Through the real server: sample images of the model's kind over HTTP (pixels prepared here) and over
    gRPC (the files, prepared by the server) must agree; then, where the quickstart knows the model's
    validation split (digits, Fashion-MNIST), it must score the top-1 that training recorded in model.json
    (a difference is train/serve skew)."""
    from serving.client import TritonClassifier

    files, kind = sample_images(card)
    validation = validation_images(card)
    with TritonClassifier(http_url, protocol="http", model=name) as http_client:
        over_http = http_client.classify_files(files, send="pixels")
    with TritonClassifier(grpc_url, protocol="grpc", model=name) as grpc_client:
        over_grpc = grpc_client.classify_files(files, send="bytes")
        served = served_validation_top1(grpc_client, *validation) if validation is not None else None
    names = [f"{path.parent.name}/{path.name}" if kind == "validation image" else path.name for path in files]
    width = max(len(name) for name in [*names, kind]) + 2
    say(f"    {kind:<{width}} {'HTTP (pixels)':<24} gRPC (file bytes)")
    for name, http_top, grpc_top in zip(names, over_http, over_grpc, strict=True):
        say(f"    {name:<{width}} {_top1(http_top):<24} {_top1(grpc_top)}")
        same_label = http_top[0].label == grpc_top[0].label
        if not same_label or abs(http_top[0].score - grpc_top[0].score) > SCORE_TOLERANCE:
            raise DemoError(
                f"HTTP and gRPC disagree on {name} ({_top1(http_top)} vs {_top1(grpc_top)}): the "
                "client's and the server's preprocessing differ; re-export with `alexnet export onnx` "
                "and report a bug"
            )
    say("    HTTP and gRPC agree")
    if served is None:
        say(
            f"    served top-1 not compared with model.json: the quickstart reads only the digits' and "
            f"Fashion-MNIST's validation splits, and this model was trained on "
            f"{card.dataset or 'an unknown data set'}"
        )
        return
    what = DATA[card.dataset].images if card.dataset in DATA else "validation images"
    check_served_top1(*served, card.metrics.get("top1"), what, card.dataset, say)


def is_digits_card(card: ModelCard) -> bool:
    from demo.examples import is_digits_model

    return is_digits_model(card.labels, card.dataset)


def sample_images(card: ModelCard) -> tuple[list[Path], str]:
    """Image files of the model's own kind for the self-check, and what they are: one validation digit per
    class for the digits model; the first validation image of up to ten classes of a training folder still
    on disk; otherwise the photographs that ship with installed packages."""
    from demo.examples import digit_example_files, fashion_example_files, packaged_photo_files
    from triton_repository.image_preprocessing import IMAGE_SUFFIXES

    if card.dataset == "fashion-mnist":
        return fashion_example_files(), "test photo"
    if is_digits_card(card):
        return digit_example_files(), "validation digit"
    val = Path(card.dataset) / "val" if card.dataset else None
    if val is not None and val.is_dir():
        firsts = []
        for class_dir in sorted(path for path in val.iterdir() if path.is_dir()):
            images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            firsts.extend(images[:1])
        if firsts:
            return firsts[:10], "validation image"
    photos = packaged_photo_files()
    if not photos:
        raise DemoError("no sample photographs found in the installed packages: reinstall with `make setup`")
    return photos, "sample photo"


def check_served_top1(
    served_top1: float,
    count: int,
    recorded_top1: float | None,
    what: str,
    dataset: str,
    say: Callable[[str], None],
) -> None:
    """The served top-1 on the validation split against the one training recorded."""
    recorded = f"{recorded_top1:.2%}" if recorded_top1 is not None else "not recorded"
    say(f"    served top-1 on the {count} {what}: {served_top1:.2%} (model.json: {recorded})")
    if recorded_top1 is not None and abs(served_top1 - recorded_top1) > TOP1_TOLERANCE:
        raise DemoError(
            f"the served model scores {served_top1:.2%} top-1 on the {what}, training recorded "
            f"{recorded_top1:.2%}: the served repository does not match the model folder, or serving "
            "prepares images differently from training; export again with `alexnet export onnx`"
        )
    if served_top1 < WEAK_SERVED_TOP1:
        advice = (
            f"the model gets only {served_top1:.2%} of the {what} right: train it again (delete the "
            f"model folder, or run `alexnet train --data {dataset} --out DIR --epochs N` with more "
            "epochs)"
        )
        if served_top1 < MIN_SERVED_TOP1 or recorded_top1 is None:
            raise DemoError(advice)
        say(f"    note: {advice}")


def served_validation_top1(client, images: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Top-1 accuracy of the served model on grey validation images (uint8 [N, H, W], as training saw them:
    no input conversion), and their number."""
    from PIL import Image

    from triton_repository.image_preprocessing import resize_and_crop

    model = client.model_info()
    pixels = np.stack(
        [
            resize_and_crop(
                Image.fromarray(image, mode="L").convert("RGB"),
                resize_size=model.resize_size,
                image_size=model.image_size,
            )
            for image in images
        ]
    )
    answers = client.classify_pixels(pixels, top_k=1)
    correct = sum(top[0].label == model.labels[label] for top, label in zip(answers, labels, strict=True))
    return correct / len(labels), len(labels)


def _top1(predictions) -> str:
    return f"{predictions[0].label} ({predictions[0].score:.1%})"


def check_page(url: str, client, example: Path, say: Callable[[str], None]) -> None:
    """Call the running page's API as a browser would, with one sample image: it must show the answer
    that Triton gives directly."""
    from gradio_client import Client, handle_file

    expected = client.classify_files([example], top_k=1)[0][0].label
    label, details = Client(url, verbose=False).predict(handle_file(str(example)), api_name="/classify_image")
    if label.get("label") != expected:
        raise DemoError(f"the page answered {label.get('label')!r} for {example.name}, Triton {expected!r}")
    say(f"    the page classified {example.name}: {re.sub(r'[*`]', '', details)}")


def serve_forever(say: Callable[[str], None]) -> None:
    say("Serving. Press Ctrl-C to stop.")
    with stop_signals_interrupt():
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            say("\nstopping…")


def run_quickstart(settings: QuickstartSettings, *, check: bool, say: Callable[[str], None] = print) -> float:
    """The whole quickstart; returns its wall time in seconds. DemoError/ServingError say what to fix."""
    from serving.client import TritonClassifier
    from serving.server import TritonServer

    clock = Stopwatch(say)
    ports = choose_ports(settings, say)
    with clock.stage(f"1/5 {quickstart_data(settings.data).model} in {settings.model_dir}"):
        ensure_trained(settings, say)
    with clock.stage(f"2/5 the Triton model repository {settings.repository}"):
        card = ensure_exported(settings.model_dir, settings.repository, settings.name, say)
    server = TritonServer(
        settings.repository,
        http_port=ports.http,
        grpc_port=ports.grpc,
        metrics_port=ports.metrics,
        log_file=settings.model_dir.parent / "triton.log",
    )
    demo = page_client = None
    try:
        with clock.stage("3/5 starting Triton"):
            server.start()
            server.wait_until_ready()
        with clock.stage("4/5 self-check: the same images over HTTP and gRPC"):
            self_check(server.http_url, server.grpc_url, settings.name, card, say)
        with clock.stage("5/5 the demo page"):
            from demo.app import build_demo, launch_demo  # Gradio: seconds to import

            page_client = TritonClassifier(server.grpc_url, protocol="grpc", model=settings.name)
            demo = build_demo(page_client, settings.repository)
            page_url = launch_demo(demo, host=settings.host, port=ports.page, quiet=True)
            if check:
                files, _kind = sample_images(card)
                check_page(page_url, page_client, files[min(3, len(files) - 1)], say)
        say("")
        say(f"  Demo page:      {page_url}")
        say(f"  Triton HTTP:    http://{server.http_url}   (curl http://{server.http_url}/v2/health/ready)")
        say(f"  Triton gRPC:    {server.grpc_url}   (alexnet classify IMAGE --url {server.grpc_url})")
        say(f"  Triton metrics: {server.metrics_url}")
        say(f"  Triton log:     {server.log_file}")
        say("")
        if check:
            say(f"quickstart check passed in {clock.total():.0f} s")
        else:
            serve_forever(say)
    finally:
        if demo is not None:
            demo.close(verbose=False)
        if page_client is not None:
            page_client.close()
        server.stop()
        if not check:
            say("stopped the demo and Triton")
    return clock.total()
