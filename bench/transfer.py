"""Transfer from a checkpoint (pretrain.init_from), on the CPU, side by side in one run, three seeds each.

1. Pretrain `mini` on the online_shopping reviews (train and validation text) and export it: the checkpoint a
   team already has.
2. On waimai_10k.csv (takeout reviews, sentiment; nulls and duplicates dropped, 80/20 stratified split with
   random_state=0, a stratified 10% of train for validation), finetune the same labelled subset from
     - random weights (doclife without a checkpoint: its own tokenizer, `mini` as initialised),
     - the exported checkpoint directly (init_from, max_steps 0),
     - the checkpoint after a short continued pretraining on the waimai text (init_from, max_steps N),
   and score TF-IDF + logistic regression (flows/baselines.py, the gate's baseline) on the same split.
3. Continual weekly runs: the waimai train reviews arrive in `--weeks` batches. Week 1 trains from scratch and
   becomes the champion of a registry; each later week trains, on everything so far, once from the champion
   (`init_from: champion`, which then becomes the champion) and once from scratch, with the same budget.

Every finetuning uses the seeds 7, 8, ...; a start's learning rate (of `--finetune-lrs`) is chosen on
validation (bench.quality.finetune_grid). Writes bench/results/transfer.json (`--quick`: transfer_quick.json,
toy sizes, a few minutes). The full run takes hours on 2 cores; `--seeds 1 --weeks 0` shortens it.

    python -m bench.transfer [--source PATH] [--target PATH] [--pretrain-steps 3000] [--continue-steps 500]
    python -m bench.transfer --quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.common import CORPUS, DATASETS, require_corpus, save_result, sentiment_split, write_snapshot  # noqa: E402
from bench.quality import LABELS, finetune_grid  # noqa: E402
from flows.baselines import tfidf_lr_probs  # noqa: E402
from flows.init_from import resolve_init_from  # noqa: E402
from flows.policy import BaselinePolicy  # noqa: E402
from flows.registry import Registry  # noqa: E402
from flows.scoring import metric  # noqa: E402
from lightning_modules.checkpoint import CHAMPION, BaseCheckpoint  # noqa: E402
from lightning_modules.config import FinetuneConfig, PretrainConfig, TokenizeConfig  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import pretrain  # noqa: E402

TARGET = Path(os.environ.get("DOCLIFE_BENCH_TARGET", DATASETS / "waimai_10k.csv"))
# Toy sizes for a smoke run (`--quick`): every path of the benchmark in a few minutes.
QUICK = {"size": "tiny", "max_length": 64, "source_docs": 2000, "target_docs": 1500, "pretrain_steps": 20,
         "continue_steps": 10, "week_pretrain_steps": 10, "finetune_docs": 300, "finetune_epochs": 1, "weeks": 2,
         "vocab_size": 2000, "name": "transfer_quick"}


def subset(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """A stratified subset of `n` rows (all of them when there are fewer)."""
    if n >= len(rows):
        return rows
    from sklearn.model_selection import train_test_split

    part, _ = train_test_split(rows, train_size=n, stratify=rows["label"], random_state=0)
    return part


def tfidf(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """The gate's TF-IDF + logistic regression baseline (promote.baselines' defaults) on this split."""
    started = time.perf_counter()
    frame = pd.DataFrame({"text": train["review"].tolist(), "label": train["label"].astype(str).tolist()})
    probs = tfidf_lr_probs(frame, test["review"].tolist(), LABELS, BaselinePolicy())
    target = test["label"].astype(str).map(LABELS.index).to_numpy()
    return {"macro_f1": round(metric("macro_f1", target, probs), 4), "n_train": len(train),
            "wall_seconds": round(time.perf_counter() - started, 1)}


class Run:
    """The benchmark's settings and scratch directory; each method is one stage of doclife, called directly."""

    def __init__(self, args: argparse.Namespace, root: Path, test: pd.DataFrame) -> None:
        self.args, self.root = args, root
        self.test_texts = test["review"].tolist()
        self.target = test["label"].astype(str).map(LABELS.index).to_numpy()
        self.pre_cfg = PretrainConfig(
            size=args.size, max_length=args.max_length, batch_size=args.pretrain_batch_size,
            max_steps=args.pretrain_steps, learning_rate=args.pretrain_lr, warmup_steps=max(1, args.pretrain_steps // 10),
            checkpoint_every_n_steps=max(1, args.pretrain_steps), accelerator="cpu")
        self.ft_cfg = FinetuneConfig(batch_size=32, max_epochs=args.finetune_epochs, warmup_steps=30, patience=2,
                                     accelerator="cpu")
        # A pretrained start may take finetuning options of its own (off by default: the same recipe for all).
        self.ft_from_checkpoint = replace(self.ft_cfg, layer_decay=args.layer_decay, head_learning_rate=args.head_lr)
        self.learning_rates = [float(x) for x in args.finetune_lrs.split(",")]

    def tokenize(self, snapshot: Path, name: str, base: BaseCheckpoint | None = None) -> tuple[Path, dict[str, Any]]:
        cfg = TokenizeConfig(vocab_size=self.args.vocab_size, extend_vocabulary=self.args.extend_vocabulary)
        measures = train_tokenizer(cfg, snapshot, self.root / f"{name}_tokenizer", base=base)
        return self.root / f"{name}_tokenizer", measures

    def pretrain(self, snapshot: Path, name: str, steps: int, base: BaseCheckpoint | None = None) -> dict[str, Any]:
        """Tokenize and pretrain `steps` steps (0: export the start as it is) from `base` or from scratch."""
        started = time.perf_counter()
        tokenizer, measures = self.tokenize(snapshot, name, base)
        cfg = replace(self.pre_cfg, max_steps=steps, warmup_steps=max(1, steps // 10),
                      checkpoint_every_n_steps=max(1, steps), init_from=None if base is None else str(base.path))
        out = self.root / name
        metrics = pretrain(cfg, snapshot, tokenizer, out, self.root / f"{name}_ckpt", self.root / f"{name}.json",
                           self.root / f"{name}.csv", base=base)
        return {"steps": metrics["steps"], "val_loss": metrics["val_loss"], "parameters": metrics["parameters"],
                "vocab_size": measures["vocab_size"], "added_tokens": measures.get("added_tokens"),
                "checkpoint_unk_rate_all": measures.get("checkpoint_unk_rate_all"), "unk_rate_all": measures["unk_rate_all"],
                "base_checkpoint": metrics.get("base_checkpoint"), "wall_seconds": round(time.perf_counter() - started, 1)}

    def finetune(self, name: str, start: Path, snapshot: Path, seeds: int, from_checkpoint: bool) -> dict[str, Any]:
        cfg = self.ft_from_checkpoint if from_checkpoint else self.ft_cfg
        return finetune_grid(name, start, cfg, self.learning_rates, seeds, snapshot, self.root, self.test_texts,
                             self.target, "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=CORPUS, help="pretraining corpus ($DOCLIFE_BENCH_CORPUS)")
    parser.add_argument("--target", type=Path, default=TARGET, help="finetuning corpus, label/review ($DOCLIFE_BENCH_TARGET)")
    parser.add_argument("--size", default="mini")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=8000, help="the tokenizers trained from scratch")
    parser.add_argument("--source-docs", type=int, default=0, help="source reviews used (0: all)")
    parser.add_argument("--target-docs", type=int, default=0, help="target reviews used before the split (0: all)")
    parser.add_argument("--pretrain-steps", type=int, default=3000, help="pretraining on the source")
    parser.add_argument("--pretrain-batch-size", type=int, default=32)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--continue-steps", type=int, default=500, help="continued pretraining on the target text")
    parser.add_argument("--extend-vocabulary", type=int, default=0, help="tokenize.extend_vocabulary for checkpoint starts")
    parser.add_argument("--finetune-docs", type=int, default=4000, help="labelled target reviews finetuned on")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lrs", default="5e-4", help="comma-separated; each start takes its best on validation")
    parser.add_argument("--layer-decay", type=float, default=1.0, help="finetune.layer_decay for checkpoint starts")
    parser.add_argument("--head-lr", type=float, default=None, help="finetune.head_learning_rate for checkpoint starts")
    parser.add_argument("--seeds", type=int, default=3, help="finetunings per start and rate (seeds 7, 8, ...)")
    parser.add_argument("--weeks", type=int, default=3, help="weekly batches of the target's train reviews (0: skip)")
    parser.add_argument("--week-pretrain-steps", type=int, default=300, help="pretraining steps of each weekly run")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of every part in a few minutes")
    parser.add_argument("--name", default="transfer", help="result file: bench/results/NAME.json")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if key != "name" or args.name == "transfer":
                setattr(args, key, value)

    source = require_corpus(args.source)
    target = require_corpus(args.target, "DOCLIFE_BENCH_TARGET")
    if args.source_docs:
        source = source.sample(n=min(args.source_docs, len(source)), random_state=0)
    if args.target_docs:
        target = target.sample(n=min(args.target_docs, len(target)), random_state=0)
    source_rows, rows = sentiment_split(source), sentiment_split(target)
    test = rows[rows["split"] == "test"]
    labelled = subset(rows[rows["split"] == "train"], args.finetune_docs)
    result: dict[str, Any] = {"source": f"{args.source.name} ({len(source_rows)} reviews; pretraining on the train and "
                                        "validation ones)", "target": f"{args.target.name}, sentiment", "n_test": len(test)}
    result["tfidf_lr_finetune_subset"] = tfidf(labelled, test)
    result["tfidf_lr_full_train"] = tfidf(rows[rows["split"] != "test"], test)
    print("tfidf", result["tfidf_lr_finetune_subset"], result["tfidf_lr_full_train"], flush=True)

    with tempfile.TemporaryDirectory(prefix="doclife-transfer-") as tmp:
        root = Path(tmp)
        run = Run(args, root, test)
        # 1. The checkpoint a team already has: `mini` pretrained on the source reviews, exported.
        source_snapshot = write_snapshot(source_rows[source_rows["split"] != "test"], root / "source_snapshot")
        result["source_pretrain"] = run.pretrain(source_snapshot, "source", args.pretrain_steps)
        print("source pretrain", result["source_pretrain"], flush=True)
        checkpoint = resolve_init_from("source", root, root / "registry")  # as params.yaml would name it

        # 2. Three starts on the same labelled target reviews.
        text_snapshot = write_snapshot(rows[rows["split"] != "test"], root / "target_text")  # continued pretraining
        ft_snapshot = write_snapshot(rows[(rows["split"] != "train") | rows.index.isin(labelled.index)], root / "ft_snapshot")
        # Start name -> (its base checkpoint, pretraining steps on the target text); each is exported to root/name.
        starts = {"random_init": (None, 0), "checkpoint_direct": (checkpoint, 0),
                  "checkpoint_continued": (checkpoint, args.continue_steps)}
        for name, (base, steps) in starts.items():
            pretrained = run.pretrain(text_snapshot, name, steps, base)
            result[name] = {"start": pretrained, **run.finetune(name, root / name, ft_snapshot, args.seeds, base is not None)}
            print(name, {k: v for k, v in result[name].items() if k != "by_learning_rate"}, flush=True)
        result["weekly"] = weekly_runs(run, rows, args) if args.weeks else None

    result["summary"] = {name: result[name]["test_macro_f1"] for name in starts} | {
        "tfidf_lr_finetune_subset": result["tfidf_lr_finetune_subset"]["macro_f1"],
        "tfidf_lr_full_train": result["tfidf_lr_full_train"]["macro_f1"]}
    result["budget"] = {key: getattr(args, key.replace("-", "_")) for key in (
        "size", "max-length", "vocab-size", "pretrain-steps", "pretrain-batch-size", "pretrain-lr", "continue-steps",
        "extend-vocabulary", "finetune-docs", "finetune-epochs", "finetune-lrs", "layer-decay", "head-lr", "seeds",
        "weeks", "week-pretrain-steps", "quick")} | {"finetune_docs_used": len(labelled),
                                                       "device": f"cpu, {torch.get_num_threads()} threads"}
    save_result(args.name, result)


def weekly_runs(run: Run, rows: pd.DataFrame, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each week, on the train reviews so far: from the champion (which it then replaces) and from scratch."""
    train = rows[rows["split"] == "train"].sample(frac=1.0, random_state=0)
    weeks = np.array_split(np.arange(len(train)), args.weeks)
    registry = Registry(run.root / "registry")
    out = []
    for week in range(1, args.weeks + 1):
        arrived = train.iloc[np.concatenate(weeks[:week])]
        snapshot = write_snapshot(pd.concat([arrived, rows[rows["split"] != "train"]]), run.root / f"week{week}")
        labelled = subset(arrived, args.finetune_docs)
        ft_snapshot = write_snapshot(pd.concat([labelled, rows[rows["split"] != "train"]]), run.root / f"week{week}_ft")
        entry: dict[str, Any] = {"week": week, "train_reviews": len(arrived), "finetune_docs": len(labelled)}
        tracks = {"from_scratch": None}
        if week > 1:  # week 1 has no champion: both tracks are this one run
            tracks["from_champion"] = resolve_init_from(CHAMPION, run.root, registry.root)
        for track, base in tracks.items():
            name = f"week{week}_{track}"
            start = run.pretrain(snapshot, name, args.week_pretrain_steps, base)
            entry[track] = {"start": start, **run.finetune(name + "_ft", run.root / name, ft_snapshot, args.seeds, base is not None)}
            print(name, {k: v for k, v in entry[track].items() if k != "by_learning_rate"}, flush=True)
        # The continual track's model (first seed, chosen rate) is next week's champion.
        carried = entry["from_champion" if week > 1 else "from_scratch"]
        model = run.root / f"week{week}_{'from_champion' if week > 1 else 'from_scratch'}_ft_lr{carried['learning_rate']:g}_seed7"
        version = registry.register(model, {"labels": LABELS, "week": week})["version"]
        registry.decide(version, True, f"weekly run {week}")
        entry["registered"] = version
        if week > 1:
            entry["gain_from_champion"] = round(entry["from_champion"]["test_macro_f1"] - entry["from_scratch"]["test_macro_f1"], 4)
        out.append(entry)
    return out


if __name__ == "__main__":
    main()
