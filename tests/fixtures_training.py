"""Session fixtures for the training stage: the digits model, trained once per test session through the
real command line (`python -m alexnet_cli train ...`), which the export, serving and demo tests build on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The quickstart recipe (torchvision AlexNet, digits, 64 px, AdamW + cosine), fewer epochs: enough for >= 90%.
FIXTURE_EPOCHS = 4


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
