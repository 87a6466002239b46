"""Shared pieces of the training benchmarks: the real corpus as a doclife snapshot, and a clean result file."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pandas as pd

from data_checks.io import write_json, write_parquet

RESULTS = Path(__file__).resolve().parent / "results"
# The reference corpora live beside the checkout, in ../shared/datasets; they are read there, never copied.
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CORPUS = Path(os.environ.get("DOCLIFE_BENCH_CORPUS", DATASETS / "online_shopping_10_cats.csv"))


def require_corpus(path: Path = CORPUS, setting: str = "DOCLIFE_BENCH_CORPUS") -> pd.DataFrame:
    """A review corpus (columns label, review; by default online_shopping_10_cats.csv) with nulls and duplicate
    reviews dropped (its README's reference protocol).

    Exits with a clear message (status 0: a skip, not a failure) when the file is not on this machine.
    """
    if not Path(path).is_file():
        print(f"SKIP: {path} not found (set {setting} to the {Path(path).name} path)")
        sys.exit(0)
    frame = pd.read_csv(path)
    frame = frame.dropna(subset=["review"])
    frame["review"] = frame["review"].astype(str)
    frame = frame.drop_duplicates(subset=["review"]).reset_index(drop=True)
    return frame


def sentiment_split(frame: pd.DataFrame, validation_of_train: float = 0.1) -> pd.DataFrame:
    """80/20 stratified train/test split (random_state=0), then a stratified validation slice of train.

    Returns the rows with a `split` column (train, validation, test); the test rows are exactly the
    reference's 20%.
    """
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=0.2, stratify=frame["label"], random_state=0)
    fit, validation = train_test_split(train, test_size=validation_of_train, stratify=train["label"], random_state=0)
    parts = [fit.assign(split="train"), validation.assign(split="validation"), test.assign(split="test")]
    return pd.concat(parts).reset_index(drop=True)


def write_snapshot(rows: pd.DataFrame, out_dir: Path) -> Path:
    """Write rows (review, label, split) as a doclife snapshot (corpus.parquet + manifest.json) in out_dir."""
    frame = pd.DataFrame(
        {
            "doc_id": [hashlib.sha256(t.encode()).hexdigest()[:16] for t in rows["review"]],
            "text": rows["review"].tolist(),
            "label": rows["label"].astype(str).tolist(),
            "split": rows["split"].tolist(),
            "source_row": range(len(rows)),
        }
    )
    content = hashlib.sha256(frame.to_json(orient="records", force_ascii=False).encode()).hexdigest()
    out_dir = Path(out_dir)
    write_parquet(out_dir / "corpus.parquet", frame)
    write_json(out_dir / "manifest.json", {"snapshot": f"snap-{content[:12]}", "content_sha256": content, "n_rows": len(frame)})
    return out_dir


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)  # kB on Linux


def save_result(name: str, result: dict) -> Path:
    """Write bench/results/NAME.json and echo it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written: {path}")
    return path
