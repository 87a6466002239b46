"""The training stages' own Lightning callbacks: the loss curve (with token rates and MFU) and last.ckpt saves."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from data_checks.io import atomic_path


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row[key]) for key in columns})
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


def logged_metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else round(float(value), 6)


class CurveRecorder(Callback):
    """Per-step train loss (averaged over processes) and validation results; kept in the checkpoint.

    `per_epoch` switches from one row per optimizer step to one row per epoch (mean train loss of the epoch).
    With `pad_id` set, each step's row also gets the global tokens/s, non-pad tokens/s and, given the
    training FLOPs per token and the devices' peak, the model FLOPs utilisation (MFU).

    Losses and token counts stay on the device until a window of `flush_every` steps closes (and at the first
    step, before validation, at the end): reading them every step would make the host wait for the device at
    every step, so the host could never queue the next step's work while the device runs this one. Each
    window ends with that read, which waits for the device to finish the window's work: a window's
    duration is exact, and its steps' rates are the window's mean.
    """

    def __init__(
        self,
        per_epoch: bool = False,
        pad_id: int | None = None,
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
        flush_every: int = 50,
    ) -> None:
        self.per_epoch = per_epoch
        self.pad_id = pad_id
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops  # per device
        self.flush_every = flush_every
        self.rows: list[dict[str, Any]] = []
        self._epoch_losses: list[torch.Tensor] = []
        self._step_losses: list[torch.Tensor] = []
        self._pending: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]] = []  # (row, loss, non-pad tokens)
        self._nonpad: list[torch.Tensor] = []  # this process's non-pad token counts since the last optimizer step
        self._tokens = 0  # this process's tokens since the last optimizer step
        self._last_step = 0
        self._run_start_step = 0
        self._clock = 0.0
        self._trainer: L.Trainer | None = None
        # Steady-state totals of this run: windows after the first step (which pays for warm-up and compilation).
        self.timed = {"seconds": 0.0, "tokens": 0, "nonpad_tokens": 0, "steps": 0}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        self._last_step = self._run_start_step = trainer.global_step
        self._clock = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # A collective call: every rank reaches this hook once per batch.
        loss = trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        if self.per_epoch:
            self._epoch_losses.append(loss)
            return
        self._step_losses.append(loss)
        if self.pad_id is not None:
            ids = batch["input_ids"]
            self._tokens += ids.numel()
            self._nonpad.append((ids != self.pad_id).sum())
        if trainer.global_step == self._last_step:
            return  # still accumulating gradients towards the next optimizer step
        step_loss = torch.stack(self._step_losses).mean()
        nonpad = torch.stack(self._nonpad).sum() if self._nonpad else torch.zeros(())
        row: dict[str, Any] = {"step": trainer.global_step, "tokens": self._tokens * trainer.world_size}
        self._step_losses, self._nonpad, self._tokens = [], [], 0
        self._pending.append((row, step_loss, nonpad))
        self._last_step = trainer.global_step
        first = trainer.global_step - self._run_start_step == 1
        if first or trainer.global_step % self.flush_every == 0 or trainer.global_step >= (trainer.max_steps or 0) > 0:
            rates = self._flush(trainer, timed=not first)
            if rates.get("tokens_per_s") is not None:
                pl_module.log("tok/s", rates["tokens_per_s"], prog_bar=True, on_step=True, on_epoch=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, timed=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, timed=True)

    def _flush(self, trainer: L.Trainer, timed: bool) -> dict[str, Any]:
        """Read the pending steps' values from the device (one wait) and give each row the window's rates."""
        if not self._pending:
            return {}
        losses = torch.stack([loss for _, loss, _ in self._pending]).tolist()
        nonpads = (torch.stack([n for _, _, n in self._pending]) * trainer.world_size).tolist()
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        tokens, nonpad = sum(row["tokens"] for row, _, _ in self._pending), int(sum(nonpads))
        rates = {}
        if self.pad_id is not None:
            rates = {"tokens_per_s": round(tokens / seconds, 1), "nonpad_tokens_per_s": round(nonpad / seconds, 1),
                     "mfu": self._mfu(tokens, seconds)}
            if timed:
                self.timed["seconds"] += seconds
                self.timed["tokens"] += tokens
                self.timed["nonpad_tokens"] += nonpad
                self.timed["steps"] += len(self._pending)
        for (row, _, _), loss in zip(self._pending, losses):
            del row["tokens"]
            self.rows.append({**row, "train_loss": round(loss, 6), **rates})
        self._pending = []
        return rates

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        val_loss = logged_metric(trainer, "val_loss")
        if self.per_epoch:
            if not self._epoch_losses:  # a validate() call outside training
                return
            train_loss = float(torch.stack(self._epoch_losses).mean())
            self._epoch_losses = []
            self.rows.append(
                {
                    "epoch": trainer.current_epoch,
                    "step": trainer.global_step,
                    "train_loss": round(train_loss, 6),
                    "val_loss": val_loss,
                    "val_macro_f1": logged_metric(trainer, "val_macro_f1"),
                }
            )
            return
        if self.rows and self.rows[-1]["step"] == trainer.global_step:
            self.rows[-1]["val_loss"] = val_loss
        else:
            self.rows.append({"step": trainer.global_step, "train_loss": None, "val_loss": val_loss})
        # Validation time is not training time: restart the throughput clock after it.
        self._clock = time.perf_counter()

    def steady_rates(self) -> dict[str, float | None]:
        """Tokens/s, non-pad tokens/s and MFU over this run's steps after the first."""
        seconds = self.timed["seconds"]
        if not seconds:
            return {"tokens_per_second": None, "nonpad_tokens_per_second": None, "mfu": None}
        return {
            "tokens_per_second": round(self.timed["tokens"] / seconds, 1),
            "nonpad_tokens_per_second": round(self.timed["nonpad_tokens"] / seconds, 1),
            "mfu": self._mfu(self.timed["tokens"], seconds),
        }

    def _mfu(self, tokens: int, seconds: float) -> float | None:
        """Model FLOPs utilisation of `tokens` (global) trained in `seconds`, where the devices' peak is known."""
        if not (self.flops_per_token and self.peak_flops):
            return None
        return round(tokens * self.flops_per_token / seconds / (self.peak_flops * self._trainer.world_size), 4)

    def state_dict(self) -> dict[str, Any]:
        if self._pending:  # a checkpoint between windows (on an exception): its rows must hold every step
            self._flush(self._trainer, timed=False)
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class SaveOnException(Callback):
    """Save `last.ckpt` when training stops on a Python exception (kill -9 is covered by the periodic saves).

    Lightning's OnExceptionCheckpoint would do the same, but its presence turns `fit(ckpt_path=None)` into
    `fit(ckpt_path="last")`; the resume decision is doclife's (`train._prepare_checkpoints`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        rank_zero_info(f"doclife: stopped by {type(exception).__name__} at step {trainer.global_step}; saved {self.path}")


class LastCheckpointEachEpoch(Callback):
    """Save `last.ckpt` at the end of every epoch.

    ModelCheckpoint(save_last=True) refreshes last.ckpt only when it also saved a top-k checkpoint, so an
    epoch that does not improve the monitored metric would leave last.ckpt behind the run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank calls it; the strategy writes on rank 0 only.
        trainer.save_checkpoint(self.path, weights_only=False)
