"""The quickstart's pure parts: which images its self-check sends for a model of any kind (not only the digits
model: `--model-dir` points it at another), and how it settles its ports before the first step."""

from __future__ import annotations

import socket

from PIL import Image

from common.model_card import ModelCard
from demo.quickstart import QuickstartSettings, choose_ports, is_digits_card, sample_images
from training.digits import DIGIT_LABELS


def card(dataset: str, labels: list[str]) -> ModelCard:
    return ModelCard(architecture="torchvision", labels=labels, image_size=64, resize_size=64,
                     mean=[0.5] * 3, std=[0.25] * 3, dataset=dataset)  # fmt: skip


def test_the_digits_model_is_checked_on_one_validation_digit_per_class():
    files, kind = sample_images(card("digits", list(DIGIT_LABELS)))
    assert kind == "validation digit" and len(files) == 10
    assert all(path.is_file() and path.suffix == ".png" for path in files)


def test_a_model_trained_on_a_folder_is_checked_on_its_own_validation_images(tmp_path):
    for name in ("cat", "dog", "fox"):
        (tmp_path / "val" / name).mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (80, 80), (index * 90, 40, 200)).save(tmp_path / "val" / name / f"{index}.png")
    (tmp_path / "val" / "dog" / "notes.txt").write_text("not an image")
    model = card(str(tmp_path), ["cat", "dog", "fox"])
    files, kind = sample_images(model)
    assert not is_digits_card(model) and kind == "validation image"
    assert [(path.parent.name, path.name) for path in files] == [("cat", "0.png"), ("dog", "0.png"),
                                                                   ("fox", "0.png")]  # fmt: skip


def test_a_model_whose_data_is_not_at_hand_is_checked_on_packaged_photos(tmp_path):
    for dataset in ("torchvision:AlexNet_Weights.IMAGENET1K_V1", str(tmp_path / "gone"), ""):
        files, kind = sample_images(card(dataset, [f"class {i}" for i in range(1000)]))
        assert kind == "sample photo" and files, dataset
        assert all(path.is_file() and path.suffix in (".jpg", ".png") for path in files)


def test_a_taken_port_falls_back_to_a_free_one_and_is_said_at_once():
    said: list[str] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        settings = QuickstartSettings(http_port=taken, grpc_port=0, metrics_port=0, page_port=0)
        ports = choose_ports(settings, said.append)
    assert ports.http != taken and len({ports.http, ports.grpc, ports.metrics, ports.page}) == 4
    assert said == [f"    port {taken} is taken: using {ports.http}"]
