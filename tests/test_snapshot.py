"""Snapshots: content-addressed, deterministic, swapped in whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_checks import snapshot as snap
from data_checks.io import DoclifeError, read_json, write_json
from data_checks.config import EngineConfig, SnapshotConfig
from data_checks.snapshot import content_hash, load_split, read_manifest, shard_of, snapshot


def _validated(n: int = 30) -> pd.DataFrame:
    splits = ["train"] * 6 + ["validation", "test"] * 2
    return pd.DataFrame(
        {
            "doc_id": [f"{i * 7919 % 1000:04d}" for i in range(n)],
            "text": [f"text number {i}" for i in range(n)],
            "label": [["food", "travel", "sports"][i % 3] for i in range(n)],
            "split": [splits[i % len(splits)] for i in range(n)],
            "source": ["sample.csv"] * n,
            "source_row": pd.Series(range(n), dtype="int64"),
        }
    )


def _inputs(root: Path, frame: pd.DataFrame, **summary: object) -> tuple[Path, Path]:
    validated, summary_path = root / "validated.parquet", root / "summary.json"
    frame.to_parquet(validated, index=False)
    write_json(summary_path, {"success": True, "rows_in": len(frame) + 5, "validated": len(frame), "quarantined": 5, **summary})
    return validated, summary_path


def test_hash_ignores_row_order_and_dtypes_but_not_content() -> None:
    frame = _validated()
    digest = content_hash(frame)
    assert content_hash(frame.sample(frac=1.0, random_state=0)) == digest
    assert content_hash(frame.astype({"text": object, "label": "string"})) == digest
    assert content_hash(frame.drop(columns="source_row")) == digest
    changed = frame.copy()
    changed.loc[3, "text"] = "text number 3!"
    assert content_hash(changed) != digest
    relabelled = frame.copy()
    relabelled.loc[0, "label"] = "sports" if frame.loc[0, "label"] != "sports" else "food"
    assert content_hash(relabelled) != digest
    moved = frame.copy()
    moved.loc[0, "split"] = "test" if frame.loc[0, "split"] != "test" else "train"
    assert content_hash(moved) != digest


def test_manifest_and_sorted_corpus(tmp_path: Path) -> None:
    frame = _validated()
    manifest = snapshot(*_inputs(tmp_path, frame), tmp_path / "snap")
    digest = content_hash(frame)
    assert manifest == {
        "snapshot": f"snap-{digest[:12]}",
        "content_sha256": digest,
        "rows": 30,
        "splits": {s: int((frame["split"] == s).sum()) for s in ("train", "validation", "test")},
        "labels": {"food": 10, "sports": 10, "travel": 10},
        "rows_in": 35,
        "quarantined": 5,
        "shards": {"count": 64, "written": len(set(shard_of(frame["doc_id"], 64)))},
    }
    assert read_manifest(tmp_path / "snap") == manifest
    corpus = pd.read_parquet(tmp_path / "snap" / "corpus.parquet")
    assert sorted(corpus["doc_id"]) == sorted(frame["doc_id"])
    assert list(corpus.columns) == ["doc_id", "text", "label", "split", "source", "source_row"]
    for part in sorted((tmp_path / "snap" / "corpus.parquet").iterdir()):
        rows = pd.read_parquet(part)
        # Each shard holds the documents its name says, in doc_id order.
        assert (shard_of(rows["doc_id"], 64) == int(part.stem.removeprefix("part-"))).all()
        assert rows["doc_id"].tolist() == sorted(rows["doc_id"])
    train = load_split(tmp_path / "snap", "train")
    assert len(train) == manifest["splits"]["train"] and set(train["split"]) == {"train"}
    with pytest.raises(DoclifeError, match="unknown split"):
        load_split(tmp_path / "snap", "holdout")


def test_output_is_deterministic(tmp_path: Path) -> None:
    frame = _validated()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = snapshot(*_inputs(tmp_path / "a", frame), tmp_path / "a" / "snap")
    # Another row order, read in batches of 7 rows: the same bytes.
    second = snapshot(*_inputs(tmp_path / "b", frame.iloc[::-1]), tmp_path / "b" / "snap",
                      engine=EngineConfig(batch_rows=7))
    assert first == second
    assert _files(tmp_path / "a" / "snap") == _files(tmp_path / "b" / "snap")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_changed_document_rewrites_only_its_own_shard(tmp_path: Path) -> None:
    frame = _validated(200)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = snapshot(*_inputs(tmp_path / "a", frame), tmp_path / "a" / "snap", cfg=SnapshotConfig(shards=8))
    changed = frame.copy()
    changed.loc[17, "text"] = "an edited text"
    added = pd.DataFrame([{**frame.iloc[0].to_dict(), "doc_id": "new-doc", "text": "a new text", "source_row": 200}])
    after = snapshot(*_inputs(tmp_path / "b", pd.concat([changed, added], ignore_index=True)), tmp_path / "b" / "snap",
                     cfg=SnapshotConfig(shards=8))
    old, new = _files(tmp_path / "a" / "snap"), _files(tmp_path / "b" / "snap")
    touched = {f"corpus.parquet/part-{k:04d}.parquet" for k in shard_of(pd.Series([frame.loc[17, "doc_id"], "new-doc"]), 8)}
    shards = {name for name in old if name.startswith("corpus.parquet/")}
    assert len(shards) == 8 and 1 <= len(touched) <= 2
    assert {name for name in shards if old[name] != new[name]} == touched
    assert before["content_sha256"] != after["content_sha256"] and after["rows"] == 201


def test_failure_midway_keeps_the_old_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "snap"
    old = snapshot(*_inputs(tmp_path, _validated(30)), out)
    old_bytes = _files(out)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(snap, "write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        snapshot(*_inputs(tmp_path, _validated(20)), out)
    assert _files(out) == old_bytes
    assert read_manifest(out) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap", "summary.json", "validated.parquet"]


def test_refuses_failed_or_mismatched_validation(tmp_path: Path) -> None:
    with pytest.raises(DoclifeError, match="summary.json: validation did not succeed"):
        snapshot(*_inputs(tmp_path, _validated(), success=False), tmp_path / "snap")
    with pytest.raises(DoclifeError, match="summary.json: says 99 validated rows"):
        snapshot(*_inputs(tmp_path, _validated(), validated=99), tmp_path / "snap")
    with pytest.raises(DoclifeError, match="missing.parquet: file not found"):
        snapshot(tmp_path / "missing.parquet", tmp_path / "summary.json", tmp_path / "snap")
    assert not (tmp_path / "snap").exists()
    with pytest.raises(DoclifeError, match="manifest"):
        read_manifest(tmp_path / "snap")
    assert read_json(tmp_path / "summary.json")["validated"] == 99
