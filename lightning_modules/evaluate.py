"""Scoring an exported classifier on the test split: metrics, predictions, confusion matrix and baselines."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from data_checks.io import DoclifeError, atomic_path, write_json
from lightning_modules.config import EvaluateConfig
from lightning_modules.model import loading_model_files
from lightning_modules.snapshot import iter_split, load_manifest, no_rows

READ_BATCH_ROWS = 65536
"""Snapshot rows read (and scored) at a time: evaluation holds one batch's text, never the whole split's."""


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


def majority_baseline(
    train_labels: Iterable[str] | Mapping[str, int], target: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Always predict the train split's most frequent label (ties: first in `labels`); scored on `target`.

    `train_labels` is the train split's labels, or their counts (label → rows) as `count_labels` gives them.
    """
    counts = Counter(train_labels)  # a mapping is taken as counts, an iterable of labels is counted
    if not any(counts.get(label, 0) > 0 for label in labels):
        raise DoclifeError("majority baseline: the train split has no row with a known label")
    majority = max(labels, key=lambda label: (int(counts.get(label, 0)), -labels.index(label)))
    y = torch.tensor(np.asarray(target), dtype=torch.long)
    preds = torch.full_like(y, labels.index(majority))
    return {
        "label": majority,
        "accuracy": _r(multiclass_accuracy(preds, y, num_classes=len(labels), average="micro")),
        "macro_f1": _r(multiclass_f1_score(preds, y, num_classes=len(labels), average="macro")),
    }


def count_labels(snapshot_dir: Path, split: str) -> Counter[str]:
    """Rows per label in one split, read a batch of the `label` column at a time (no text is read)."""
    counts: Counter[str] = Counter()
    for batch in iter_split(snapshot_dir, [split], ["label"], READ_BATCH_ROWS):
        counts.update({str(label): int(n) for label, n in batch["label"].value_counts(sort=False).items()})
    return counts


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


@dataclass(frozen=True)
class Scored:
    """What the metrics need of the test split, without its text: small arrays over the known-label rows."""

    probs: np.ndarray
    """(n, C) float32 class probabilities, columns in the model's label order."""
    target: np.ndarray
    """(n,) int64 index of each row's true label."""
    n_ignored: int
    """Test rows whose label the model does not know, left out of `probs` and `target`."""


def _score_batches(
    batches: Iterable[pd.DataFrame],
    predict: Callable[[list[str]], np.ndarray],
    labels: list[str],
    predictions_tmp: Path,
    confusion_tmp: Path,
) -> Scored:
    """Score test batches (doc_id, text, label) in turn, appending each one's known-label rows to the files.

    `predict(texts)` gives (n, C) probabilities. The files are the temporary paths of `atomic_path`: rows
    are appended as they are scored, and the caller's rename publishes them only once all are written.
    """
    index = {label: i for i, label in enumerate(labels)}
    probs_parts: list[np.ndarray] = []
    target_parts: list[np.ndarray] = []
    n_ignored = 0
    with ExitStack() as stack:
        csv = stack.enter_context(open(confusion_tmp, "w", encoding="utf-8", newline=""))
        writer: pq.ParquetWriter | None = None
        for batch in batches:
            probs = np.asarray(predict(batch["text"].tolist()), dtype=np.float32)
            known = batch["label"].isin(labels).to_numpy()
            n_ignored += int((~known).sum())
            if not known.any():
                continue  # nothing to write; an empty frame would also type its columns as null
            kept, probs = batch[known].reset_index(drop=True), probs[known]
            predicted = probs.argmax(axis=1)
            frame = pd.DataFrame(
                {"doc_id": kept["doc_id"], "label": kept["label"], "predicted": [labels[i] for i in predicted]}
            )
            for i, label in enumerate(labels):
                frame[f"prob_{label}"] = probs[:, i]
            if writer is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = stack.enter_context(pq.ParquetWriter(predictions_tmp, table.schema))
            else:
                # Every batch is written with the first one's schema (a writer takes only that).
                table = pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False)
            writer.write_table(table)
            # One row per document: the layout `dvc plots` confusion templates read; the header once.
            frame[["label", "predicted"]].rename(columns={"label": "actual"}).to_csv(
                csv, index=False, header=not probs_parts
            )
            probs_parts.append(probs)
            target_parts.append(kept["label"].map(index).to_numpy(dtype=np.int64))
    if not probs_parts:
        return Scored(np.zeros((0, len(labels)), dtype=np.float32), np.zeros(0, dtype=np.int64), n_ignored)
    return Scored(np.concatenate(probs_parts), np.concatenate(target_parts), n_ignored)


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

    Test rows whose label the model does not know are left out (counted in `n_ignored`). The test split is
    read `READ_BATCH_ROWS` at a time, so memory holds one batch's text and the (n, C) probabilities.
    """
    started = time.perf_counter()
    manifest = load_manifest(snapshot_dir)
    batches: Iterator[pd.DataFrame] = iter_split(snapshot_dir, ["test"], ["doc_id", "text", "label"], READ_BATCH_ROWS)
    # The first batch is read before the model loads: a bad corpus or an empty test split is reported first.
    first = next(batches, None)
    train_counts = count_labels(snapshot_dir, "train")  # the majority baseline needs only these
    if first is None:
        raise no_rows(snapshot_dir, "the test split")

    tokenizer, model, labels, max_length = load_exported(model_dir)

    def predict(texts: list[str]) -> np.ndarray:
        return _predict(tokenizer, model, texts, cfg.batch_size, max_length, "cpu", count_tokens=False)[0]

    # Metrics (the baseline's check included) are computed before the renames: a failure leaves the old files.
    with atomic_path(predictions_path) as predictions_tmp, atomic_path(confusion_csv) as confusion_tmp:
        scored = _score_batches(chain([first], batches), predict, labels, predictions_tmp, confusion_tmp)
        if not len(scored.target):
            raise no_rows(snapshot_dir, f"the test split with a label in {labels}")
        scores = classification_metrics(scored.probs, scored.target, labels)
        baseline = majority_baseline(train_counts, scored.target, labels)
    metrics = {
        **scores,
        "baselines": {"majority": baseline},
        "n_test": len(scored.target),
        "n_ignored": scored.n_ignored,
        "snapshot": manifest["snapshot"],
        "content_sha256": manifest["content_sha256"],
    }
    predicted = scored.probs.argmax(axis=1)
    matrix = multiclass_confusion_matrix(
        torch.tensor(predicted, dtype=torch.long), torch.tensor(scored.target, dtype=torch.long),
        num_classes=len(labels),
    ).numpy()  # (actual, predicted)
    _confusion_png(Path(confusion_png), matrix, labels)
    write_json(metrics_path, metrics)
    # Timing is returned but kept out of the metrics file, which stays a pure function of model and data.
    return metrics | {"wall_seconds": round(time.perf_counter() - started, 3)}
