"""Rank 0's record of a run, an epoch at a time (after timm's `update_summary`): one JSON line per epoch
in metrics.jsonl, and the same figures as TensorBoard scalars in tb/ where TensorBoard is installed.
metrics.jsonl is written whole each epoch, like every file of the model directory (common/files.py): a
crash leaves the previous epoch's file, never half a line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.files import atomic_write
from common.model_card import METRICS_FILE

TENSORBOARD_SCALARS = {
    "train/loss": "train_loss",
    "train/lr": "lr",
    "train/images_per_s": "images_per_s",
    "val/loss": "val_loss",
    "val/top1": "top1",
    "val/top5": "top5",
}


class MetricsLog:
    def __init__(self, out: Path, *, resumed_after: int | None, steps_per_epoch: int) -> None:
        """Start the record in `out`: afresh for a new run; for a run resumed after epoch `resumed_after`,
        trimmed to that epoch (lines written after the checkpoint, by a crash between the two writes, will
        be written again)."""
        out.mkdir(parents=True, exist_ok=True)
        self.path, self.steps_per_epoch = out / METRICS_FILE, steps_per_epoch
        self.lines: list[str] = []
        if resumed_after is not None and self.path.is_file():
            lines = [line for line in self.path.read_text().splitlines() if line.strip()]
            self.lines = [line for line in lines if json.loads(line)["epoch"] <= resumed_after]
        self._write_whole()
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # TensorBoard is optional at run time
            return
        # A new run hides the events of any earlier one in tb/; a resumed one those after its checkpoint.
        purge = resumed_after * steps_per_epoch + 1 if resumed_after is not None else 0
        self.writer = SummaryWriter(log_dir=str(out / "tb"), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        """One epoch's figures; `record["epoch"]` is the epoch's number, from 1."""
        self.lines.append(json.dumps(record))
        self._write_whole()
        if self.writer is not None:
            for tag, name in TENSORBOARD_SCALARS.items():
                self.writer.add_scalar(tag, record[name], record["epoch"] * self.steps_per_epoch)
            self.writer.flush()

    def _write_whole(self) -> None:
        with atomic_write(self.path) as f:
            f.write("".join(line + "\n" for line in self.lines).encode())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
