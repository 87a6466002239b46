"""Scoring an exported classifier on the test split: metrics, predictions, confusion matrix and baselines."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from data_checks.io import DoclifeError, atomic_path, write_json, write_parquet
from lightning_modules.config import EvaluateConfig
from lightning_modules.model import loading_model_files
from lightning_modules.snapshot import load_manifest, read_split, require_rows


def _r(value: float | torch.Tensor) -> float:
    """Metrics are float32 inside torchmetrics; six decimals keep the json free of that noise."""
    return round(float(value), 6)


def load_exported(model_dir: Path) -> tuple[Any, Any, list[str], int]:
    """An exported Hugging Face classifier, offline: (tokenizer, model in eval mode, labels, max length)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise DoclifeError(f"{model_dir}: not an exported model (no config.json)")
    with loading_model_files(model_dir):
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return tokenizer, model, labels, int(model.config.max_position_embeddings)


def predict_proba(
    model_dir: Path, texts: list[str], batch_size: int = 128, device: str = "cpu"
) -> tuple[np.ndarray, list[str]]:
    """Class probabilities (n, C) for `texts` from an exported model dir, and the label of each column."""
    tokenizer, model, labels, max_length = load_exported(model_dir)
    probs, _ = _predict(tokenizer, model, list(texts), batch_size, max_length, device, count_tokens=False)
    return probs, labels


@dataclass(frozen=True)
class Predictions:
    """What batch prediction needs besides the probabilities: how much of each text the model read."""

    probs: np.ndarray
    """Class probabilities, (n, C), columns in `labels` order."""
    labels: list[str]
    """The model's labels."""
    n_tokens: np.ndarray
    """(n,) each text's tokens without the special ones ([CLS], [SEP]), counted in full even where truncated."""
    max_tokens: int
    """The most text tokens the model reads: its max length less the special tokens."""


def predict_with_tokens(model_dir: Path, texts: list[str], batch_size: int = 128, device: str = "cpu") -> Predictions:
    """`predict_proba` plus each text's token count, so a caller can tell which texts were cut or empty."""
    tokenizer, model, labels, max_length = load_exported(model_dir)
    probs, n_tokens = _predict(tokenizer, model, list(texts), batch_size, max_length, device, count_tokens=True)
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    return Predictions(probs, labels, n_tokens - specials, max_length - specials)


