"""engine.reuse: a re-run after a new file landed reads back what the last run computed for the old files and
batches, and writes exactly what a run without the store writes."""

from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path

import pandas as pd
from conftest import data_stages, sharded_corpus

from data_checks.config import EngineConfig, SampleConfig
from data_checks.engines import map_batches
from data_checks.reuse import Store, key_of
from data_checks.sample_corpus import generate_sample_corpus

BATCH_ROWS = 400


def _files(store: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}


def test_a_rerun_after_a_new_file_reuses_the_old_ones_and_writes_what_a_full_run_writes(tmp_path: Path) -> None:
    source = sharded_corpus(tmp_path / "shards")
    store = tmp_path / "reuse"
    engine = EngineConfig(batch_rows=BATCH_ROWS, reuse=str(store))
    data_stages(source, tmp_path / "week-1", engine)
    before = _files(store)
    old = pd.read_parquet(tmp_path / "week-1/ingested.parquet")

    # A new file lands (it sorts after the others): new documents, and near copies of documents of the first file.
    new = generate_sample_corpus(SampleConfig(n_docs=120, seed=99, defects_per_kind=0))
    copied = old[old["source"] == "part-0.csv.gz"].dropna(subset=["text"]).iloc[100:105]
    new = pd.concat([new, pd.DataFrame({"text": copied["text"] + "!", "label": copied["label"]})])
    with gzip.open(source / "part-9.csv.gz", "wt", encoding="utf-8") as f:
        new.to_csv(f, index=False)
    week2 = data_stages(source, tmp_path / "week-2", engine)
    full = data_stages(source, tmp_path / "full", EngineConfig(batch_rows=BATCH_ROWS))

    assert week2["manifest"] == full["manifest"]  # the same snapshot hash
    for name in ("cleaned", "fixes", "validated", "quarantine", "findings"):
        pd.testing.assert_frame_equal(week2[name], full[name], obj=name)
    assert (tmp_path / "week-2/ingested.parquet").read_bytes() == (tmp_path / "full/ingested.parquet").read_bytes()

    # The old files and the batches that hold only their rows were read back, not computed again.
    after = _files(store)
    untouched = {p.parent.name for p, t in before.items() if after.get(p) == t}
    kinds = {p.parent.name for p in before}
    assert untouched == kinds, (kinds, untouched)
    assert sum(p.parent.name == "ingest" and after.get(p) == t for p, t in before.items()) == 3  # the three old files
    assert len(after) > len(before)  # the new file and the batches holding its rows
    # The new file's near copies were checked against the old rows they copy: near duplicates, or leaks where
    # the copy landed in another split.
    findings = week2["findings"]
    pointing = findings[findings["rule"].isin(["near_duplicate", "split_leakage"])
                        & findings["source_row"].isin(range(len(old), len(old) + len(new)))]
    assert {int(d.split("source row ")[1].split()[0]) for d in pointing["detail"]} == set(copied["source_row"])


CALLS: list[int] = []  # the rows of each batch _tagged computed


def _tagged(batch: pd.DataFrame, tag: str) -> pd.Series:
    CALLS.append(len(batch))
    return batch["x"].astype(str) + tag


def test_a_kept_result_is_reused_only_for_the_same_rows_positions_and_settings(tmp_path: Path) -> None:
    engine = EngineConfig(batch_rows=2, reuse=str(tmp_path / "reuse"))
    frame = pd.DataFrame({"x": [1, 2, 3, 4, 5]})
    calls = CALLS
    calls.clear()

    def run(tag: str, rows: pd.DataFrame) -> list[str]:
        out = map_batches(partial(_tagged, tag=tag), rows, engine, "test", reuse=True)
        return [v for part in out for v in part]

    assert run("a", frame) == ["1a", "2a", "3a", "4a", "5a"] and len(calls) == 3
    assert run("a", frame) == ["1a", "2a", "3a", "4a", "5a"] and len(calls) == 3  # all three batches kept
    assert run("b", frame) == ["1b", "2b", "3b", "4b", "5b"] and len(calls) == 6  # another setting
    # One value changed: only its batch is computed again; rows moved to other positions are a new batch too.
    changed = frame.assign(x=[1, 2, 3, 40, 5])
    assert run("b", changed) == ["1b", "2b", "3b", "40b", "5b"] and len(calls) == 7
    assert run("b", changed.iloc[[1, 0, 2, 3, 4]]) == ["2b", "1b", "3b", "40b", "5b"] and len(calls) == 8
    # Each pass keeps only what it used: the other settings' results and the changed batches are gone.
    assert len(list((tmp_path / "reuse").rglob("*.pkl"))) == 3


def test_a_damaged_kept_result_is_computed_again(tmp_path: Path) -> None:
    store = Store(tmp_path, "kind")
    key = key_of("settings", pd.DataFrame({"x": [1]}))
    store.put(key, ("value",))
    assert store.get(key) == ("value",)
    store.path(key).write_bytes(b"\x80\x05truncated")
    assert store.get(key) is None
