"""Session fixtures for the training stage: the digits model, trained once per test session through the
real command line (`python -m alexnet_cli train ...`), which the export, serving and demo tests build on."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The quickstart recipe (torchvision AlexNet, digits, 64 px, AdamW + cosine), fewer epochs: enough for >= 90%.
FIXTURE_EPOCHS = 3


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
