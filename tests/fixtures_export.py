"""Session fixtures for the export stage: the digits model exported (with --int8, --device cpu) into a
Triton model repository, which the serving and demo tests serve."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_export(digits_model_dir: Path, tmp_path_factory):
    """ExportResult of `alexnet export onnx --model <digits model> --repository <tmp> --int8 --device cpu`."""
    from export.pipeline import export_repository

    repository = tmp_path_factory.mktemp("export") / "model_repository"
    return export_repository(digits_model_dir, repository, int8=True, device="cpu", log=lambda line: None)


@pytest.fixture(scope="session")
def digits_repository(digits_export) -> Path:
    """A Triton model repository: alexnet, alexnet_int8, alexnet_preprocess and alexnet_image, version 1.
    Shared by every test of the session: copy it before changing it."""
    return digits_export.repository
