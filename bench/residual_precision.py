"""What the bf16 residual stream (`model.AutocastLayerNorm`) costs in numerics, against CUDA autocast's float32 one.

1. One batch of `base` (4 x 256 tokens, random weights): loss and gradient of each policy under bf16 autocast,
   against the same model in float32 (relative L2 error and cosine of the whole gradient).
2. Pretraining of `mini` on the real corpus (128-token rows, batch 32, bf16-mixed on this machine's CPU, or its
   GPU with --accelerator gpu): validation loss at each checkpoint for each policy, and for a second seed of
   the float32 policy (the spread any change of numerics must be judged against).

    python -m bench.residual_precision [--steps 1000] [--accelerator cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pandas as pd
import torch
from torch import nn

import lightning_modules.model as model_module
from bench.common import require_corpus, save_result, sentiment_split, write_snapshot
from lightning_modules.config import PretrainConfig, TokenizeConfig
from lightning_modules.data import IGNORE_INDEX, mlm_batch
from lightning_modules.model import AutocastLayerNorm, build_mlm, swap_layer_norms
from lightning_modules.modules import masked_lm_loss_sum
from lightning_modules.tokenizer import train_tokenizer
from lightning_modules.train import pretrain


class Float32LayerNorm(nn.LayerNorm):
    """LayerNorm as CUDA autocast runs it, on any device: float32 in and out."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.float())


@contextmanager
def float32_residual_stream():
    """Models that `model.build_mlm` builds inside get `Float32LayerNorm`s instead of `AutocastLayerNorm`s."""
    keep = model_module.AutocastLayerNorm
    model_module.AutocastLayerNorm = Float32LayerNorm
    try:
        yield
    finally:
        model_module.AutocastLayerNorm = keep


def gradient_errors(device: str) -> dict:
    cfg = PretrainConfig(size="base", max_length=256, batch_size=4)
    torch.manual_seed(0)
    model = build_mlm(cfg, vocab_size=8000, pad_token_id=0).to(device).train()
    ids = torch.randint(5, 8000, (4, 256))
    batch = mlm_batch(ids, torch.where(torch.rand(ids.shape) < 0.15, ids, torch.full_like(ids, IGNORE_INDEX)))
    batch = {key: value.to(device) for key, value in batch.items()}

    def loss_and_gradient(norm_class: type[nn.LayerNorm], autocast: bool) -> tuple[float, torch.Tensor]:
        swap_layer_norms(model, norm_class)
        model.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = masked_lm_loss_sum(model, batch["input_ids"], batch["labels"], batch["target_positions"])
        (loss / batch["n_targets"]).backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).double()

    reference_loss, reference = loss_and_gradient(nn.LayerNorm, autocast=False)
    errors = {}
    for name, norm_class in (("float32_stream", Float32LayerNorm), ("bf16_stream", AutocastLayerNorm)):
        loss, gradient = loss_and_gradient(norm_class, autocast=True)
        errors[name] = {
            "loss_relative_error": abs(loss - reference_loss) / abs(reference_loss),
            "gradient_relative_l2_error": ((gradient - reference).norm() / reference.norm()).item(),
            "gradient_cosine": nn.functional.cosine_similarity(gradient, reference, dim=0).item(),
        }
        print(name, errors[name], flush=True)
    return errors


def pretraining_curves(steps: int, accelerator: str) -> dict:
    runs = {}
    with tempfile.TemporaryDirectory(prefix="doclife-residual-") as tmp:
        root = Path(tmp)
        rows = sentiment_split(require_corpus())
        snapshot = write_snapshot(rows[rows["split"] != "test"], root / "snapshot")
        train_tokenizer(TokenizeConfig(vocab_size=8000, min_frequency=2), snapshot, root / "tokenizer")
        for stream, seed in (("bf16_stream", 7), ("float32_stream", 7), ("float32_stream", 8)):
            cfg = PretrainConfig(size="mini", max_length=128, batch_size=32, max_steps=steps, warmup_steps=100,
                                 learning_rate=5e-4, checkpoint_every_n_steps=steps // 4, accelerator=accelerator,
                                 precision="bf16-mixed", seed=seed)
            out = root / f"{stream}_{seed}"
            with float32_residual_stream() if stream == "float32_stream" else nullcontext():
                pretrain(cfg, snapshot, root / "tokenizer", out / "model", out / "ckpt", out / "metrics.json",
                         out / "curve.csv")
            curve = pd.read_csv(out / "curve.csv").dropna(subset=["val_loss"])
            # Speed is bench.mfu's question, on a GPU: on a CPU, autocast hands LayerNorm's output on in bf16 anyway.
            runs[f"{stream}_seed{seed}"] = dict(zip(curve["step"].astype(int).astype(str), curve["val_loss"].round(4)))
            print(stream, seed, runs[f"{stream}_seed{seed}"], flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    save_result("residual_precision", {
        "one_batch_of_base": gradient_errors(device),
        "mini_pretraining_val_loss": pretraining_curves(args.steps, args.accelerator),
        "accelerator": args.accelerator, "torch": torch.__version__,
    })


if __name__ == "__main__":
    main()
