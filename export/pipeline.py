"""`alexnet export onnx` as a function: model dir -> checked ONNX (+ INT8, + the fc7 embedding) -> Triton
repository.

Nothing reaches REPO before every check has passed: the files are written and checked in a scratch
folder beside REPO (see repository.RepositoryUpdate) and moved in at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.hashing import sha256_of
from common.model_card import KERNELS_FILE, WEIGHTS_FILE, ModelCard
from export.errors import ExportError
from export.images import calibration_images, real_images
from export.onnx_export import export_embedding_onnx, export_onnx, stamp_metadata
from export.parity import FP32_TOLERANCE, ParityReport, check_parity, run_batched
from export.quantize import (
    MIN_INT8_AGREEMENT,
    QUANTIZATION,
    Int8Report,
    check_int8_agreement,
    evaluate_int8,
    quantize_int8,
)
from export.repository import PlannedModel, RepositoryUpdate, check_repository_takes, choose_version
from triton_repository.configs import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_QUEUE_DELAY_MICROSECONDS,
    DEVICES,
    embedding_ensemble_config,
    embedding_model_config,
    ensemble_config,
    onnx_model_config,
    preprocess_config,
)
from triton_repository.layout import INPUT_NAME, ONNX_FILE, ModelNames, write_preprocess_model

PARITY_BATCH_SIZES = (1, 7)  # plus the maximum batch size


@dataclass
class ExportResult:
    repository: Path
    version: int
    models: list[str]
    parity: ParityReport
    int8: Int8Report | None = None
    written: list[Path] = field(default_factory=list)
    embedding: ParityReport | None = None

    def summary(self) -> str:
        lines = [self.parity.summary()]
        if self.int8 is not None:
            lines.append(self.int8.summary())
        if self.embedding is not None:
            lines.append(self.embedding.summary())
        lines.append(f"wrote version {self.version} of {', '.join(self.models)} into {self.repository}")
        return "\n".join(lines)


def load_checked_model(model_dir: Path):
    """(eval network on the CPU, card), after checking the weights are the ones model.json names."""
    from training.model_dir import load_model_dir

    card = ModelCard.load(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if card.weights_sha256 and weights.is_file():
        actual = sha256_of(weights)
        if actual != card.weights_sha256:
            raise ExportError(
                f"{weights} (sha256 {actual[:12]}...) is not the file {model_dir}/model.json was written for "
                f"(sha256 {card.weights_sha256[:12]}...): the weights were replaced after training; "
                f"train again with `alexnet train --out {model_dir}` or restore the original weights"
            )
    return load_model_dir(model_dir, device="cpu")


def torch_classifier(network, card: ModelCard, wrap=None) -> Callable[[np.ndarray], np.ndarray]:
    """The PyTorch reference: the same wrapper the exporter traced (`wrap`, default PixelsToProbabilities),
    in eval mode, on the CPU."""
    import torch

    from export.onnx_export import PixelsToProbabilities

    wrapper = (wrap or PixelsToProbabilities)(network, card).eval()

    def classify(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapper(torch.from_numpy(np.ascontiguousarray(pixels))).numpy()

    return classify


def ort_classifier(session) -> Callable[[np.ndarray], np.ndarray]:
    output_name = session.get_outputs()[0].name
    return lambda pixels: session.run([output_name], {INPUT_NAME: pixels})[0]


def check_onnx_against_pytorch(
    network,
    card: ModelCard,
    session,
    images: np.ndarray,
    images_name: str,
    *,
    batch_sizes: tuple[int, ...],
    max_batch_size: int,
    tolerance: float = FP32_TOLERANCE,
) -> ParityReport:
    """ONNX Runtime FP32 against the PyTorch network on the same pixels: where every export starts."""
    return check_parity(
        torch_classifier(network, card),
        ort_classifier(session),
        images=images,
        images_name=images_name,
        image_size=card.image_size,
        batch_sizes=batch_sizes,
        max_batch_size=max_batch_size,
        tolerance=tolerance,
        reference_name="PyTorch eager",
        candidate_name="ONNX Runtime FP32",
    )


def validate_options(max_batch_size: int, device: str, fp16: bool, queue_delay_us: int = 0) -> None:
    if max_batch_size < 1:
        raise ExportError(
            f"--max-batch-size {max_batch_size}: use 1 or more (Triton batches up to this many)"
        )
    if queue_delay_us < 0:
        raise ExportError(f"--queue-delay-us {queue_delay_us}: use 0 (no waiting) or more microseconds")
    if device not in DEVICES:
        raise ExportError(f"--device {device}: use one of {', '.join(DEVICES)}")
    if fp16 and device == "cpu":
        raise ExportError(
            "--fp16 sets TensorRT's precision on GPU instances: drop it, or export with --device gpu"
        )


def planned_models(
    names: ModelNames,
    card: ModelCard,
    *,
    features: int,
    int8: bool,
    embedding: bool,
    device: str,
    fp16: bool,
    max_batch_size: int,
    queue_delay_us: int,
) -> list[PlannedModel]:
    """Every model an export writes, in the order their configs are committed (an ensemble after the
    models it calls). Known before any work, so a repository that cannot take them is refused at once."""
    batching = {"max_batch_size": max_batch_size, "queue_delay_us": queue_delay_us}
    plan = [("onnx", onnx_model_config(names.onnx, card, device=device, fp16=fp16, **batching), True)]
    if int8:
        plan.append(("int8", onnx_model_config(names.int8, card, device=device, int8=True, **batching), True))
    plan += [
        (
            "preprocess",
            preprocess_config(names.preprocess, card, max_batch_size=max_batch_size, device=device),
            False,
        ),
        ("image", ensemble_config(names, card, max_batch_size=max_batch_size), True),
    ]
    if embedding:
        plan += [
            (
                "embedding",
                embedding_model_config(names.embedding, card, features=features, device=device, **batching),
                False,
            ),
            (
                "embedding_image",
                embedding_ensemble_config(names, card, features=features, max_batch_size=max_batch_size),
                False,
            ),
        ]
    return [PlannedModel(kind, config, labels) for kind, config, labels in plan]


def export_repository(
    model_dir: Path,
    repository: Path,
    *,
    name: str = "alexnet",
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    int8: bool = False,
    int8_min_agreement: float | None = None,  # None: MIN_INT8_AGREEMENT
    calibration_data: Path | None = None,
    device: str = "gpu",
    fp16: bool = False,
    version: int | None = None,
    tolerance: float = FP32_TOLERANCE,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_MICROSECONDS,
    log: Callable[[str], None] = print,
    embedding: bool = True,
) -> ExportResult:
    """Export `model_dir` into the Triton repository `repository` (see the module docstring)."""

    validate_options(max_batch_size, device, fp16, queue_delay_us)
    network, card = load_checked_model(model_dir)
    names = ModelNames(name)
    planned = planned_models(
        names, card, features=network.classifier[-1].in_features, int8=int8, embedding=embedding,
        device=device, fp16=fp16, max_batch_size=max_batch_size, queue_delay_us=queue_delay_us,
    )  # fmt: skip
    check_repository_takes(repository, planned, card, model_dir=model_dir, name=name)
    model_names = [model.name for model in planned]
    version = choose_version(repository, model_names, version)
    if int8:
        images, images_name = calibration_images(card, calibration_data)
    else:
        images, images_name = real_images(card, calibration_data)

    with RepositoryUpdate(repository) as update:
        log(f"exporting {model_dir} ({card.architecture}, {card.num_classes} classes, {card.image_size} px)")
        files = _ModelFiles(
            network, card, images, images_name, model_dir=model_dir, repository=repository,
            max_batch_size=max_batch_size, tolerance=tolerance, int8_min_agreement=int8_min_agreement,
            log=log,
        )  # fmt: skip
        # Every model gets its version folder: an ensemble has no files, but Triton wants the folder.
        for model in planned:
            files.write(model.kind, update.version_dir(model.name, version))
        for model in planned:
            update.add_config(model.config, card if model.labels else None)
        written = update.commit()
    return ExportResult(repository, version, model_names, files.parity, files.int8, written, files.embedding)


@dataclass
class _ModelFiles:
    """Writes each planned model's files into its version folder, in the plan's order (<name> first: the
    INT8 model is quantised from its ONNX file), each behind its check; keeps what the checks found."""

    network: Any
    card: ModelCard
    images: np.ndarray
    images_name: str
    model_dir: Path
    repository: Path
    max_batch_size: int
    tolerance: float
    int8_min_agreement: float | None
    log: Callable[[str], None]
    parity: ParityReport | None = None
    int8: Int8Report | None = None
    embedding: ParityReport | None = None
    fp32: tuple[Path, Any] | None = None  # <name>'s ONNX file and its ONNX Runtime session

    # kind -> the method that writes its files; the ensembles ("image", "embedding_image") have none.
    WRITERS: ClassVar[dict[str, str]] = {
        "onnx": "write_onnx",
        "int8": "write_int8",
        "preprocess": "write_preprocess",
        "embedding": "write_embedding",
    }

    def write(self, kind: str, version_dir: Path) -> None:
        if kind in self.WRITERS:
            getattr(self, self.WRITERS[kind])(version_dir)

    def write_preprocess(self, version_dir: Path) -> None:
        write_preprocess_model(version_dir)

    def write_onnx(self, version_dir: Path) -> None:
        from common.onnx_session import create_session

        onnx_path = version_dir / ONNX_FILE
        export_onnx(self.network, self.card, onnx_path)
        session = create_session(onnx_path, device="cpu")  # parity is about the graph's maths: CPU
        self.parity = check_onnx_against_pytorch(
            self.network,
            self.card,
            session,
            self.images,
            self.images_name,
            batch_sizes=(*PARITY_BATCH_SIZES, self.max_batch_size),
            max_batch_size=self.max_batch_size,
            tolerance=self.tolerance,
        )
        self.log(self.parity.summary())
        if not self.parity.passed:
            raise ExportError(
                f"the ONNX model does not match PyTorch ({self.parity.failures()}); "
                f"{self.repository} was left unchanged. Check that model.json describes these weights "
                "(architecture, image size, mean/std)"
            )
        self.fp32 = (onnx_path, session)
        _write_kernel_figure(version_dir, self.network, self.model_dir)

    def write_int8(self, version_dir: Path) -> None:
        onnx_path, session = self.fp32
        self.int8 = _export_int8(
            version_dir / ONNX_FILE, onnx_path, session, self.images, self.card, self.max_batch_size,
            self.int8_min_agreement,
        )  # fmt: skip
        self.log(self.int8.summary())

    def write_embedding(self, version_dir: Path) -> None:
        self.embedding = _export_embedding(
            version_dir, self.network, self.card, self.images, self.images_name, repository=self.repository,
            max_batch_size=self.max_batch_size, tolerance=self.tolerance,
        )  # fmt: skip
        self.log(self.embedding.summary())


def _export_int8(
    int8_path: Path, onnx_path: Path, fp32_session, images, card, max_batch_size, min_agreement
) -> Int8Report:
    from common.onnx_session import create_session

    seconds = quantize_int8(onnx_path, int8_path, images)
    stamp_metadata(int8_path, card, {"quantization": QUANTIZATION})
    int8_session = create_session(int8_path, device="cpu")
    report = evaluate_int8(
        fp32_session, int8_session, images, batch_size=max_batch_size, quantize_seconds=seconds
    )
    check_int8_agreement(report, MIN_INT8_AGREEMENT if min_agreement is None else min_agreement)
    return report


def _write_kernel_figure(version_dir: Path, network, model_dir: Path) -> None:
    """The first layer's kernels (the paper's Figure 3, and what training changed where the run's
    checkpoint knows) beside the served model, for the demo to show (the demo never imports torch)."""
    from training.figures import initial_kernels, kernel_figure, write_png

    write_png(kernel_figure(network, initial_kernels(model_dir)), version_dir / KERNELS_FILE)


def _export_embedding(
    version_dir: Path,
    network,
    card: ModelCard,
    images: np.ndarray,
    images_name: str,
    *,
    repository: Path,
    max_batch_size: int,
    tolerance: float,
) -> ParityReport:
    """<name>_embedding's ONNX file (pixels -> fc7 features), after the same parity gate as <name>."""
    from common.onnx_session import create_session
    from export.onnx_export import PixelsToFeatures

    path = export_embedding_onnx(network, card, version_dir / ONNX_FILE)
    parity = check_features_against_pytorch(
        torch_classifier(network, card, PixelsToFeatures),
        ort_classifier(create_session(path, device="cpu")),
        images,
        images_name,
        image_size=card.image_size,
        batch_sizes=(*PARITY_BATCH_SIZES, max_batch_size),
        max_batch_size=max_batch_size,
        tolerance=tolerance,
    )
    if not parity.passed:
        raise ExportError(
            f"the ONNX embedding model does not match PyTorch ({parity.failures()}); {repository} "
            "was left unchanged. Export with --no-embedding to skip it, and report this"
        )
    return parity


def check_features_against_pytorch(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    images_name: str,
    *,
    image_size: int,
    batch_sizes: tuple[int, ...],
    max_batch_size: int,
    tolerance: float,
) -> ParityReport:
    """The probabilities' parity gate on features: probabilities lie in [0, 1]; features are divided by the
    reference's largest feature on the real images first, so the same tolerance means the same thing."""
    largest = float(np.abs(run_batched(reference, images, max_batch_size)).max()) if len(images) else 0.0
    scale = largest or 1.0
    return check_parity(
        lambda pixels: reference(pixels) / scale,
        lambda pixels: candidate(pixels) / scale,
        images=images,
        images_name=images_name,
        image_size=image_size,
        batch_sizes=batch_sizes,
        max_batch_size=max_batch_size,
        tolerance=tolerance,
        reference_name=f"PyTorch eager fc7 features / {scale:.4g} (their largest value)",
        candidate_name="ONNX Runtime FP32 fc7 features",
    )
