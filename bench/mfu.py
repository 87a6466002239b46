"""Model FLOPs utilisation of doclife pretraining for the `base` encoder (~110M parameters) in bf16 on one GPU.

Runs the real `pretrain()` (packed rows, sparse MLM head, Lightning, bf16-mixed, torch.compile) and reports
the mean MFU of the steps after the first: achieved model FLOP/s / the GPU's dense bf16 peak (989 TFLOP/s on
an H100/H200), with FLOPs per token from `lightning_modules.model.encoder_flops_per_token`.

    python -m bench.mfu [--steps 60] [--batch-size 64] [--max-length 512] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bench.common import CORPUS, save_result, write_snapshot  # noqa: E402
from lightning_modules.config import PretrainConfig, TokenizeConfig  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import pretrain  # noqa: E402


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
    save_result("mfu", {
        "device": torch.cuda.get_device_name(), "data": data, "size": cfg.size, "parameters": metrics["parameters"],
        "precision": cfg.precision, "compile": cfg.compile, "max_length": cfg.max_length, "batch_size": cfg.batch_size,
        "steps": metrics["steps"], "mfu": metrics["mfu"], "tokens_per_second": metrics["tokens_per_second"],
        "torch": torch.__version__,
    })


if __name__ == "__main__":
    main()
