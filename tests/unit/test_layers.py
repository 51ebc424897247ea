"""docs/architecture.md, "Layers: who may import whom", holds a table of which project packages each package
(and alexnet_cli.py) imports, and whether it may load torch. These tests read that table and compare it both
ways with every import statement in the source, including the ones inside functions: an import the table
does not allow fails, and so does an allowed import that nothing uses any more. "torch: no" is also checked
in a fresh interpreter, on what importing those packages really loads."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
SECTION = "## Layers: who may import whom"
TORCH = {"torch", "torchvision"}
# Triton loads these as model.py files, where triton_python_backend_utils exists; they are not importable.
MODEL_SOURCES = {"preprocess_model.py", "onnx_substitute.py"}
NOT_SOURCE = {"tests", "docs", "build", "dist"}


def documented_layers() -> dict[str, tuple[set[str], bool]]:
    """The page's table: package -> (the project packages it imports, whether it may load torch)."""
    text = PAGE.read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    layers = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        package = cells[0].strip("`").removesuffix("/").removesuffix(".py")
        layers[package] = (set(re.findall(r"`(\w+)`", cells[1])), cells[2] == "yes")
    return layers


LAYERS = documented_layers()


def source_files(package: str) -> list[Path]:
    single = ROOT / f"{package}.py"
    return [single] if single.is_file() else sorted((ROOT / package).rglob("*.py"))


def project_packages() -> set[str]:
    """Every top-level package and module of the project: a new one must get its row in the table."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in NOT_SOURCE}
    return packages | {p.stem for p in ROOT.glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement in `path` names, wherever the statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imports_of(package: str) -> dict[str, set[str]]:
    """Top-level name -> the 'file: module' import statements of `package` that name it."""
    found: dict[str, set[str]] = {}
    for path in source_files(package):
        for name in imported_modules(path):
            found.setdefault(name.split(".")[0], set()).add(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_the_table_has_a_row_for_every_package_of_the_project():
    assert LAYERS, f"no table under {SECTION!r} in {PAGE}"
    assert set(LAYERS) == project_packages()


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_the_project_imports_of_each_package_are_the_documented_ones(package):
    allowed, _ = LAYERS[package]
    found = imports_of(package)
    used = (set(found) & project_packages()) - {package}
    undocumented = {name: sorted(found[name]) for name in used - allowed}
    assert not undocumented, f"{package} imports what docs/architecture.md does not allow: {undocumented}"
    unused = sorted(allowed - used)
    assert not unused, f"docs/architecture.md lets {package} import {unused}, and no module of it does"


@pytest.mark.parametrize("package", sorted(p for p, (_, torch) in LAYERS.items() if not torch))
def test_no_import_statement_names_torch_where_the_table_says_no(package):
    found = imports_of(package)
    assert not TORCH & set(found), sorted(set().union(*(found[name] for name in TORCH & set(found))))


def test_no_module_imports_a_private_path_of_another_library():
    project = project_packages()
    private = {
        f"{path.relative_to(ROOT)}: {name}"
        for package in LAYERS
        for path in source_files(package)
        for name in imported_modules(path)
        if name.split(".")[0] not in project
        and name != "__future__"
        and any(part.startswith("_") for part in name.split("."))
        # typer 0.29 (pinned) ships its own click; its usage errors are only importable from there.
        and name != "typer._click.exceptions"
    }
    assert not private


def test_the_packages_without_torch_load_none_when_imported():
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package, (_, torch) in sorted(LAYERS.items())
        if not torch
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
