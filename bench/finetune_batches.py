"""Finetuning with length-grouped batches vs shuffled batches padded to their longest review, side by side.

Same machine, same encoder (the quality benchmark's size; random weights, or pretrained first with
`--pretrain-steps`), same reviews, same seeds, in one run: `python -m bench.finetune_batches`. Reports the
share of padded positions that hold a token, finetuning wall time and reviews per second, and test
macro-F1 for both batchings, with the speed-up.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
from torch.utils.data import DataLoader

from bench.common import require_corpus, save_result, sentiment_split, write_snapshot
from bench.quality import LABELS, score
from lightning_modules.config import FinetuneConfig, PretrainConfig, TokenizeConfig
from lightning_modules.data import ClassificationDataModule
from lightning_modules.tokenizer import train_tokenizer
from lightning_modules.train import _load_tokenizer, finetune, pretrain


def shuffled_batches(self: ClassificationDataModule) -> DataLoader:
    """The batching length grouping replaces: shuffled reviews, each batch padded to its longest."""
    return DataLoader(self.train_items, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate)


def token_share(loader: DataLoader) -> float:
    """Share of an epoch's padded positions that hold a token."""
    tokens = positions = 0
    for batch in loader:
        tokens += int(batch["attention_mask"].sum())
        positions += batch["attention_mask"].numel()
    return round(tokens / positions, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000, help="train reviews finetuned on")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="finetunings per batching, interleaved (seeds 7, 8, ...)")
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="0: finetune from random weights; else pretrain this many steps on the train and validation reviews first")
    parser.add_argument("--name", default="finetune_batches", help="result file: bench/results/NAME.json")
    args = parser.parse_args()

    rows = sentiment_split(require_corpus())
    test = rows[rows["split"] == "test"]
    target = test["label"].astype(str).map(LABELS.index).to_numpy()
    fit = rows[rows["split"] == "train"].sample(n=args.docs, random_state=0)
    model_cfg = PretrainConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, max_length=128,
                               accelerator="cpu")
    with tempfile.TemporaryDirectory(prefix="doclife-finetune-batches-") as tmp:
        root = Path(tmp)
        snapshot = write_snapshot(rows[(rows["split"] == "validation") | rows.index.isin(fit.index)], root / "snapshot")
        # The tokenizer learns from what the encoder learns from: all train and validation reviews when pretraining.
        pre_snapshot = write_snapshot(rows[rows["split"] != "test"], root / "pre_snapshot") if args.pretrain_steps else snapshot
        train_tokenizer(TokenizeConfig(vocab_size=8000), pre_snapshot, root / "tokenizer")
        # 0 steps: the encoder as initialised, i.e. random weights.
        pre_cfg = replace(model_cfg, max_steps=args.pretrain_steps, warmup_steps=max(1, args.pretrain_steps // 10),
                          checkpoint_every_n_steps=max(1, args.pretrain_steps))
        pretrain(pre_cfg, pre_snapshot, root / "tokenizer", root / "start", root / "pre_ckpt", root / "pre.json",
                 root / "pre.csv")

        data = ClassificationDataModule(snapshot, _load_tokenizer(root / "tokenizer"), LABELS, model_cfg.max_length, 32)
        data.setup("fit")
        result: dict = {"start": f"pretrained {args.pretrain_steps} steps" if args.pretrain_steps else "random weights",
                        "reviews": len(data.train_items), "epochs": args.epochs,
                        "token_share": {"shuffled": token_share(shuffled_batches(data)),
                                        "length_grouped": token_share(data.train_dataloader())}}
        runs: dict[str, list[dict]] = {"shuffled": [], "length_grouped": []}
        for seed in range(7, 7 + args.rounds):
            for name in runs:
                cfg = FinetuneConfig(batch_size=32, max_epochs=args.epochs, patience=args.epochs, warmup_steps=30,
                                     seed=seed, accelerator="cpu")
                out = root / f"{name}_{seed}"
                patch = (mock.patch.object(ClassificationDataModule, "train_dataloader", shuffled_batches)
                         if name == "shuffled" else contextlib.nullcontext())
                started = time.perf_counter()
                with patch:
                    metrics = finetune(cfg, snapshot, root / "start", LABELS, out / "model", out / "ckpt",
                                       out / "metrics.json", out / "curve.csv")
                wall = time.perf_counter() - started
                runs[name].append({"seed": seed, "fit_seconds": metrics["fit_seconds"], "wall_seconds": round(wall, 1),
                                   "reviews_per_second": round(args.epochs * metrics["n_train"] / metrics["fit_seconds"], 1),
                                   "best_val_macro_f1": metrics["best_val_macro_f1"],
                                   "test_macro_f1": score(out / "model", test["review"].tolist(), target)})
                print(name, runs[name][-1], flush=True)

    def mean(name: str, key: str) -> float:
        return round(float(np.mean([r[key] for r in runs[name]])), 4)

    for name in runs:
        result[name] = {key: mean(name, key) for key in ("fit_seconds", "reviews_per_second", "test_macro_f1")} | {"runs": runs[name]}
    result["speedup"] = round(result["length_grouped"]["reviews_per_second"] / result["shuffled"]["reviews_per_second"], 2)
    save_result(args.name, result)


if __name__ == "__main__":
    main()
