"""Session fixtures for the export stage: the digits model exported (--device cpu) into a Triton model
repository, which the serving and demo tests serve. INT8 is left out on purpose: its gate depends on the
CPU's integer kernels, and tests/test_int8.py tests it on its own, so a refusal fails only those tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_export(digits_model_dir: Path, tmp_path_factory):
    """ExportResult of `alexnet export onnx --model <digits model> --repository <tmp> --device cpu`."""
    from export.pipeline import export_repository

    repository = tmp_path_factory.mktemp("export") / "model_repository"
    return export_repository(digits_model_dir, repository, device="cpu", log=lambda line: None)


@pytest.fixture(scope="session")
def digits_repository(digits_export) -> Path:
    """A Triton model repository: alexnet, alexnet_preprocess and alexnet_image, version 1.
    Shared by every test of the session: copy it before changing it."""
    return digits_export.repository
