"""LightningModules: the training logic around a transformers network (optimiser, schedule, losses, metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassF1Score


def warmup_then_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear ramp over `warmup_steps` to 1, then linear decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def adamw_with_schedule(
    model: nn.Module, learning_rate: float, weight_decay: float, warmup_steps: int, total_steps: int
) -> dict[str, Any]:
    """AdamW (no decay on biases and LayerNorm weights) with the schedule stepped every optimiser step."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear_decay(warmup_steps, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


class MaskedLMModule(L.LightningModule):
    """Masked-LM pretraining of a `BertForMaskedLM`; counts the real (non-pad) tokens it trains on."""

    def __init__(self, model: nn.Module, learning_rate: float, warmup_steps: int, weight_decay: float) -> None:
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.tokens_seen = 0  # this process, this run (not restored on resume)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # Labels are -100 except at masked positions, so the model's loss covers the targets only.
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self(batch)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].size(0))

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_schedule(
            self.model, self.learning_rate, self.weight_decay, self.warmup_steps, int(self.trainer.max_steps)
        )


class ClassifierModule(L.LightningModule):
    """Document classification with a class-weighted cross-entropy; logs validation macro-F1 each epoch."""

    def __init__(
        self,
        model: nn.Module,
        class_weights: torch.Tensor,
        learning_rate: float,
        warmup_steps: int,
        weight_decay: float,
    ) -> None:
        super().__init__()
        self.model = model
        # A buffer moves with the module to the device and is saved in checkpoints.
        self.register_buffer("class_weights", class_weights.float())
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.val_f1 = MulticlassF1Score(num_classes=len(class_weights), average="macro")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits, (batch, num_classes)."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        # Computed here rather than by the model so the loss can weight rare classes up.
        loss = F.cross_entropy(logits.float(), batch["labels"], weight=self.class_weights)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["labels"].size(0))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        loss = F.cross_entropy(logits.float(), batch["labels"], weight=self.class_weights)
        self.val_f1.update(logits.argmax(dim=-1), batch["labels"])
        size = batch["labels"].size(0)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=size)
        self.log("val_macro_f1", self.val_f1, prog_bar=True, on_step=False, on_epoch=True, batch_size=size)

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_with_schedule(self.model, self.learning_rate, self.weight_decay, self.warmup_steps, total)
