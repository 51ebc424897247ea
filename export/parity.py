"""Do two implementations of one classifier agree? (PyTorch vs ONNX Runtime, FP32 vs INT8, ORT vs TensorRT.)

Each check runs both on the same uint8 pixels and reports the largest absolute difference between
their probabilities and how often their top-1 classes agree. A top-1 disagreement where the
reference itself scores both classes within the tolerance of each other is a numerical tie, not an
error (an untrained or undecided network has many), and is reported separately.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

Classifier = Callable[[np.ndarray], np.ndarray]  # uint8 [N, S, S, 3] -> float32 [N, classes]

# FP32 ONNX Runtime vs PyTorch on the CPU differ by ~1e-7 (different kernels sum in different
# orders); 1e-4 on a probability leaves room for other kernels (oneDNN vs MLAS, GPUs) and still
# catches any real mistake (a wrong mean, layout or weight shows up at 1e-2 and above).
FP32_TOLERANCE = 1e-4


@dataclass
class ParityCheck:
    """One comparison: what was compared and what came out."""

    name: str
    images: int
    max_abs_diff: float
    top1_agreement: float  # fraction of images whose top-1 classes are identical
    ties: int  # disagreements that are within the tolerance in the reference (not failures)
    disagreements: int  # top-1 disagreements beyond the tolerance (failures)
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.disagreements == 0 and self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        ties = f", {self.ties} numerical ties" if self.ties else ""
        return (
            f"{self.name}: {self.images} images, top-1 agreement {self.top1_agreement:.2%}{ties}, "
            f"max |diff| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}) {verdict}"
        )

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


@dataclass
class ParityReport:
    reference: str
    candidate: str
    checks: list[ParityCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def max_abs_diff(self) -> float:
        return max(check.max_abs_diff for check in self.checks)

    def summary(self) -> str:
        lines = [f"parity, {self.candidate} vs {self.reference}:"]
        lines += [f"  {check.line()}" for check in self.checks]
        return "\n".join(lines)

    def failures(self) -> str:
        return "; ".join(check.line() for check in self.checks if not check.passed)

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "checks": [check.as_dict() for check in self.checks],
        }


def run_batched(classify: Classifier, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Run `classify` over `pixels` in batches of at most `batch_size` and stack the outputs."""
    outputs = [classify(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)]
    return np.concatenate(outputs).astype(np.float32, copy=False)


def compare_outputs(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> ParityCheck:
    """Max absolute difference and top-1 agreement of two [N, classes] probability arrays."""
    if reference.shape != candidate.shape:
        raise ValueError(f"{name}: output shapes differ: {reference.shape} vs {candidate.shape}")
    reference_top1 = reference.argmax(axis=1)
    candidate_top1 = candidate.argmax(axis=1)
    differ = reference_top1 != candidate_top1
    rows = np.arange(len(reference))
    # The candidate's choice is a tie if the reference scores it within twice the tolerance of its own best:
    # both scores may move by the tolerance, so two classes that close can swap places within it.
    gap = reference[rows, reference_top1] - reference[rows, candidate_top1]
    ties = int(np.sum(differ & (gap <= 2 * tolerance)))
    return ParityCheck(
        name=name,
        images=len(reference),
        max_abs_diff=float(np.max(np.abs(reference - candidate))) if reference.size else 0.0,
        top1_agreement=float(np.mean(~differ)) if len(reference) else 1.0,
        ties=ties,
        disagreements=int(np.sum(differ)) - ties,
        tolerance=tolerance,
    )


def random_pixels(batch_size: int, image_size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, size=(batch_size, image_size, image_size, 3), dtype=np.uint8
    )


def check_parity(
    reference: Classifier,
    candidate: Classifier,
    *,
    images: np.ndarray,
    images_name: str,
    image_size: int,
    batch_sizes: Iterable[int],
    max_batch_size: int,
    tolerance: float,
    reference_name: str,
    candidate_name: str,
) -> ParityReport:
    """Real images (in batches of `max_batch_size`) and random pixels at each of `batch_sizes`."""
    checks = []
    if len(images):
        checks.append(
            compare_outputs(
                images_name,
                run_batched(reference, images, max_batch_size),
                run_batched(candidate, images, max_batch_size),
                tolerance,
            )
        )
    for seed, batch_size in enumerate(sorted(set(batch_sizes))):
        pixels = random_pixels(batch_size, image_size, seed)
        checks.append(
            compare_outputs(
                f"random pixels, batch {batch_size}",
                reference(pixels).astype(np.float32),
                candidate(pixels).astype(np.float32),
                tolerance,
            )
        )
    return ParityReport(reference=reference_name, candidate=candidate_name, checks=checks)
