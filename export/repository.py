"""Writing into the Triton model repository: the next version, and a transactional update.

What goes where, and every config, is the triton_repository package's; this module only stages and
commits. `RepositoryUpdate` stages every file in a scratch folder next to REPO (same file system), and
only `commit()` moves them in, by renames: a model new to REPO as one whole folder, config included (a
model folder without its config stops a Triton that serves REPO), an existing model's version folders
first and then its config (so a polling Triton never sees a config whose files are not there yet). Every
staged file is on disk (fsync) before the first rename, and every folder a rename changed after the last,
so a crash or a power cut leaves REPO as it was or with whole models. Until then REPO is untouched, so a
failed check leaves it byte-for-byte as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from common.model_card import ModelCard, repository_beside
from export.errors import ExportError
from triton_repository.configs import config_text, io_signature, labels_text, parse_config, read_config
from triton_repository.layout import CONFIG_FILE, LABELS_FILE, versions


def choose_version(repository: Path, model_names: list[str], requested: int | None) -> int:
    """`requested`, if no model already has it; else one above the highest version of these models."""
    taken = {name: versions(repository / name) for name in model_names}
    if requested is not None:
        if requested < 1:
            raise ExportError(f"--version {requested}: Triton versions are positive integers")
        clashes = [name for name, numbers in taken.items() if requested in numbers]
        if clashes:
            raise ExportError(
                f"version {requested} of {', '.join(clashes)} already exists in {repository}: "
                "pick another --version, or leave it out to add the next one"
            )
        return requested
    return 1 + max((max(numbers) for numbers in taken.values() if numbers), default=0)


def incompatibility(repository: Path, config: mc.ModelConfig, card: ModelCard | None) -> str | None:
    """Why `config` (and `card`'s labels) cannot join the model of that name in `repository`, or None.

    Triton keeps one config.pbtxt per model for all its versions: a new version with other inputs,
    outputs or labels would silently break the versions served now."""
    served = repository / config.name / CONFIG_FILE
    if not served.is_file():
        return None
    old, new = io_signature(read_config(served.parent)), io_signature(config)
    if old != new:
        return f"{served.parent} serves {_describe(old)}; this model needs {_describe(new)}"
    served_labels = repository / config.name / LABELS_FILE
    if card is not None and served_labels.is_file() and served_labels.read_text() != labels_text(card):
        return f"{served.parent} serves other class names than this model's"
    return None


def _describe(signature: dict[str, list[tuple[str, str, tuple[int, ...]]]]) -> str:
    def tensors(kind: str) -> str:
        return ", ".join(f"{name} {dtype} {list(shape)}" for name, dtype, shape in signature[kind])

    return f"inputs {tensors('inputs')} and outputs {tensors('outputs')}"


@dataclass(frozen=True)
class PlannedModel:
    """One model an export writes: what it is (the ModelNames property that names it: "onnx", "int8",
    "preprocess", "image", "embedding", "embedding_image"), its config, and whether the card's labels.txt
    goes beside it."""

    kind: str
    config: mc.ModelConfig
    labels: bool

    @property
    def name(self) -> str:
        return self.config.name


def check_repository_takes(
    repository: Path, planned: list[PlannedModel], card: ModelCard, *, model_dir: Path, name: str
) -> None:
    """Refuse, before any work, an export whose models cannot join those of the same name in `repository`."""
    problems = [
        problem
        for model in planned
        if (problem := incompatibility(repository, model.config, card if model.labels else None))
    ]
    if problems:
        other_name = re.sub(r"\W+", "_", f"{name}_{Path(model_dir).resolve().name}")
        own_repository = repository_beside(model_dir)
        raise ExportError(
            f"{problems[0]}. Triton keeps one config for all versions of a model, so adding this one would "
            f"break the versions served now; nothing was written. Export under another name "
            f"(--name {other_name}) or into a repository of its own (--repository {own_repository})"
        )


class RepositoryUpdate:
    """Files for REPO, staged in a scratch folder beside it; `commit()` moves them in by renames."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository.resolve()
        if self.repository.exists() and not self.repository.is_dir():
            raise ExportError(f"{repository} exists and is not a folder: pass a folder for --repository")
        self.repository.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(
            tempfile.mkdtemp(dir=self.repository.parent, prefix=f".{self.repository.name}.staging-")
        )
        self._config_order: list[str] = []
        self._models: list[str] = []  # staged model folders, in the order they were first touched

    def __enter__(self) -> RepositoryUpdate:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def version_dir(self, model: str, version: int) -> Path:
        path = self.staging / model / str(version)
        path.mkdir(parents=True, exist_ok=True)
        if model not in self._models:
            self._models.append(model)
        return path

    def add_config(
        self, config: mc.ModelConfig, card: ModelCard | None = None, *, labels: bool = True
    ) -> None:
        """Stage config.pbtxt (and labels.txt) for a model, after checking it can replace the served one."""
        folder = self.staging / config.name
        folder.mkdir(parents=True, exist_ok=True)
        text = config_text(config)
        parse_config(text)  # what we write must parse; cheap, and the tests check it too
        problem = incompatibility(self.repository, config, card if labels else None)
        if problem:
            raise ExportError(
                f"{problem}: another export changed {self.repository} at the same time; export again"
            )
        (folder / CONFIG_FILE).write_text(text)
        if labels and card is not None:
            (folder / LABELS_FILE).write_text(labels_text(card))
        self._config_order.append(config.name)

    def commit(self) -> list[Path]:
        """Move the staged files into REPO, durably: new models whole, else version folders first, then
        configs and labels."""
        self.repository.mkdir(parents=True, exist_ok=True)
        _sync_tree(self.staging)  # the data is on disk before any rename can make it visible
        written: list[Path] = []
        changed_folders = {self.repository}
        moved_whole = set()
        for model in dict.fromkeys([*self._models, *self._config_order]):
            target_model = self.repository / model
            if not target_model.exists():
                os.rename(self.staging / model, target_model)
                moved_whole.add(model)
                written += sorted(target_model.iterdir())
        for model in self._models:
            if model in moved_whole:
                continue
            staged_model = self.staging / model
            target_model = self.repository / model
            changed_folders.add(target_model)
            for staged_version in sorted(p for p in staged_model.iterdir() if p.is_dir()):
                target = target_model / staged_version.name
                if target.exists():
                    raise ExportError(
                        f"{target} appeared while exporting: another export ran at the same time"
                    )
                os.rename(staged_version, target)
                written.append(target)
        for name in self._config_order:
            if name in moved_whole:
                continue
            changed_folders.add(self.repository / name)
            for staged_file in sorted(p for p in (self.staging / name).iterdir() if p.is_file()):
                target = self.repository / name / staged_file.name
                os.replace(staged_file, target)
                written.append(target)
        for folder in sorted(changed_folders):
            _sync(folder)  # the renames themselves are on disk
        _sync(self.repository.parent)
        return written


def _sync(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames into it durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_tree(root: Path) -> None:
    """fsync every regular file and folder under `root`, files before the folders that hold them."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                _sync(path)
        _sync(Path(folder))
