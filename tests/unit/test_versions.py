"""The two ends of the tested versions: pyproject.toml's ranges, and the GPU machine's environment
(.ci/gpu-machine.txt) that `make test-gpu-machine` installs at their lower end."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# Where the GPU machine has its own versions, not the project's pins.
ITS_OWN = {"torch", "torchvision", "onnxruntime", "numpy"}


def requirements(lines: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in lines]
    return {requirement.name.lower(): requirement for requirement in parsed}


def project() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return requirements(data["project"]["dependencies"] + data["project"]["optional-dependencies"]["test"])


def gpu_machine() -> dict[str, Requirement]:
    text = (ROOT / ".ci" / "gpu-machine.txt").read_text()
    return requirements([line for line in text.splitlines() if line.strip() and not line.startswith("#")])


def test_the_gpu_machine_runs_the_lowest_torch_the_project_declares():
    declared, machine = project(), gpu_machine()
    for name in ("torch", "torchvision"):
        (pin,) = machine[name].specifier
        assert pin.operator == "==", machine[name]
        lowest = next(spec.version for spec in declared[name].specifier if spec.operator == ">=")
        assert pin.version.startswith(lowest) and pin.version in declared[name].specifier, (name, pin)
    numpy = machine["numpy"].specifier
    assert numpy.contains("2.5.0") and not numpy.contains("1.26.4"), "the GPU machine has numpy 2"


def test_the_gpu_machine_shares_every_other_pin_with_the_project():
    declared, machine = project(), gpu_machine()
    for name, requirement in machine.items():
        if name in ITS_OWN:
            continue
        assert name in declared, f"{name}: not a dependency of the project"
        assert requirement.specifier == declared[name].specifier, (requirement, declared[name])
        assert requirement.extras == declared[name].extras, (requirement, declared[name])
