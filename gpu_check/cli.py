"""`python -m gpu_check` (`make gpu-check`): the parts in order, each within its budget, a hard stop after
the whole budget, and the verdict."""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gpu_check.agreement import FAULTS, Compared, calibrate, describe_confidence, load_compared
from gpu_check.harness import (
    CPU_SIZES,
    DEFAULT_BUDGET_S,
    DEFAULT_OUT,
    GPU_SIZES,
    HARD_STOP_AFTER_BUDGET_S,
    LOG_FILE,
    PARTS,
    REPORT_FILE,
    Check,
    Section,
    imported_optional_packages,
)
from gpu_check.inference_parts import check_inference, check_onnx, check_tensorrt
from gpu_check.machine import describe_machine
from gpu_check.training_parts import (
    check_ddp,
    check_jpeg_decode,
    check_resume_on_gpu,
    check_training_loop,
    check_training_throughput,
)


def run_check(
    out: Path,
    budget_s: float,
    device: torch.device,
    *,
    fault: str | None = None,
    model_dir: Path | None = None,
    parts: tuple[str, ...] = PARTS,
    hard_stop_s: float | None = None,
) -> bool:
    sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    check = Check(out, budget_s, device, sizes, fault)
    hard_stop_s = hard_stop_s if hard_stop_s is not None else budget_s + HARD_STOP_AFTER_BUDGET_S
    # A hard stop a little after the budget, whatever hangs: the watchdog thread fails the running part
    # and writes the report; faulthandler is the last resort should the main thread hold the interpreter.
    watchdog = threading.Timer(hard_stop_s, check.hard_stop, args=(hard_stop_s,))
    watchdog.daemon = True
    watchdog.start()
    faulthandler.dump_traceback_later(hard_stop_s + 15, exit=True, file=check.log_file)
    try:
        check.log(
            f"alexnet GPU check on {device} ({'GPU' if check.on_gpu else 'tiny CPU'} version)"
            + (f", with the fault {fault!r} injected: {FAULTS[fault]}" if fault else "")
        )
        # The model compared: the one given (--model), else the one the training loop part trains.
        trained: list[Path] = [model_dir] if model_dir else []
        compared: list[Compared] = []

        def comparing() -> Compared | None:
            if not compared and trained:
                compared.append(load_compared(check.sizes, trained[0]))
            return compared[0] if compared else None

        schedule: list[tuple[str, float, Callable[[Section], Any]]] = [
            ("machine", 10, lambda s: describe_machine(check, s)),
            ("jpeg decode", 30 if check.on_gpu else 10, lambda s: check_jpeg_decode(check, s)),
            ("training loop", 100, lambda s: trained.append(check_training_loop(check, s))),
            ("resume on the gpu", 30, lambda s: check_resume_on_gpu(check, s)),
            ("ddp", 30, lambda s: check_ddp(check, s)),
            ("inference", 90, lambda s: check_inference(check, s, comparing())),
            ("onnx export", 60, lambda s: check_onnx(check, s, comparing())),
            ("tensorrt", 120, lambda s: check_tensorrt(check, s, comparing())),
            ("training throughput", 150, lambda s: check_training_throughput(check, s)),
        ]
        for name, budget, part in schedule:
            if name in parts:
                check.run(name, budget, part)
        # Proof that none of what the GPU machine lacks was needed (where it is installed, as here).
        check.environment["imported"] = imported_optional_packages()
        check.write_report()
        passed = not any(section.status == "failed" for section in check.sections)
        verdicts = ", ".join(f"{s.name} {s.status}" for s in check.sections)
        check.log(
            f"{'PASSED' if passed else 'FAILED'} in {time.monotonic() - check.started:.0f} s: {verdicts}"
        )
        for section in check.sections:
            if section.status == "failed":
                check.log(f"   {section.name}: {section.reason}")
        check.log(f"report: {out / REPORT_FILE}, log: {out / LOG_FILE}")
        return passed
    finally:
        watchdog.cancel()
        faulthandler.cancel_dump_traceback_later()
        check.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_check",
        description="Run every GPU path that this machine can run (a tiny CPU version without a GPU).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or DEFAULT_OUT),
        help=f"folder for {REPORT_FILE} and {LOG_FILE} (default: $OUT, else {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole check"
    )
    parser.add_argument(
        "--inject-fault",
        choices=sorted(FAULTS),
        help="plant a known bug in the compared side; the check must then fail: "
        + "; ".join(f"{name}: {why}" for name, why in FAULTS.items()),
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="compare this trained model directory (model.safetensors + model.json, e.g. runs/digits from "
        "`alexnet train`) instead of the one the training loop part trains",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run (default: all; a hyphen may stand for a space): "
        + ", ".join(PARTS),
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="with --model: print how far bf16 and each fault move that model's logits on the CPU, and exit",
    )
    parser.add_argument(
        "--hard-stop-s",
        type=float,
        help=f"end the process this many seconds after the start, whatever runs (default: the budget + "
        f"{HARD_STOP_AFTER_BUDGET_S:.0f})",
    )
    args = parser.parse_args(argv)
    parts = tuple(part.strip().replace("-", " ") for part in args.parts.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: use some of {', '.join(PARTS)}")
    if args.model is not None and not (args.model / "model.json").is_file():
        parser.error(f"--model {args.model}: no model.json there; train one with `alexnet train --out DIR`")
    if args.calibrate:
        if args.model is None:
            parser.error("--calibrate needs --model DIR (a trained model, e.g. runs/digits)")
        compared, results = calibrate(args.model)
        confidence = {key: value for key, value in describe_confidence(compared).items() if key != "model"}
        print(f"{compared.source}: {json.dumps(confidence)}")
        print("\n".join(f"{case:18s} {agreement.line()}" for case, agreement in results))
        return 0
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if args.inject_fault == "stale-graph-input" and device.type != "cuda":
        parser.error("--inject-fault stale-graph-input needs a GPU: only the GPU version runs CUDA graphs")
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    passed = run_check(
        args.out,
        args.budget_s,
        device,
        fault=args.inject_fault,
        model_dir=args.model,
        parts=parts,
        hard_stop_s=args.hard_stop_s,
    )
    return 0 if passed else 1
