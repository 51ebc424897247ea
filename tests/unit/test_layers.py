"""The stages depend one way (docs/architecture.md): common and triton_repository <- training <- export,
and serving and the demo never load torch. Checked twice: every import statement in the source, including
the ones inside functions, and what a fresh interpreter really loads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("common", "triton_repository", "training", "export", "serving", "demo")
TORCH = {"torch", "torchvision"}
# Triton loads these as model.py files, where triton_python_backend_utils exists; they are not importable.
MODEL_SOURCES = {"preprocess_model.py", "onnx_substitute.py"}
# What each package may never import (and so never depend on).
FORBIDDEN = {
    "common": {"triton_repository", "training", "export", "serving", "demo"} | TORCH,
    "triton_repository": {"training", "export", "serving", "demo"} | TORCH,
    "training": {"export", "serving", "demo"},
    "export": {"serving", "demo"},
    "serving": {"export", "demo"} | TORCH,
    "demo": {"export"} | TORCH,
}


def source_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement in `path` names, wherever the statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", STAGES)
def test_no_import_statement_points_against_the_layers(package):
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in source_files(package)
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN[package]
    }
    assert not wrong, f"{package} must not import {sorted(FORBIDDEN[package])}: {sorted(wrong)}"


def test_no_module_imports_a_private_path_of_another_library():
    project = {*STAGES, "alexnet_cli"}
    private = {
        f"{path.relative_to(ROOT)}: {name}"
        for package in STAGES
        for path in source_files(package)
        for name in imported_modules(path)
        if name.split(".")[0] not in project
        and name != "__future__"
        and any(part.startswith("_") for part in name.split("."))
    }
    assert not private


def test_serving_and_the_demo_load_no_torch_when_imported():
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in ("common", "triton_repository", "serving", "demo")
        for path in source_files(package)
        if path.name != "__init__.py" and path.name not in MODEL_SOURCES
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not set(json.loads(result.stdout)) & TORCH