def _predict(
    tokenizer: Any, model: Any, texts: list[str], batch_size: int, max_length: int, device: str, count_tokens: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (n, C) and, with `count_tokens`, each text's full token count with special tokens (n,)."""
    model.to(device)
    # Longest first: each batch holds texts of about the same length (in characters, which tokens follow
    # closely), so little of it is padding; the rows go back to the input order as they are written.
    order = np.argsort([-len(text) for text in texts], kind="stable")
    probs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    n_tokens = np.zeros(len(texts), dtype=np.int64) if count_tokens else None
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer([texts[r] for r in rows], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            logits = model(input_ids=ids, attention_mask=attention).logits  # (b, C)
            probs[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if n_tokens is not None:
                lengths = batch["attention_mask"].sum(dim=1).numpy()  # (b,) tokens read, specials included
                # Only a text that filled max_length can have been cut: tokenize just those again, uncut.
                cut = np.flatnonzero(lengths >= max_length)
                if len(cut):
                    uncut = tokenizer([texts[rows[i]] for i in cut], truncation=False, verbose=False)["input_ids"]
                    lengths[cut] = [len(x) for x in uncut]
                n_tokens[rows] = lengths
    return probs, n_tokens


def macro_ovr_auroc(probs: torch.Tensor, target: torch.Tensor) -> float | None:
    """Macro one-vs-rest ROC AUC over the classes that have both positives and negatives in `target`.

    A class absent from the test split has no defined AUC and is left out of the average (not scored 0).
    """
    scores = []
    for c in range(probs.shape[1]):
        positives = int((target == c).sum())
        if 0 < positives < len(target):
            scores.append(float(binary_auroc(probs[:, c], (target == c).long())))
    return float(np.mean(scores)) if scores else None


def classification_metrics(probs: np.ndarray, target: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, macro one-vs-rest ROC AUC and per-class precision/recall/support.

    `probs` is (n, C) with columns in `labels` order; `target` holds class indices, (n,).
    Macro-F1 averages over the classes present in the target or the predictions.
    """
    num_classes = len(labels)
    p = torch.tensor(np.asarray(probs), dtype=torch.float)
    y = torch.tensor(np.asarray(target), dtype=torch.long)
    preds = p.argmax(dim=-1)
    precision = multiclass_precision(preds, y, num_classes=num_classes, average=None)
    recall = multiclass_recall(preds, y, num_classes=num_classes, average=None)
    support = torch.bincount(y, minlength=num_classes)
    auc = macro_ovr_auroc(p, y)
    return {
        "accuracy": _r(multiclass_accuracy(preds, y, num_classes=num_classes, average="micro")),
        "macro_f1": _r(multiclass_f1_score(preds, y, num_classes=num_classes, average="macro")),
        "roc_auc": None if auc is None else _r(auc),
        "per_class": {
            label: {"precision": _r(precision[i]), "recall": _r(recall[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def majority_baseline(train_labels: list[str], target: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Always predict the train split's most frequent label (ties: first in `labels`); scored on `target`."""
    counts = pd.Series(train_labels).value_counts()
    counts = counts[counts.index.isin(labels)]
    if counts.empty:
        raise DoclifeError("majority baseline: the train split has no row with a known label")
    majority = max(labels, key=lambda label: (int(counts.get(label, 0)), -labels.index(label)))
    y = torch.tensor(np.asarray(target), dtype=torch.long)
    preds = torch.full_like(y, labels.index(majority))
    return {
        "label": majority,
        "accuracy": _r(multiclass_accuracy(preds, y, num_classes=len(labels), average="micro")),
        "macro_f1": _r(multiclass_f1_score(preds, y, num_classes=len(labels), average="macro")),
    }


def _confusion_png(path: Path, matrix: np.ndarray, labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    size = max(4.0, 0.9 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (test split)")
    peak = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color="white" if matrix[i, j] > peak / 2 else "black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def evaluate(
    cfg: EvaluateConfig,
    snapshot_dir: Path,
    model_dir: Path,
    metrics_path: Path,
    predictions_path: Path,
    confusion_csv: Path,
    confusion_png: Path,
) -> dict[str, Any]:
    """Score the model in `model_dir` on the snapshot's test split and write metrics, predictions and plots.

    Test rows whose label the model does not know are left out (counted in `n_ignored`).
    """
    started = time.perf_counter()
    manifest = load_manifest(snapshot_dir)
    test = read_split(snapshot_dir, ["test"])
    train = read_split(snapshot_dir, ["train"])
    require_rows(test, snapshot_dir, "the test split")

    probs, labels = predict_proba(model_dir, test["text"].tolist(), cfg.batch_size)
    known = test["label"].isin(labels).to_numpy()
    test, probs = test[known].reset_index(drop=True), probs[known]
    require_rows(test, snapshot_dir, f"the test split with a label in {labels}")
    index = {label: i for i, label in enumerate(labels)}
    target = test["label"].map(index).to_numpy()
    predicted = probs.argmax(axis=1)

    scores = classification_metrics(probs, target, labels)
    baseline = majority_baseline(train["label"].tolist(), target, labels)
    metrics = {
        **scores,
        "baselines": {"majority": baseline},
        "n_test": len(test),
        "n_ignored": int((~known).sum()),
        "snapshot": manifest["snapshot"],
        "content_sha256": manifest["content_sha256"],
    }

    predictions = pd.DataFrame(
        {"doc_id": test["doc_id"], "label": test["label"], "predicted": [labels[i] for i in predicted]}
    )
    for i, label in enumerate(labels):
        predictions[f"prob_{label}"] = probs[:, i]
    write_parquet(predictions_path, predictions)
    # One row per document: the layout `dvc plots` confusion templates read.
    with atomic_path(confusion_csv) as tmp:
        predictions[["label", "predicted"]].rename(columns={"label": "actual"}).to_csv(tmp, index=False)
    matrix = multiclass_confusion_matrix(
        torch.tensor(predicted, dtype=torch.long), torch.tensor(np.asarray(target), dtype=torch.long), num_classes=len(labels)
    ).numpy()  # (actual, predicted)
    _confusion_png(Path(confusion_png), matrix, labels)
    write_json(metrics_path, metrics)
    # Timing is returned but kept out of the metrics file, which stays a pure function of model and data.
    return metrics | {"wall_seconds": round(time.perf_counter() - started, 3)}
