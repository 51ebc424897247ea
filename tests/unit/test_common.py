"""The torch-free common module: the model card's checks, whole-or-nothing files, file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import asdict

import pytest

from common.errors import UserError
from common.files import atomic_write, disk_full_error
from common.hashing import sha256_of
from common.model_card import MODEL_JSON, ModelCard
from common.signals import StopRequest


def digits_card(**changes) -> ModelCard:
    fields = dict(
        architecture="torchvision",
        labels=[str(d) for d in range(10)],
        image_size=64,
        resize_size=64,
        mean=[0.3, 0.3, 0.3],
        std=[0.3, 0.3, 0.3],
        dataset="digits",
    )
    return ModelCard(**{**fields, **changes})


def test_a_card_round_trips_through_model_json(tmp_path):
    card = digits_card(metrics={"top1": 0.97})
    path = card.save(tmp_path)
    assert path.name == MODEL_JSON and json.loads(path.read_text())["labels"][3] == "3"
    assert ModelCard.load(tmp_path) == card


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"architecture": "vgg"}, "use one of torchvision, paper"),
        ({"image_size": 32, "resize_size": 32}, "use at least 63"),
        ({"resize_size": 63}, "resize_size >= image_size"),
        ({"mean": [0.5]}, "three mean and three std"),
        ({"labels": []}, "no labels"),
    ],
)
def test_an_impossible_card_is_refused_with_the_fix(changes, says):
    with pytest.raises(UserError, match=says):
        digits_card(**changes)


def test_a_missing_or_broken_card_names_the_command_that_makes_one(tmp_path):
    with pytest.raises(UserError, match=f"alexnet train --out {tmp_path}"):
        ModelCard.load(tmp_path)
    (tmp_path / MODEL_JSON).write_text(json.dumps({**asdict(digits_card()), "colour": "red"}))
    with pytest.raises(UserError, match="not a valid model card"):
        ModelCard.load(tmp_path)


def test_a_write_that_fails_part_way_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"the old checkpoint")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half of the new one")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"the old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_full_disk_is_found_behind_the_error_that_reports_it():
    full = OSError(28, "No space left on device")
    try:
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("PytorchStreamWriter failed writing file") from inner
    except RuntimeError as outer:
        assert disk_full_error(outer) is full
    assert disk_full_error(RuntimeError("something else")) is None


def test_sha256_of_a_file_reads_it_in_blocks(tmp_path):
    data = bytes(range(256)) * 10_000  # larger than one 1 MiB block
    path = tmp_path / "weights"
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_ctrl_c_asks_training_to_stop_and_a_second_one_stops_at_once():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_torchrun_worker_takes_the_forwarded_copy_of_ctrl_c_as_the_same_request():
    before = signal.getsignal(signal.SIGINT)
    with StopRequest(second_ctrl_c_stops=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's
        os.kill(os.getpid(), signal.SIGINT)  # torchrun's forwarded copy
        assert stop.requested
    assert signal.getsignal(signal.SIGINT) is before  # the handler from before is back
