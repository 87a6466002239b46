"""The evaluate stage reads the test split in batches: same files as in one batch, bounded text, atomic output."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import lightning_modules.evaluate as ev
from data_checks.io import DoclifeError
from lightning_modules.config import EvaluateConfig
from lightning_modules.synthetic import make_snapshot

MODEL_LABELS = ["sports", "technology", "food"]  # the fake model does not know "travel"
OUTPUTS = ("metrics.json", "predictions.parquet", "confusion.csv", "confusion.png")


def _probs(text: str) -> np.ndarray:
    """Made-up probabilities that depend on the text alone, so any batching gives the same numbers."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = np.array([1 + digest[i] for i in range(len(MODEL_LABELS))], dtype=np.float32)
    return raw / raw.sum()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fake the exported model: `load_exported` and `_predict`; the list records each `_predict` call's size."""
    sizes: list[int] = []

    def fake_predict(tokenizer: Any, model: Any, texts: list[str], *args: Any, **kwargs: Any
                     ) -> tuple[np.ndarray, None]:
        sizes.append(len(texts))
        return np.stack([_probs(t) for t in texts]).astype(np.float32), None

    monkeypatch.setattr(ev, "load_exported", lambda model_dir: (None, None, MODEL_LABELS, 32))
    monkeypatch.setattr(ev, "_predict", fake_predict)
    return sizes


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A snapshot whose first test rows all have an unknown label: the first read batch writes nothing."""
    snap = make_snapshot(tmp_path / "snapshot", n_docs=400, seed=3)
    frame = pd.read_parquet(snap / "corpus.parquet")
    first_test = frame.index[frame["split"] == "test"][:8]
    frame.loc[first_test, "label"] = "travel"
    frame.to_parquet(snap / "corpus.parquet", index=False)
    return snap


def _run(snapshot: Path, out: Path) -> dict[str, Any]:
    return ev.evaluate(EvaluateConfig(batch_size=4), snapshot, out / "model", *(out / name for name in OUTPUTS))


def test_several_read_batches_give_the_same_files_as_one(
    snapshot: Path, tmp_path: Path, calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = _run(snapshot, tmp_path / "one")
    assert len(calls) == 1  # the whole (small) test split in one read batch

    calls.clear()
    monkeypatch.setattr(ev, "READ_BATCH_ROWS", 7)
    many = _run(snapshot, tmp_path / "many")
    assert len(calls) > 3 and max(calls) <= 7  # no more than one read batch of text is scored at a time

    for name in ("metrics.json", "confusion.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name
    one_rows = pd.read_parquet(tmp_path / "one" / "predictions.parquet")
    many_rows = pd.read_parquet(tmp_path / "many" / "predictions.parquet")
    pd.testing.assert_frame_equal(one_rows, many_rows, check_exact=True)
    one.pop("wall_seconds"), many.pop("wall_seconds")
    assert one == many

    # The rows are the test split's known-label rows, in snapshot order; the counts add up.
    frame = pd.read_parquet(snapshot / "corpus.parquet")
    test = frame[frame["split"] == "test"]
    known = test[test["label"].isin(MODEL_LABELS)]
    assert list(many_rows["doc_id"]) == list(known["doc_id"]) and list(many_rows["label"]) == list(known["label"])
    assert list(many_rows["predicted"]) == [MODEL_LABELS[int(np.argmax(_probs(t)))] for t in known["text"]]
    assert many_rows["prob_sports"].dtype == np.float32
    assert many["n_test"] == len(known) and many["n_ignored"] == len(test) - len(known) >= 8
    confusion = pd.read_csv(tmp_path / "many" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(known)
    assert not list((tmp_path / "many").glob(".*"))  # no temporary files left behind


def test_a_failure_midway_leaves_the_previous_files(
    snapshot: Path, tmp_path: Path, calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ev, "READ_BATCH_ROWS", 7)
    out = tmp_path / "eval"
    _run(snapshot, out)
    before = {name: (out / name).read_bytes() for name in OUTPUTS}

    scored = ev._predict

    def third_batch_fails(*args: Any, **kwargs: Any) -> tuple[np.ndarray, None]:
        # The first batch has only unknown labels: by the third, the second's rows have been appended.
        if len(calls) == 2:
            raise RuntimeError("killed on the third batch")
        return scored(*args, **kwargs)

    calls.clear()
    monkeypatch.setattr(ev, "_predict", third_batch_fails)
    with pytest.raises(RuntimeError, match="third batch"):
        _run(snapshot, out)
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert not list(out.glob(".*"))

    calls.clear()
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="third batch"):
        _run(snapshot, fresh)
    assert not list(fresh.glob("*"))  # nothing at all, not half a predictions file


def test_errors_stay_one_line_and_name_the_corpus(
    tmp_path: Path, calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ev, "READ_BATCH_ROWS", 7)
    snap = make_snapshot(tmp_path / "snapshot", n_docs=120, seed=1)
    corpus = snap / "corpus.parquet"
    frame = pd.read_parquet(corpus)

    frame.assign(label="travel").to_parquet(corpus, index=False)  # no test row with a label the model knows
    with pytest.raises(DoclifeError) as err:
        _run(snap, tmp_path / "a")
    assert str(err.value) == f"{corpus}: no rows for the test split with a label in {MODEL_LABELS}"
    assert not list((tmp_path / "a").glob("*"))

    frame.assign(split=frame["split"].replace("test", "validation")).to_parquet(corpus, index=False)
    calls.clear()
    with pytest.raises(DoclifeError) as err:
        _run(snap, tmp_path / "b")
    assert str(err.value) == f"{corpus}: no rows for the test split" and calls == []  # before any prediction


def test_majority_baseline_from_streamed_counts_matches_the_label_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = make_snapshot(tmp_path / "snapshot", n_docs=300, seed=4)
    frame = pd.read_parquet(snap / "corpus.parquet")
    train_labels = frame.loc[frame["split"] == "train", "label"].tolist()
    monkeypatch.setattr(ev, "READ_BATCH_ROWS", 7)
    counts = ev.count_labels(snap, "train")
    assert counts == Counter(train_labels)

    for labels in (MODEL_LABELS, ["travel", "food"], list(reversed(MODEL_LABELS))):
        target = np.arange(5) % len(labels)
        assert ev.majority_baseline(counts, target, labels) == ev.majority_baseline(train_labels, target, labels)
    target = np.array([0, 1, 2, 2, 1])
    # Ties go to the first listed label, from counts as from a list; an unknown-only train split is refused.
    assert ev.majority_baseline({"c": 1, "a": 1}, target, ["a", "b", "c"])["label"] == "a"
    with pytest.raises(DoclifeError, match="no row with a known label"):
        ev.majority_baseline({"travel": 5, "sports": 0}, target, ["sports"])
