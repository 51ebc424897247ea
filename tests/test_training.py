"""Training end to end, as a user runs it: the digits model, DDP on two CPU processes, a run
killed with SIGKILL (and one stopped with Ctrl-C) resumed to the end, and each bad input's one error."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_demo import interrupt, process_group
from fixtures_training import DDP_BATCH_PER_PROCESS, FIXTURE_EPOCHS, REPO, TwoRankRun, alexnet_in_process

from common.model_card import ModelCard
from training.data import load_data, make_loaders, validation_pixels
from training.model_dir import load_model_dir

# A small run for the resume tests: 96 synthetic images, 6 steps per epoch, 2 epochs (the run is stopped in
# the first and killed in the second).
SMALL_DATA = ["--data", "synthetic", "--synthetic-size", "96", "--batch-size", "16"]
SMALL_EPOCHS = 2
SMALL_RUN = [*SMALL_DATA, "--epochs", str(SMALL_EPOCHS)]
STEPS_PER_EPOCH = 6


def metrics_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def optimizer_steps(checkpoint: dict) -> int:
    """AdamW counts its steps per parameter: the optimizer state's own record of how far training got."""
    steps = {int(state["step"]) for state in checkpoint["optimizer"]["state"].values()}
    assert len(steps) == 1
    return steps.pop()


