"""Quality under a fixed budget: sentiment on online_shopping_10_cats.csv (label 0/1).

Three models scored on the same test split (the corpus README's protocol: nulls and duplicate reviews
dropped, 80/20 stratified, random_state=0):
  1. doclife pretrain (masked-LM on the train reviews) + finetune,
  2. the same finetuning from random weights (same architecture, data, schedule and seed),
  3. char 1-3-gram TF-IDF + logistic regression (C=4), trained on the whole 80% and on the finetuning subset;
and a linear probe of each start's frozen features ([CLS] and mean-pooled) on the finetuning subset.
The budget is fixed in steps and documents (so the run is reproducible); the wall time of each part is
reported next to it.

    python -m bench.quality [--pretrain-steps 3000] [--finetune-docs 4000] [--finetune-epochs 3]   # the README's CPU figures
    python -m bench.quality --accelerator gpu --precision bf16-mixed --size mini --pretrain-steps 6000 \
        --pretrain-batch-size 128 --pretrain-lr 5e-4 --finetune-lrs 1e-4,5e-4 --finetune-seeds 2 --name quality_gpu
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
from lightning_modules.model import loading_model_files  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import finetune, pretrain  # noqa: E402

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


def score(model_dir: Path, texts: list[str], target: np.ndarray, device: str = "cpu") -> float:
    probs, labels = predict_proba(model_dir, texts, batch_size=256, device=device)
    assert labels == LABELS
    return round(classification_metrics(probs, target, labels)["macro_f1"], 4)


def linear_probe(model_dir: Path, max_length: int, train_texts: list[str], train_y: np.ndarray, test_texts: list[str],
                 test_y: np.ndarray, device: str = "cpu") -> dict:
    """Test macro-F1 of logistic regression on the frozen encoder's last hidden states: at [CLS] (what the
    classification head reads) and averaged over the tokens. Shows what a start's features hold before finetuning."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from transformers import AutoModel, AutoTokenizer

    with loading_model_files(model_dir):  # quiet: the MLM head left out and the unused pooler new are expected
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        encoder = AutoModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()

    @torch.inference_mode()
    def features(texts: list[str]) -> dict[str, np.ndarray]:
        cls, mean = [], []
        for start in range(0, len(texts), 256):
            batch = tokenizer(texts[start:start + 256], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            hidden = encoder(**batch).last_hidden_state.float()  # (b, t, hidden)
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (b, t, 1)
            cls.append(hidden[:, 0].cpu())
            mean.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
        return {"cls": torch.cat(cls).numpy(), "mean": torch.cat(mean).numpy()}

    train, test = features(train_texts), features(test_texts)
    return {kind: round(float(f1_score(test_y, LogisticRegression(max_iter=3000).fit(train[kind], train_y)
                                       .predict(test[kind]), average="macro")), 4) for kind in ("cls", "mean")}


def finetune_grid(name: str, start: Path, ft_cfg: FinetuneConfig, learning_rates: list[float], seeds: int,
                  ft_snapshot: Path, root: Path, test_texts: list[str], target: np.ndarray, device: str) -> dict:
    """Finetune from `start` at each learning rate with several seeds; the rate is chosen on validation.

    One seed moves test macro-F1 by about 0.005, as much as the effect measured, so the means are compared.
    The rate with the best mean validation macro-F1 is the start's result: the test split never chooses.
    """
    by_rate: dict[str, dict] = {}
    for lr in learning_rates:
        runs = []
        for seed in range(7, 7 + seeds):
            started = time.perf_counter()
            run = f"{name}_lr{lr:g}_seed{seed}"
            ft = finetune(replace(ft_cfg, seed=seed, learning_rate=lr), ft_snapshot, start, LABELS, root / run,
                          root / f"{run}_ckpt", root / f"{run}.json", root / f"{run}.csv")
            runs.append({"seed": seed, "test_macro_f1": score(root / run, test_texts, target, device),
                         "best_val_macro_f1": ft["best_val_macro_f1"], "epochs": ft["epochs"],
                         "wall_seconds": round(time.perf_counter() - started, 1)})
            print(name, f"lr={lr:g}", runs[-1], flush=True)
        f1s = [r["test_macro_f1"] for r in runs]
        by_rate[f"{lr:g}"] = {
            "test_macro_f1": round(float(np.mean(f1s)), 4), "test_macro_f1_range": [min(f1s), max(f1s)],
            "val_macro_f1": round(float(np.mean([r["best_val_macro_f1"] for r in runs])), 4), "runs": runs,
        }
    chosen = max(by_rate, key=lambda lr: by_rate[lr]["val_macro_f1"])
    return {"test_macro_f1": by_rate[chosen]["test_macro_f1"], "learning_rate": float(chosen), "n_train": ft["n_train"],
            "by_learning_rate": by_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--pretrain-batch-size", type=int, default=32, help="packed rows per step")
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--size", default="custom", help="named encoder size; custom = hidden 128, 2 layers, 4 heads, FFN 512")
    parser.add_argument("--finetune-docs", type=int, default=4000, help="train reviews used for finetuning")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lrs", default="5e-4", help="comma-separated; each start takes its best on validation")
    parser.add_argument("--finetune-seeds", type=int, default=3, help="finetunings per start and rate (seeds 7, 8, ...)")
    parser.add_argument("--accelerator", default="cpu", help="cpu, or gpu for one CUDA device")
    parser.add_argument("--precision", default="32-true", help="bf16-mixed on a GPU")
    parser.add_argument("--starts", default="pretrained,random", help="which starts to finetune (random alone skips pretraining)")
    parser.add_argument("--name", default="quality", help="result file: bench/results/NAME.json")
    args = parser.parse_args()
    device = "cuda" if args.accelerator in ("gpu", "cuda") else "cpu"

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

    hardware = {"accelerator": args.accelerator, "devices": 1, "precision": args.precision}
    pre_cfg = PretrainConfig(
        size=args.size, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, max_length=128,
        batch_size=args.pretrain_batch_size, max_steps=args.pretrain_steps, learning_rate=args.pretrain_lr,
        warmup_steps=max(1, args.pretrain_steps // 10), checkpoint_every_n_steps=args.pretrain_steps, **hardware,
    )
    ft_cfg = FinetuneConfig(batch_size=32, max_epochs=args.finetune_epochs, warmup_steps=30, patience=2, **hardware)
    learning_rates = [float(x) for x in args.finetune_lrs.split(",")]
    with tempfile.TemporaryDirectory(prefix="doclife-quality-") as tmp:
        root = Path(tmp)
        pre_snapshot = write_snapshot(rows[rows["split"] != "test"], root / "pre_snapshot")
        ft_rows = rows[(rows["split"] != "train") | rows.index.isin(subset.index)]
        ft_snapshot = write_snapshot(ft_rows, root / "ft_snapshot")
        train_tokenizer(TokenizeConfig(vocab_size=8000), pre_snapshot, root / "tokenizer")

        # Result name -> the directory finetuning starts from, for the starts asked for.
        wanted = args.starts.split(",")
        starts = {name: root / start for start, name in (("pretrained", "pretrained_finetuned"), ("random", "random_init_finetuned"))
                  if start in wanted}
        if "pretrained_finetuned" in starts:
            started = time.perf_counter()
            pre = pretrain(pre_cfg, pre_snapshot, root / "tokenizer", root / "pretrained", root / "pre_ckpt",
                           root / "pre.json", root / "pre.csv")
            result["pretrain"] = {"steps": pre["steps"], "packed_rows": pre["packed_rows"], "tokens_per_s": pre["tokens_per_second"],
                                  "epochs": round(pre["steps"] * pre_cfg.batch_size / pre["packed_rows"], 1),
                                  "final_val_loss": pre["val_loss"], "wall_seconds": round(time.perf_counter() - started, 1)}
            print("pretrain", result["pretrain"], flush=True)

        if "random_init_finetuned" in starts:
            # The encoder as initialised (max_steps 0): the weights pretraining starts from.
            pretrain(replace(pre_cfg, max_steps=0), pre_snapshot, root / "tokenizer", root / "random", root / "random_ckpt",
                     root / "random.json", root / "random.csv")

        result["linear_probe"] = {name: linear_probe(start, pre_cfg.max_length, subset["review"].tolist(),
                                                     subset["label"].to_numpy(), test_texts, test_y, device)
                                  for name, start in starts.items()}
        print("linear probe", result["linear_probe"], flush=True)
        target = test["label"].astype(str).map(LABELS.index).to_numpy()
        for name, start in starts.items():
            result[name] = finetune_grid(name, start, ft_cfg, learning_rates, args.finetune_seeds, ft_snapshot, root,
                                         test_texts, target, device)

    pretraining = {"pretrain_steps": args.pretrain_steps, "pretrain_global_batch_rows": pre_cfg.batch_size,
                   "pretrain_learning_rate": pre_cfg.learning_rate} if "pretrained_finetuned" in starts else {}
    result["budget"] = {**pretraining, "max_length": pre_cfg.max_length, "finetune_docs": len(subset), "finetune_epochs": args.finetune_epochs,
                        "finetune_learning_rates": learning_rates, "finetune_seeds": args.finetune_seeds,
                        "model(hidden,layers,heads,ffn)": list(pre_cfg.dims()), **hardware,
                        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"}
    if len(starts) == 2:
        result["gain_from_pretraining"] = round(result["pretrained_finetuned"]["test_macro_f1"] - result["random_init_finetuned"]["test_macro_f1"], 4)
    for name in starts:
        result[f"gap_to_tfidf_full_{name}"] = round(result[name]["test_macro_f1"] - result["tfidf_logreg_full_train"]["macro_f1"], 4)
    save_result(args.name, result)


if __name__ == "__main__":
    main()
