"""Quality under a fixed CPU budget: sentiment on online_shopping_10_cats.csv (label 0/1).

Three models scored on the same test split (the corpus README's protocol: nulls and duplicate reviews
dropped, 80/20 stratified, random_state=0):
  1. doclife pretrain (masked-LM on the train reviews) + finetune,
  2. the same finetuning from random weights (same architecture, data, schedule and seed),
  3. char 1-3-gram TF-IDF + logistic regression (C=4), trained on the whole 80% and on the finetuning subset.
The budget is fixed in steps and documents (so the run is reproducible); the wall time of each part is
reported next to it.

    python -m bench.quality [--pretrain-steps 3000] [--finetune-docs 4000] [--finetune-epochs 3]   # the README figures
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import require_corpus, save_result, sentiment_split, write_snapshot  # noqa: E402
from lightning_modules.config import FinetuneConfig, PretrainConfig, TokenizeConfig  # noqa: E402
from lightning_modules.evaluate import classification_metrics, predict_proba  # noqa: E402
from lightning_modules.model import build_mlm, quiet_transformers  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import _load_tokenizer, finetune, pretrain  # noqa: E402

LABELS = ["0", "1"]


def tfidf_logreg(train_texts: list[str], train_y: np.ndarray, test_texts: list[str], test_y: np.ndarray) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
    model = LogisticRegression(C=4, max_iter=2000)
    model.fit(vectorizer.fit_transform(train_texts), train_y)
    predicted = model.predict(vectorizer.transform(test_texts))
    return {"macro_f1": round(float(f1_score(test_y, predicted, average="macro")), 4), "n_train": len(train_texts),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def score(model_dir: Path, texts: list[str], target: np.ndarray) -> float:
    probs, labels = predict_proba(model_dir, texts, batch_size=256)
    assert labels == LABELS
    return round(classification_metrics(probs, target, labels)["macro_f1"], 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--finetune-docs", type=int, default=4000, help="train reviews used for finetuning")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-seeds", type=int, default=3, help="finetunings per start (seeds 7, 8, ...); the mean is compared")
    args = parser.parse_args()

    rows = sentiment_split(require_corpus())
    test = rows[rows["split"] == "test"]
    test_texts, test_y = test["review"].tolist(), test["label"].to_numpy()
    train_all = rows[rows["split"] != "test"]
    result: dict = {"data": "online_shopping_10_cats.csv, sentiment", "n_test": len(test), "n_train_80pct": len(train_all)}

    # Finetuning sees a stratified subset of the train split (the budget); pretraining sees all train reviews.
    fit_rows = rows[rows["split"] == "train"]
    if args.finetune_docs < len(fit_rows):
        from sklearn.model_selection import train_test_split

        subset, _ = train_test_split(fit_rows, train_size=args.finetune_docs, stratify=fit_rows["label"], random_state=0)
    else:
        subset = fit_rows
    result["tfidf_logreg_full_train"] = tfidf_logreg(train_all["review"].tolist(), train_all["label"].to_numpy(), test_texts, test_y)
    result["tfidf_logreg_finetune_subset"] = tfidf_logreg(subset["review"].tolist(), subset["label"].to_numpy(), test_texts, test_y)
    print("tfidf", result["tfidf_logreg_full_train"], result["tfidf_logreg_finetune_subset"], flush=True)

    pre_cfg = PretrainConfig(
        hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, max_length=128, batch_size=32,
        max_steps=args.pretrain_steps, learning_rate=1e-3, warmup_steps=max(1, args.pretrain_steps // 10),
        checkpoint_every_n_steps=args.pretrain_steps, accelerator="cpu",
    )
    ft_cfg = FinetuneConfig(batch_size=32, max_epochs=args.finetune_epochs, learning_rate=5e-4, warmup_steps=30,
                            patience=2, accelerator="cpu")
    with tempfile.TemporaryDirectory(prefix="doclife-quality-") as tmp:
        root = Path(tmp)
        pre_snapshot = write_snapshot(rows[rows["split"] != "test"], root / "pre_snapshot")
        ft_rows = rows[(rows["split"] != "train") | rows.index.isin(subset.index)]
        ft_snapshot = write_snapshot(ft_rows, root / "ft_snapshot")
        train_tokenizer(TokenizeConfig(vocab_size=8000), pre_snapshot, root / "tokenizer")

        started = time.perf_counter()
        pre = pretrain(pre_cfg, pre_snapshot, root / "tokenizer", root / "pretrained", root / "pre_ckpt",
                       root / "pre.json", root / "pre.csv")
        result["pretrain"] = {"steps": pre["steps"], "packed_rows": pre["packed_rows"], "tokens_per_s": pre["tokens_per_second"],
                              "final_val_loss": pre["val_loss"], "wall_seconds": round(time.perf_counter() - started, 1)}
        print("pretrain", result["pretrain"], flush=True)

        # The same architecture with random weights, saved like a pretrained model so finetune() takes it.
        torch.manual_seed(pre_cfg.seed)
        tokenizer = _load_tokenizer(root / "tokenizer")
        random_model = build_mlm(pre_cfg, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
        with quiet_transformers():
            random_model.save_pretrained(str(root / "random"))
            tokenizer.save_pretrained(str(root / "random"))

        # Several finetuning seeds per start: one seed moves test macro-F1 by about 0.005, as much as the effect.
        target = test["label"].astype(str).map(LABELS.index).to_numpy()
        for name, start in (("pretrained_finetuned", root / "pretrained"), ("random_init_finetuned", root / "random")):
            runs = []
            for seed in range(7, 7 + args.finetune_seeds):
                started = time.perf_counter()
                run = f"{name}_seed{seed}"
                ft = finetune(replace(ft_cfg, seed=seed), ft_snapshot, start, LABELS, root / run, root / f"{run}_ckpt",
                              root / f"{run}.json", root / f"{run}.csv")
                runs.append({"seed": seed, "test_macro_f1": score(root / run, test_texts, target),
                             "best_val_macro_f1": ft["best_val_macro_f1"], "epochs": ft["epochs"],
                             "wall_seconds": round(time.perf_counter() - started, 1)})
                print(name, runs[-1], flush=True)
            f1s = [r["test_macro_f1"] for r in runs]
            result[name] = {"test_macro_f1": round(float(np.mean(f1s)), 4), "test_macro_f1_range": [min(f1s), max(f1s)],
                            "n_train": ft["n_train"], "runs": runs}

    result["budget"] = {"pretrain_steps": args.pretrain_steps, "pretrain_global_batch_rows": pre_cfg.batch_size,
                        "max_length": pre_cfg.max_length, "finetune_docs": len(subset), "finetune_epochs": args.finetune_epochs,
                        "finetune_seeds": args.finetune_seeds,
                        "model(hidden,layers,heads,ffn)": list(pre_cfg.dims()), "threads": torch.get_num_threads()}
    result["gain_from_pretraining"] = round(result["pretrained_finetuned"]["test_macro_f1"] - result["random_init_finetuned"]["test_macro_f1"], 4)
    result["gap_to_tfidf_full"] = round(result["pretrained_finetuned"]["test_macro_f1"] - result["tfidf_logreg_full_train"]["macro_f1"], 4)
    save_result("quality", result)


if __name__ == "__main__":
    main()
