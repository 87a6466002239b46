"""LightningModules: the training logic around a transformers network (optimiser, schedule, losses, metrics)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytorch_lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassF1Score

from lightning_modules import data
from lightning_modules.data import derived_seed


def warmup_then_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear ramp over `warmup_steps` to 1, then linear decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


# `bert.encoder.layer.3.attention...` -> 3
_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def layerwise_learning_rates(model: nn.Module, learning_rate: float, layer_decay: float,
                             head_learning_rate: float | None) -> dict[str, float]:
    """Parameter name -> peak learning rate for a BERT classifier (names `bert.embeddings.*`,
    `bert.encoder.layer.{i}.*`, then the pooler and the classifier).

    The top encoder layer trains at `learning_rate`, each layer below at `layer_decay` times the one above, the
    embeddings at one more factor below the bottom layer (Sun et al. 2019, "How to fine-tune BERT"); the pooler
    and the classification head, new at finetuning, at `head_learning_rate` (None: `learning_rate`).
    """
    names = [name for name, _ in model.named_parameters()]
    layers = 1 + max((int(m.group(1)) for n in names if (m := _LAYER.search(n))), default=-1)
    rates = {}
    for name in names:
        if (match := _LAYER.search(name)) is not None:
            rates[name] = learning_rate * layer_decay ** (layers - 1 - int(match.group(1)))
        elif ".embeddings." in f".{name}":
            rates[name] = learning_rate * layer_decay ** layers
        else:
            rates[name] = learning_rate if head_learning_rate is None else head_learning_rate
    return rates


def _decays(name: str, param: nn.Parameter) -> bool:
    """Whether weight decay applies: not to biases and LayerNorm weights (BERT's recipe)."""
    return not (param.ndim < 2 or "LayerNorm" in name)


def adamw_with_schedule(
    model: nn.Module, learning_rate: float, weight_decay: float, warmup_steps: int, total_steps: int, fused: bool = False,
    learning_rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """AdamW (no decay on biases and LayerNorm weights) with the schedule stepped every optimiser step.

    `learning_rates` (parameter name -> peak rate, see `layerwise_learning_rates`) gives parameters rates of
    their own: one group per (rate, decay) pair; the schedule scales every group alike.
    """
    trained = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    if learning_rates is not None:
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for name, param in trained:
            groups.setdefault((learning_rates[name], weight_decay if _decays(name, param) else 0.0), []).append(param)
        param_groups = [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]
    else:
        param_groups = [{"params": [p for n, p in trained if _decays(n, p)], "weight_decay": weight_decay},
                        {"params": [p for n, p in trained if not _decays(n, p)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(param_groups, lr=learning_rate, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear_decay(warmup_steps, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


def masked_lm_loss_sum(
    model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, target_positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Summed cross-entropy over the masked positions of (batch, seq) ids, for a `BertForMaskedLM`.

    The prediction head runs only at the targets (about 15% of positions) instead of at every position:
    its vocabulary-sized matmul is the single largest one in a small encoder. `target_positions`, the flat
    indices of the targets (see `data.mlm_batch`), spares the host a wait for the device to count them.
    """
    hidden = model.bert(input_ids=input_ids).last_hidden_state  # (batch, seq, hidden); no mask: rows are full
    if target_positions is None:
        target_positions = data.target_positions(labels)
    logits = model.cls(hidden.flatten(0, 1).index_select(0, target_positions))  # (n_targets, vocab)
    return F.cross_entropy(logits.float(), labels.reshape(-1).index_select(0, target_positions), reduction="sum")


class ClippedModule(L.LightningModule):
    """Gradient-norm clipping that works under every strategy and with a fused optimizer.

    Lightning's precision plugins refuse norm clipping in two cases this project needs. Under fsdp each rank
    holds a shard of the gradients: the wrapped module's own `clip_grad_norm_` computes the norm over all
    shards. With a fused optimizer under mixed precision, Lightning fears gradients still scaled for fp16;
    bf16 has no loss scaler, so the gradients are true ones and clip as they are.
    """

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        if gradient_clip_val and hasattr(self.trainer.model, "clip_grad_norm_"):  # FullyShardedDataParallel
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        if gradient_clip_val and getattr(optimizer, "_step_supports_amp_scaling", False) and not self._loss_scaled():  # fused
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def fused_optimizer(self) -> bool:
        """Whether AdamW should run fused: on CUDA, unless fp16's loss scaler is in play (Lightning can then
        neither clip its gradients nor let us). One kernel for every parameter: a `base` step of 64 rows on an
        H200 takes 52 ms instead of 64 ms with the per-tensor loop."""
        return self.device.type == "cuda" and not self._loss_scaled()

    def _loss_scaled(self) -> bool:
        """Whether fp16's loss scaler (`16-mixed`) is in play: gradients then stay scaled until its step."""
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None


class MaskedLMModule(ClippedModule):
    """Masked-LM pretraining of a `BertForMaskedLM` on packed rows.

    The loss is the mean over the targets of the whole global micro-batch: each rank divides its summed loss
    by the global target count (known to every rank, the mask being drawn for the global batch) and multiplies
    by the world size, which ddp's gradient averaging undoes. One process or many, the gradient is the same.
    """

    def __init__(self, model: nn.Module, learning_rate: float, warmup_steps: int, weight_decay: float, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.seed = seed

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global RNG: seed it from (seed, micro-batch, rank) so a resumed run continues
        # with the numbers an uninterrupted one would have drawn.
        micro = self.trainer.global_step * self.trainer.accumulate_grad_batches + batch_idx % self.trainer.accumulate_grad_batches
        torch.manual_seed(derived_seed(self.seed, micro, self.global_rank, 3))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss_sum = masked_lm_loss_sum(self.model, batch["input_ids"], batch["labels"], batch["target_positions"])
        # Normalised by the whole global micro-batch's targets: each rank holds only its part's count, so the
        # counts are summed over the ranks (one scalar, on the device, no wait on the host). Gradients are then
        # averaged over ranks, hence the world_size factor: every target weighs the same as in one process.
        n_targets = batch["n_targets"]
        if self.trainer.world_size > 1:
            n_targets = self.trainer.strategy.reduce(n_targets, reduce_op="sum")
        loss = loss_sum * self.trainer.world_size / n_targets.clamp(min=1)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        n_targets = batch["n_targets"].clamp(min=1)  # every rank scores the same whole batch
        loss = masked_lm_loss_sum(self.model, batch["input_ids"], batch["labels"], batch["target_positions"]) / n_targets
        # Weighted by the batch's targets, the epoch mean is the mean over every validation target: the same
        # number whatever the batch size (and so the number of devices).
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=int(n_targets))

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_schedule(
            self.model, self.learning_rate, self.weight_decay, self.warmup_steps, int(self.trainer.max_steps),
            fused=self.fused_optimizer(),
        )


class ClassifierModule(ClippedModule):
    """Document classification with a class-weighted cross-entropy; logs validation macro-F1 each epoch."""

    def __init__(
        self,
        model: nn.Module,
        class_weights: torch.Tensor,
        learning_rate: float,
        warmup_steps: int,
        weight_decay: float,
        layer_decay: float = 1.0,
        head_learning_rate: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        # A buffer moves with the module to the device and is saved in checkpoints.
        self.register_buffer("class_weights", class_weights.float())
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.layer_decay = layer_decay
        self.head_learning_rate = head_learning_rate
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
        # One rate for all (the two groups as ever) unless layer decay or a head rate asks for more.
        rates = None
        if self.layer_decay != 1.0 or self.head_learning_rate is not None:
            rates = layerwise_learning_rates(self.model, self.learning_rate, self.layer_decay, self.head_learning_rate)
        return adamw_with_schedule(self.model, self.learning_rate, self.weight_decay, self.warmup_steps, total,
                                   fused=self.fused_optimizer(), learning_rates=rates)
