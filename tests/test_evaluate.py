"""Evaluation metrics against hand-computed values, the majority baseline, and the files evaluate writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lightning_modules.evaluate as ev
from lightning_modules.config import EvaluateConfig
from lightning_modules.synthetic import make_snapshot

# Five documents, three classes. argmax → [a, b, b, b, a]; targets [a, a, b, b, c].
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.5, 0.3],
        [0.5, 0.1, 0.4],
    ]
)
TARGET = np.array([0, 0, 1, 1, 2])


def test_metrics_match_hand_computation() -> None:
    m = ev.classification_metrics(PROBS, TARGET, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # F1: a = 0.5 (P 1/2, R 1/2), b = 0.8 (P 2/3, R 1), c = 0 → macro 1.3 / 3.
    assert m["macro_f1"] == pytest.approx(1.3 / 3, abs=1e-6)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3, abs=1e-6) and m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    # One-vs-rest AUC: a = 5/6, b = 5/6, c = 1 (its single positive outranks every negative).
    assert m["roc_auc"] == pytest.approx((5 / 6 + 5 / 6 + 1) / 3, abs=1e-6)


def test_class_absent_from_test_is_left_out_of_macro_scores() -> None:
    probs = np.hstack([PROBS, np.zeros((5, 1))])  # a fourth class "d", never the truth and never predicted
    m = ev.classification_metrics(probs, TARGET, ["a", "b", "c", "d"])
    assert m["macro_f1"] == pytest.approx(1.3 / 3, abs=1e-6)
    assert m["roc_auc"] == pytest.approx((5 / 6 + 5 / 6 + 1) / 3, abs=1e-6)
    assert m["per_class"]["d"]["support"] == 0


def test_auc_undefined_with_a_single_class_in_test() -> None:
    assert ev.classification_metrics(PROBS[:2], TARGET[:2], ["a", "b", "c"])["roc_auc"] is None


def test_majority_baseline_uses_train_split() -> None:
    base = ev.majority_baseline(["b", "b", "a", "c"], TARGET, ["a", "b", "c"])
    assert base["label"] == "b"
    assert base["accuracy"] == pytest.approx(2 / 5)
    # Only b is ever predicted: F1_b = 2·0.4·1/1.4 = 4/7, F1_a = F1_c = 0 → macro (4/7)/3.
    assert base["macro_f1"] == pytest.approx((4 / 7) / 3, abs=1e-6)
    assert ev.majority_baseline(["c", "a"], TARGET, ["a", "b", "c"])["label"] == "a"  # tie → first listed


def test_evaluate_writes_metrics_predictions_and_confusion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = make_snapshot(tmp_path / "snapshot", n_docs=200, seed=5)
    model_labels = ["sports", "technology", "food"]  # the model does not know "travel"
    frame = pd.read_parquet(snapshot / "corpus.parquet")
    test = frame[frame["split"] == "test"]
    truth = dict(zip(test["text"], test["label"]))

    def fake_predict(tokenizer, model, texts: list[str], *args, **kwargs) -> tuple[np.ndarray, None]:
        # Right for every document except that "food" is always called "sports".
        probs = np.full((len(texts), 3), 0.1, dtype=np.float32)
        for row, text in enumerate(texts):
            label = truth[text]
            probs[row, 0 if label in ("food", "travel") else model_labels.index(label)] = 0.8
        return probs, None

    # evaluate loads the model once and predicts one read batch at a time: fake both halves.
    monkeypatch.setattr(ev, "load_exported", lambda model_dir: (None, None, model_labels, 32))
    monkeypatch.setattr(ev, "_predict", fake_predict)
    out = tmp_path / "eval"
    metrics = ev.evaluate(
        EvaluateConfig(batch_size=8), snapshot, tmp_path / "model", out / "metrics.json",
        out / "predictions.parquet", out / "confusion.csv", out / "confusion.png",
    )
    known = test[test["label"].isin(model_labels)]
    assert metrics["n_test"] == len(known) and metrics["n_ignored"] == int((test["label"] == "travel").sum())
    expected_accuracy = (known["label"] != "food").mean()
    assert metrics["accuracy"] == pytest.approx(expected_accuracy, abs=1e-6)
    assert metrics["per_class"]["food"]["recall"] == 0.0 and metrics["per_class"]["technology"]["precision"] == 1.0

    written = json.loads((out / "metrics.json").read_text())
    assert set(written) >= {"accuracy", "macro_f1", "roc_auc", "per_class", "baselines", "n_test", "snapshot", "content_sha256"}
    assert "wall_seconds" not in written and written["snapshot"].startswith("snap-")
    train_counts = frame[(frame["split"] == "train") & frame["label"].isin(model_labels)]["label"].value_counts()
    assert written["baselines"]["majority"]["label"] == train_counts.idxmax()

    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == ["doc_id", "label", "predicted", "prob_sports", "prob_technology", "prob_food"]
    assert len(predictions) == len(known)
    confusion = pd.read_csv(out / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(known)
    assert set(confusion.loc[confusion["actual"] == "food", "predicted"]) == {"sports"}
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_predict_proba_rejects_a_missing_model(tmp_path: Path) -> None:
    from data_checks.io import DoclifeError

    with pytest.raises(DoclifeError, match="not an exported model"):
        ev.predict_proba(tmp_path, ["x"])
