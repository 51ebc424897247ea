"""Session fixtures for the training stage: the digits model, trained once per test session through the
real command line (`python -m alexnet_cli train ...`), which the export, serving and demo tests build on; and
one epoch of the same recipe as a two-process DDP job (torchrun), which the training and cluster tests share.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The quickstart recipe (torchvision AlexNet, digits, 64 px, AdamW + cosine), fewer epochs: enough for >= 90%.
FIXTURE_EPOCHS = 3
# The DDP job's per-process batch: two of them make the fixture's global batch of 64.
DDP_BATCH_PER_PROCESS = 32


def alexnet_command(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `alexnet ARGS...` as a user would (a fresh process), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "alexnet_cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def alexnet_in_process(*args: str) -> subprocess.CompletedProcess:
    """Run `alexnet ARGS...` in this process: the console script's code (alexnet_cli.run: "error: ..." and
    status 2 for a user error) without paying for a fresh interpreter and torch import each time."""
    import alexnet_cli

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, sys.argv = sys.argv, ["alexnet", *args]
    status = 0
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            alexnet_cli.run(alexnet_cli.app)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(["alexnet", *args], status, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def digits_model_dir(tmp_path_factory) -> Path:
    """A model directory (model.safetensors + model.json + checkpoints) of the torchvision AlexNet trained on
    the embedded digits at 64 px; validation top-1 >= 90%. Shared by the whole session: do not modify it."""
    out = tmp_path_factory.mktemp("digits") / "model"
    result = alexnet_command("train", "--data", "digits", "--out", str(out), "--epochs", str(FIXTURE_EPOCHS))
    if result.returncode != 0:
        pytest.fail(
            f"training the digits model failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return out


@dataclass(frozen=True)
class TwoRankRun:
    """A finished two-process DDP training job: its model directory and each torchrun's output."""

    out: Path
    outputs: list[str]  # stdout and stderr of each "node", in the order they were started


@pytest.fixture(scope="session")
def two_rank_digits_run(tmp_path_factory) -> TwoRankRun:
    """The digits recipe for one epoch as one DDP job of two CPU processes: two torchrun "nodes", one
    training process each, meeting at a c10d rendezvous on 127.0.0.1, exactly as srun or the indexed Job
    start them on two machines (training/cluster/). 32 images per process and step: the fixture's global
    batch. One epoch is all warm-up in both runs, so its steps have the single-process run's rates."""
    from common.ports import free_port

    out = tmp_path_factory.mktemp("two_ranks") / "model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-id", "loopback", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "-m", "training", "--data", "digits", "--epochs", "1", "--batch-size", str(DDP_BATCH_PER_PROCESS),
        "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    nodes = [
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=600)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    if [node.returncode for node in nodes] != [0, 0]:
        pytest.fail(
            f"the two-process digits run failed ({[node.returncode for node in nodes]}):\n"
            + "\n".join(output[-3000:] for output in outputs)
        )
    return TwoRankRun(out, outputs)
