"""Model FLOPs utilisation of doclife pretraining for the `base` encoder (~110M parameters) in bf16 on one GPU.

Runs the real `pretrain()` (packed rows, sparse MLM head, Lightning, bf16-mixed, torch.compile) and reports
the mean MFU of the steps after the first: achieved model FLOP/s / the GPU's dense bf16 peak (989 TFLOP/s on
an H100/H200), with FLOPs per token from `lightning_modules.model.encoder_flops_per_token`.

Then the same network, batch shape, precision, optimizer and clipping in a bare loop (no Lightning, no data
loading, no per-step host sync): what the model's kernels reach on this device. The gap between the two is
the training pipeline's (hooks, logging, syncs, deterministic kernels), the rest is the model's.

    python -m bench.mfu [--steps 60] [--batch-size 64] [--max-length 512] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bench.common import CORPUS, save_result, write_snapshot  # noqa: E402
from lightning_modules.config import PretrainConfig, TokenizeConfig  # noqa: E402
from lightning_modules.data import IGNORE_INDEX  # noqa: E402
from lightning_modules.model import build_mlm, encoder_flops_per_token, peak_flops  # noqa: E402
from lightning_modules.modules import masked_lm_loss_sum  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import _load_tokenizer, pretrain  # noqa: E402


def bare_loop(cfg: PretrainConfig, vocab_size: int, steps: int = 30, warmup: int = 5) -> dict:
    """Tokens/s and MFU of forward + backward + clipping + AdamW on one fixed batch, timed by one sync at the end."""
    torch.manual_seed(0)
    model = build_mlm(cfg, vocab_size=vocab_size, pad_token_id=0).cuda().train()
    if cfg.compile:
        model.bert.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ids = torch.randint(5, vocab_size, (cfg.batch_size, cfg.max_length), device="cuda")  # (batch, seq)
    targets = torch.rand(ids.shape, device="cuda") < cfg.mask_probability
    labels = torch.where(targets, ids, torch.full_like(ids, IGNORE_INDEX))
    n_targets = targets.sum()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = masked_lm_loss_sum(model, ids, labels) / n_targets
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):  # compilation and the allocator's first sizes
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_second = steps * ids.numel() / seconds
    flops = encoder_flops_per_token(model.config, cfg.max_length, cfg.mask_probability)
    return {"tokens_per_second": round(tokens_per_second, 1), "step_ms": round(1000 * seconds / steps, 2),
            "mfu": round(tokens_per_second * flops / peak_flops(torch.cuda.get_device_name(), cfg.precision), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device; run this where a GPU is present")
        sys.exit(0)

    cfg = PretrainConfig(
        size="base", max_length=args.max_length, batch_size=args.batch_size, max_steps=args.steps, warmup_steps=5,
        learning_rate=1e-4, checkpoint_every_n_steps=args.steps, accelerator="gpu", devices=1,
        precision="bf16-mixed", compile=not args.no_compile,
    )
    with tempfile.TemporaryDirectory(prefix="doclife-mfu-") as tmp:
        root = Path(tmp)
        if CORPUS.is_file():
            from bench.common import require_corpus, sentiment_split

            rows = sentiment_split(require_corpus())
            snapshot, data = write_snapshot(rows[rows["split"] != "test"], root / "snapshot"), CORPUS.name
        else:
            from lightning_modules.synthetic import make_snapshot

            snapshot, data = make_snapshot(root / "snapshot", n_docs=40000, seed=0), "generated sample (40000 docs)"
        # BERT-base's vocabulary size: the MLM head is then the size it has in BERT-base.
        train_tokenizer(TokenizeConfig(vocab_size=30522, min_frequency=1), snapshot, root / "tokenizer")
        metrics = pretrain(cfg, snapshot, root / "tokenizer", root / "model", root / "ckpt", root / "m.json", root / "c.csv")
        vocab_size = len(_load_tokenizer(root / "tokenizer"))
    bare = bare_loop(cfg, vocab_size)
    print("bare loop", bare, flush=True)
    save_result("mfu", {
        "device": torch.cuda.get_device_name(), "data": data, "size": cfg.size, "parameters": metrics["parameters"],
        "precision": cfg.precision, "compile": cfg.compile, "max_length": cfg.max_length, "batch_size": cfg.batch_size,
        "steps": metrics["steps"], "mfu": metrics["mfu"], "tokens_per_second": metrics["tokens_per_second"],
        "bare_loop": bare, "pipeline_share_of_bare_loop": round(metrics["tokens_per_second"] / bare["tokens_per_second"], 3),
        "torch": torch.__version__,
    })


if __name__ == "__main__":
    main()
