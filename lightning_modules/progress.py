"""Progress lines a supervisor can read from a training process's output.

Lightning's progress bar is for a terminal; when training runs under DVC inside a Prefect task its output
is a pipe. This callback prints one plain, parseable line about every 2% of the run on global rank 0:

    doclife-progress pretrain step=120 total=400 loss=3.2104

`flows.lifecycle` turns these lines into a Prefect progress artifact while the stage runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as L
from pytorch_lightning.callbacks import Callback, RichProgressBar

PATTERN = re.compile(r"^doclife-progress (?P<stage>\w+) step=(?P<step>\d+) total=(?P<total>\d+)(?: loss=(?P<loss>\S+))?")


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int
    loss: float | None

    @property
    def percent(self) -> float:
        return 100.0 * min(self.step, self.total) / max(1, self.total)


def parse_progress(line: str) -> Progress | None:
    """The progress a line reports, or None for any other line."""
    match = PATTERN.match(line.strip())
    if match is None:
        return None
    loss = match["loss"]
    return Progress(match["stage"], int(match["step"]), int(match["total"]), float(loss) if loss else None)


class ProgressLines(Callback):
    def __init__(self, stage: str, updates: int = 50) -> None:
        self.stage = stage
        self.updates = updates
        self._every = 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._every = max(1, int(trainer.estimated_stepping_batches) // self.updates)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, total = trainer.global_step, int(trainer.estimated_stepping_batches)
        if trainer.is_global_zero and (step % self._every == 0 or step >= total):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            print(f"doclife-progress {self.stage} step={step} total={total} loss={float(loss):.4f}", flush=True)


class SparseRichProgressBar(RichProgressBar):
    """Lightning's default (rich) progress bar, reading the logged metrics only every `metrics_every` steps.

    Reading them (the loss shown beside the bar) waits for the device to finish the step; at every step, the
    host could never queue a step ahead of the device. Rich also keeps piped output free of redraws, which
    `ProgressLines` readers rely on.
    """

    def __init__(self, metrics_every: int = 1) -> None:
        super().__init__()
        self.metrics_every = metrics_every
        self._shown: dict[str, Any] = {}
        self._read_at: int | None = None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        step = trainer.global_step
        if not trainer.training or self._read_at is None or step - self._read_at >= self.metrics_every:
            self._shown, self._read_at = super().get_metrics(trainer, pl_module), step
        return self._shown
