"""bench.transfer runs end to end (`--quick`, one seed) on two small generated review corpora."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import bench.common
from bench import transfer
from lightning_modules.synthetic import make_snapshot


def reviews(path: Path, n_docs: int, seed: int) -> Path:
    """A label/review CSV with the benchmark's labels 0 and 1 (two generated topics)."""
    frame = pd.read_parquet(make_snapshot(path.with_suffix(""), n_docs=n_docs, seed=seed, labels=["sports", "food"])
                            / "corpus.parquet")
    pd.DataFrame({"label": (frame["label"] == "food").astype(int), "review": frame["text"]}).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_quick_transfer_benchmark_compares_every_start_and_carries_the_champion(tmp_path, monkeypatch):
    source, target = reviews(tmp_path / "source.csv", 600, 1), reviews(tmp_path / "target.csv", 500, 2)
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sys, "argv", ["transfer", "--quick", "--seeds", "1", "--source", str(source),
                                      "--target", str(target), "--name", "t"])
    transfer.main()
    result = json.loads((tmp_path / "results" / "t.json").read_text())
    assert set(result["summary"]) == {"random_init", "checkpoint_direct", "checkpoint_continued",
                                      "tfidf_lr_finetune_subset", "tfidf_lr_full_train"}
    assert result["checkpoint_direct"]["start"]["base_checkpoint"]["origin"] == "source"
    assert result["checkpoint_continued"]["start"]["steps"] == transfer.QUICK["continue_steps"]
    week1, week2 = result["weekly"]
    assert week1["registered"] == "v0001" and "from_champion" not in week1
    assert week2["from_champion"]["start"]["base_checkpoint"]["origin"] == "champion v0001"
    assert week2["registered"] == "v0002" and "gain_from_champion" in week2