def load_checkpoint_file(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_digits_model_dir_is_a_complete_hand_off(digits_model_dir: Path):
    card = ModelCard.load(digits_model_dir)
    assert card.architecture == "torchvision" and card.labels == [str(d) for d in range(10)]
    assert (card.image_size, card.resize_size, card.dataset) == (64, 64, "digits")
    assert card.metrics["top1"] >= 0.90, card.metrics
    assert (
        0 <= card.metrics["top1"] <= card.metrics["top5"] <= 1
        and 1 <= card.metrics["epoch"] <= FIXTURE_EPOCHS
    )
    training = card.training
    assert training["optimizer"] == "adamw" and training["batch_size"] == 64 and training["world_size"] == 1
    # The fixture trains with --device auto: the GPU where there is one.
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert training["epochs"] == FIXTURE_EPOCHS and training["device"] == expected_device
    assert training["seconds"] > 0 and training["images_per_s"] > 0 and "AdamW" in training["note"]
    for name in ("model.safetensors", "checkpoint.pt", "checkpoint_best.pt", "metrics.jsonl"):
        assert (digits_model_dir / name).is_file(), name
    assert list((digits_model_dir / "tb").glob("events.out.tfevents.*")), "TensorBoard scalars"
    records = metrics_lines(digits_model_dir)
    assert [r["epoch"] for r in records] == list(range(1, FIXTURE_EPOCHS + 1))
    for r in records:  # images/s leaves out each epoch's first step (compile, autotuning, loader start-up)
        assert 0 < r["warm_up_seconds"] < r["seconds"]
        steady = (r["train_images"] - training["batch_size"]) / (r["seconds"] - r["warm_up_seconds"])
        assert r["images_per_s"] == pytest.approx(steady, rel=0.02), r
    assert max(r["top1"] for r in records) == pytest.approx(card.metrics["top1"], abs=1e-5)
    # The exported weights are the best epoch's: they classify the validation pixels export will use
    # exactly as well as model.json says.
    model, card = load_model_dir(digits_model_dir)
    pixels, labels = validation_pixels(card)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    images = (images - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
    with torch.no_grad():
        predicted = model(images).argmax(1).numpy()
    assert np.mean(predicted == labels) == pytest.approx(card.metrics["top1"], abs=1e-6)


@pytest.mark.pure
def test_two_ranks_train_on_the_one_process_batches_step_by_step():
    """What makes two ranks train like one, with DDP averaging their gradients: at every step the ranks'
    batches together are the one-process run's batch of twice the size, in every epoch. The sampler pads
    the last step with the epoch's first image (the DDP run below trains on 2,438 of 2,437 digits)."""
    source = load_data("synthetic", image_size=64, synthetic_size=101)

    def batches(rank: int, world_size: int, batch_size: int, epoch: int) -> list[list[int]]:
        train, _val = make_loaders(
            source, batch_size=batch_size, workers=0, rank=rank, world_size=world_size, seed=0,
            pin_memory=False,
        )  # fmt: skip
        train.sampler.set_epoch(epoch)
        return list(train.batch_sampler)

    for epoch in (0, 1):
        one = batches(0, 1, 16, epoch)
        first, second = batches(0, 2, 8, epoch), batches(1, 2, 8, epoch)
        assert len(one) == len(first) == len(second) == 7  # 6 full steps and a last one of 5 (or 3 + 3)
        for step, (single, ours, theirs) in enumerate(zip(one, first, second, strict=True)):
            padding = [one[0][0]] if step == len(one) - 1 else []
            assert sorted(ours + theirs) == sorted(single + padding), (epoch, step)
    assert batches(0, 1, 16, 0) != batches(0, 1, 16, 1)  # shuffled anew each epoch


@pytest.mark.slow
def test_two_cpu_processes_train_like_one(digits_model_dir: Path, two_rank_digits_run: TwoRankRun):
    """The DDP job's epoch beside the single-process run's first: the same global batch and rates, every
    image trained on once (half per rank), validation counted once, rank 0 alone printing and writing.
    Their accuracies after one warm-up epoch are not compared: the ranks draw their own dropout masks, and
    this early such draws alone (one process, another --seed) move top-1 by more than ten points."""
    out = two_rank_digits_run.out
    single, ddp = ModelCard.load(digits_model_dir), ModelCard.load(out)
    assert ddp.training["world_size"] == 2 and ddp.training["batch_size"] == 64  # the same global batch
    assert ddp.training["batch_size_per_process"] == DDP_BATCH_PER_PROCESS
    assert ddp.training["lr"] == single.training["lr"]
    (record,) = metrics_lines(out)
    single_first = metrics_lines(digits_model_dir)[0]
    assert record["lr"] == single_first["lr"]  # warm-up: the same rate at every step of the epoch
    # Both ranks trained on their half: 1,437 scans and 1,000 people-style digits, padded to 2,438 by the
    # sampler; every validation image counted once, across both ranks.
    assert record["train_images_by_rank"] == [1219, 1219] and record["train_images"] == 2438
    assert record["val_images"] == single_first["val_images"] == 360
    # It learnt: below a uniform guess's validation loss (ln 10), and at least three times chance.
    assert record["val_loss"] < math.log(10) and ddp.metrics["top1"] >= 0.3, record
    # Only rank 0 printed and wrote.
    output = "".join(two_rank_digits_run.outputs)
    assert output.count("epoch 1/1 ") == 1 and output.count("done: best validation") == 1, output
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "checkpoint.pt",
        "checkpoint_best.pt",
        "metrics.jsonl",
        "model.json",
        "model.safetensors",
        "tb",
    ]
    assert len(list((out / "tb").iterdir())) == 1


def start_training(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alexnet_cli", "train", *SMALL_RUN, "--out", str(out), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended early ({process.returncode}): {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for training")
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_then_sigkill_then_resume_finishes_exactly_like_an_uninterrupted_run(tmp_path: Path):
    reference = tmp_path / "reference"
    finished = alexnet_in_process("train", *SMALL_RUN, "--out", str(reference))
    assert finished.returncode == 0, finished.stderr
    out = tmp_path / "interrupted"

    # 1. Ctrl-C as the first epoch starts (an epoch is ~1 s here): the run stops after the step it is
    # in, with a checkpoint of that very step, and exit status 130.
    process = start_training(out)
    wait_for(lambda: (out / "tb").is_dir(), process)  # set up; the first epoch is starting
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr
    interrupted = load_checkpoint_file(out / "checkpoint.pt")
    assert interrupted["epoch"] == 0 and 0 < interrupted["step_in_epoch"] <= STEPS_PER_EPOCH
    assert (
        optimizer_steps(interrupted) == interrupted["epoch"] * STEPS_PER_EPOCH + interrupted["step_in_epoch"]
    )

    # 2. Resume with no other flags; SIGKILL once it has written its next epoch's checkpoint.
    process = subprocess.Popen(
        [sys.executable, "-m", "alexnet_cli", "train", "--out", str(out), "--resume"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    interrupted_file = (out / "checkpoint.pt").stat().st_ino
    wait_for(
        lambda: (out / "checkpoint.pt").stat().st_ino != interrupted_file, process
    )  # replaced atomically
    time.sleep(0.3)
    assert process.poll() is None, "the run should still be training its next epoch"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    killed = load_checkpoint_file(out / "checkpoint.pt")
    assert killed["epoch"] == interrupted["epoch"] + 1 and killed["step_in_epoch"] == 0
    assert optimizer_steps(killed) == killed["epoch"] * STEPS_PER_EPOCH

    # 3. Resume again: it continues from the checkpoint's epoch and finishes.
    resumed = alexnet_in_process("train", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"from epoch {killed['epoch'] + 1}" in resumed.stdout
    assert [r["epoch"] for r in metrics_lines(out)] == [1, 2]  # each epoch once, none lost or doubled
    final = load_checkpoint_file(out / "checkpoint.pt")
    assert final["epoch"] == SMALL_EPOCHS  # and the optimizer state carried over:
    assert optimizer_steps(final) == SMALL_EPOCHS * STEPS_PER_EPOCH
    # Exactly where it stopped: same weights, optimizer moments and metrics as the run never interrupted.
    expected = load_checkpoint_file(reference / "checkpoint.pt")
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=0, atol=0, msg=name)
    for key, state in expected["optimizer"]["state"].items():
        torch.testing.assert_close(
            final["optimizer"]["state"][key]["exp_avg"], state["exp_avg"], rtol=0, atol=0
        )
    # And the same metrics: the interrupted epoch's line counts the steps before the Ctrl-C too.
    assert without_timings(metrics_lines(out)) == without_timings(metrics_lines(reference))
    assert ModelCard.load(out).metrics == ModelCard.load(reference).metrics


def without_timings(records: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "warm_up_seconds", "images_per_s")}
        for r in records
    ]


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_rank_and_the_resumed_epoch_counts_them_all(tmp_path: Path):
    # Two CPU processes, 6 steps of 2 x 8 images per epoch: fewer steps than the 10 between the ranks'
    # stop checks, so the check at the epoch's end is the one that must stop them.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    train = ["-m", "training", "--data", "synthetic", "--synthetic-size", "96", "--batch-size", "8"]

    def command(out: Path, *extra: str) -> list[str]:
        return [*torchrun, *train, "--epochs", "1", "--out", str(out), *extra]

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command(out, *extra), cwd=REPO, capture_output=True, text=True, timeout=600, env=env
        )

    reference = run(tmp_path / "reference")
    assert reference.returncode == 0, reference.stdout + reference.stderr
    out = tmp_path / "interrupted"
    with process_group(command(out), REPO, env=env) as process:
        wait_for(lambda: (out / "tb").is_dir(), process)
        time.sleep(0.3)
        output = interrupt(process)  # the terminal's Ctrl-C: torchrun and both ranks
    assert "interrupted in epoch 1, step" in output and "--resume" in output, output
    interrupted = load_checkpoint_file(out / "checkpoint.pt")
    assert interrupted["epoch"] == 0 and 0 < interrupted["step_in_epoch"] <= STEPS_PER_EPOCH
    assert [t["images"] for t in interrupted["run"]["epoch_so_far"]] == [8 * interrupted["step_in_epoch"]] * 2

    resumed = run(out, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "from epoch 1" in resumed.stdout
    records = without_timings(metrics_lines(out))
    assert records[0]["train_images_by_rank"] == [48, 48]
    assert records == without_timings(metrics_lines(tmp_path / "reference"))


# --- bad input: one clear message, exit status 2, nothing already written lost -------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real file system of 1.1 GB (tmpfs) with room for one epoch's checkpoint and weights, not two; the
    test makes it larger, as a user would free space, with `mount -o remount,size=...`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1100m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes_once_there_is_room(small_disk: Path):
    out = small_disk / "run"
    first = alexnet_in_process("train", *SMALL_DATA, "--epochs", "1", "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    checkpoint = out / "checkpoint.pt"
    kept = checkpoint.stat()

    # Epoch 2's checkpoint (733 MB) does not fit in what is left: the write fails part-way.
    full = alexnet_in_process("train", "--out", str(out), "--resume", "--epochs", "2")
    assert_one_clear_error(full, "is full", "checkpoint.pt was not written", "--resume")
    assert (checkpoint.stat().st_ino, checkpoint.stat().st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert load_checkpoint_file(checkpoint)["epoch"] == 1
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []  # the partial file is gone

    subprocess.run(["mount", "-o", "remount,size=2500m", str(small_disk)], check=True)  # space freed
    resumed = alexnet_in_process("train", "--out", str(out), "--resume", "--epochs", "2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [line["epoch"] for line in metrics_lines(out)] == [1, 2]
    assert load_checkpoint_file(checkpoint)["epoch"] == 2


def assert_one_clear_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def finished_run(digits_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the digits run (checkpoints hard-linked: they are large and we never write into them)."""
    out = tmp_path / "run"
    out.mkdir()
    for path in digits_model_dir.iterdir():
        if path.is_file():
            os.link(path, out / path.name)
    return out


@pytest.mark.slow
def test_missing_and_empty_data_folders(tmp_path: Path):
    assert_one_clear_error(
        alexnet_in_process("train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")),
        "no such folder",
    )
    (tmp_path / "empty" / "train" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "cats").mkdir(parents=True)
    assert_one_clear_error(
        alexnet_in_process("train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")),
        "no images in",
        "train",
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_folder_of_unreadable_images(tmp_path: Path):
    for split in ("train", "val"):
        (tmp_path / "bad" / split / "cats").mkdir(parents=True)
        for i in range(3):
            (tmp_path / "bad" / split / "cats" / f"{i}.jpg").write_bytes(b"\xff\xd8 this is not a picture")
    result = alexnet_in_process("train", "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "o"))
    assert_one_clear_error(result, "none of the 3 images", "can be read")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_truncated_and_foreign_checkpoints_are_refused_and_kept(finished_run: Path):
    checkpoint = finished_run / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.unlink()  # break the hard link before writing: the fixture's file stays whole
    checkpoint.write_bytes(data[: len(data) // 3])
    before = snapshot(finished_run)
    assert_one_clear_error(alexnet_in_process("train", "--out", str(finished_run), "--resume"), "truncated")
    assert snapshot(finished_run) == before

    checkpoint.unlink()
    torch.save({"features.0.weight": torch.zeros(1)}, checkpoint)
    before = snapshot(finished_run)
    assert_one_clear_error(alexnet_in_process("train", "--out", str(finished_run), "--resume"), "--init")
    assert snapshot(finished_run) == before

    empty = finished_run.parent / "empty"
    empty.mkdir()
    assert_one_clear_error(alexnet_in_process("train", "--out", str(empty), "--resume"), "no checkpoint.pt")


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused(finished_run: Path):
    before = snapshot(finished_run)
    result = alexnet_in_process("train", "--out", str(finished_run), "--resume", "--arch", "paper")
    assert_one_clear_error(result, "--arch torchvision")
    assert snapshot(finished_run) == before


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_where_there_is_none(tmp_path: Path):
    result = alexnet_in_process("train", "--device", "cuda", "--out", str(tmp_path / "o"))
    assert_one_clear_error(result, "--device cuda", "--device cpu")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_training_on_an_image_folder_with_a_few_broken_files(tmp_path: Path):
    from test_training_data import make_image_folder

    root = make_image_folder(tmp_path / "photos", per_class=4, corrupt_train=2, corrupt_val=1)
    (root / "labels.txt").write_text("blue the blue class\ngreen\nred\n")
    out = tmp_path / "run"
    result = alexnet_in_process(
        "train", "--data", str(root), "--out", str(out), "--epochs", "1", "--batch-size", "7",
        "--workers", "1", "--optimizer", "sgd",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "skipped 2 unreadable training and 1 validation files" in result.stdout
    record = metrics_lines(out)[0]
    assert (record["train_skipped"], record["val_skipped"], record["val_images"]) == (2, 1, 6)
    card = ModelCard.load(out)
    assert card.labels == ["the blue class", "green", "red"] and card.dataset == str(root.resolve())
    assert (card.image_size, card.resize_size) == (64, 73) and card.training["augmentation"] == "torchvision"
    shutil.rmtree(out)


@pytest.mark.pure
def test_a_checkpoint_from_eight_gpus_resumes_on_one():
    """Each rank saves its own GPU's generator state; checkpoints from before kept every GPU's (a list),
    and resuming one of those on fewer GPUs must take the device's own entry, not fail."""
    from training.checkpointing import own_cuda_rng_state

    eight = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]
    assert own_cuda_rng_state({"cuda": eight}, torch.device("cuda", 0)) is eight[0]
    assert own_cuda_rng_state({"cuda": eight}, torch.device("cuda", 3)) is eight[3]
    assert own_cuda_rng_state({"cuda": eight[:1]}, torch.device("cuda", 5)) is eight[0]
    assert own_cuda_rng_state({"cuda": eight[2]}, torch.device("cuda", 0)) is eight[2]
    assert own_cuda_rng_state({"cuda": eight}, torch.device("cpu")) is None
    assert own_cuda_rng_state({}, torch.device("cuda", 0)) is None


@pytest.mark.pure
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_generator_state_round_trips_on_this_gpu():
    from training.checkpointing import rng_state, set_rng_state

    device = torch.device("cuda", 0)
    torch.randn(1, device=device)  # initialise CUDA
    saved = rng_state(device)
    expected = torch.randn(4, device=device)
    set_rng_state({**saved, "cuda": [saved["cuda"]] * 8}, device)  # the old, all-GPU format
    assert torch.equal(torch.randn(4, device=device), expected)
