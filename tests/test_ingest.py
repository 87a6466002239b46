"""Ingest: every format into the canonical table, stable ids and splits, one-line errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from data_checks.config import EngineConfig, IngestConfig
from data_checks.ingest import CANONICAL_COLUMNS, ingest, read_source
from data_checks.io import DoclifeError

ROWS = [
    {"body": "Great match, the striker scored twice", "topic": "sports", "uid": "a1", "part": "train"},
    {"body": 'He said "best noodles in town"\nand he was right', "topic": "food", "uid": "a2", "part": "test"},
    {"body": "NA", "topic": "travel", "uid": "a3", "part": "validation"},
    {"body": None, "topic": "null", "uid": "a4", "part": "train"},
    {"body": "Great match, the striker scored twice", "topic": "sports", "uid": "a5", "part": "dev"},
    {"body": "新手机的电池很耐用", "topic": None, "uid": "a6", "part": "train"},
]
CFG = IngestConfig(text_column="body", label_column="topic")


def _write(path: Path, rows: list[dict], fmt: str) -> Path:
    frame = pd.DataFrame(rows)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_each_format_round_trips(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path / f"raw.{fmt}", ROWS, fmt)
    frame = read_source(CFG, path)
    assert list(frame.columns) == list(CANONICAL_COLUMNS)
    assert [None if pd.isna(t) else t for t in frame["text"]] == [r["body"] for r in ROWS]
    # "NA" and "null" are text, not missing values; only a truly empty cell is missing.
    assert [None if pd.isna(v) else v for v in frame["label"]] == [r["topic"] for r in ROWS]
    assert frame["source_row"].tolist() == list(range(len(ROWS)))
    assert str(frame["source_row"].dtype) == "int64"
    assert frame["doc_id"].is_unique
    assert set(frame["split"]) <= {"train", "validation", "test"}


def test_format_can_be_forced_and_auto_knows_extensions(tmp_path: Path) -> None:
    path = _write(tmp_path / "raw.data", ROWS, "jsonl")
    frame = read_source(IngestConfig(format="jsonl", text_column="body", label_column="topic"), path)
    assert len(frame) == len(ROWS)
    ndjson = _write(tmp_path / "raw.ndjson", ROWS, "jsonl")
    assert len(read_source(CFG, ndjson)) == len(ROWS)


def test_configurable_id_split_and_no_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "raw.csv", ROWS, "csv")
    cfg = IngestConfig(text_column="body", label_column=None, id_column="uid", split_column="part")
    frame = read_source(cfg, path)
    assert frame["doc_id"].tolist() == [r["uid"] for r in ROWS]
    assert frame["split"].tolist() == ["train", "test", "validation", "train", "validation", "train"]
    assert frame["label"].isna().all()


def test_source_is_the_file_name_or_a_configured_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "reviews.csv", ROWS, "csv")
    assert set(read_source(CFG, path)["source"]) == {"reviews.csv"}
    by_part = read_source(IngestConfig(text_column="body", label_column="topic", source_column="part"), path)
    assert by_part["source"].tolist() == [r["part"] for r in ROWS]
    with pytest.raises(DoclifeError, match="reviews.csv: no source column 'site'"):
        read_source(IngestConfig(text_column="body", label_column="topic", source_column="site"), path)


def test_numeric_labels_become_strings(tmp_path: Path) -> None:
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}, {"text": "meh", "label": None}]
    csv_path = tmp_path / "n.csv"
    csv_path.write_text("text,label\ngood,1\nbad,0\nmeh,\n", encoding="utf-8")
    paths = [csv_path, _write(tmp_path / "n.jsonl", rows, "jsonl"), _write(tmp_path / "n.parquet", rows, "parquet")]
    for path in paths:
        frame = read_source(IngestConfig(), path)
        assert [None if pd.isna(v) else v for v in frame["label"]] == ["1", "0", None], path.name


def test_doc_ids_unique_for_repeats_and_null_texts(tmp_path: Path) -> None:
    rows = [{"text": "same", "label": "x"}] * 3 + [{"text": None, "label": "x"}] * 2
    frame = read_source(IngestConfig(), _write(tmp_path / "d.csv", rows, "csv"))
    ids = frame["doc_id"].tolist()
    assert len(set(ids)) == 5
    assert ids[1] == ids[0] + "~1" and ids[2] == ids[0] + "~2"
    assert all(len(i.split("~")[0]) == 16 for i in ids)


def test_split_is_stable_when_rows_are_appended_or_reordered(tmp_path: Path) -> None:
    texts = [f"document number {i} about food and travel" for i in range(300)]
    base = read_source(IngestConfig(), _write(tmp_path / "a.csv", [{"text": t, "label": "food"} for t in texts], "csv"))
    grown = [{"text": t, "label": "food"} for t in reversed(texts)] + [{"text": f"new {i}", "label": "x"} for i in range(50)]
    other = read_source(IngestConfig(), _write(tmp_path / "b.csv", grown, "csv"))
    before = dict(zip(base["doc_id"], base["split"], strict=True))
    after = dict(zip(other["doc_id"], other["split"], strict=True))
    assert all(after[k] == v for k, v in before.items())
    counts = base["split"].value_counts()
    assert 15 <= counts["test"] <= 45 and 15 <= counts["validation"] <= 45


def test_duplicates_share_a_split(tmp_path: Path) -> None:
    rows = [{"text": f"text {i % 40}" + (" " if i % 3 else "  "), "label": "a"} for i in range(200)]
    frame = read_source(IngestConfig(), _write(tmp_path / "dup.csv", rows, "csv"))
    key = frame["text"].str.split().str.join(" ")
    assert (frame.groupby(key)["split"].nunique() == 1).all()


def test_ingest_writes_parquet_and_leaves_source_unchanged(tmp_path: Path) -> None:
    path = _write(tmp_path / "raw.csv", ROWS, "csv")
    before = path.read_bytes()
    out = tmp_path / "out" / "ingested.parquet"
    report = ingest(CFG, path, out)
    assert path.read_bytes() == before
    assert report["rows"] == len(ROWS) and report["format"] == "csv" and report["source"] == str(path)
    assert sum(report["splits"].values()) == len(ROWS) and set(report["splits"]) == {"train", "validation", "test"}
    back = pd.read_parquet(out)
    assert list(back.columns) == list(CANONICAL_COLUMNS) and len(back) == len(ROWS)
    assert not list(out.parent.glob(".*.tmp"))


def test_bom_at_file_start_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\n\ufeffhello there,food\n".encode())
    frame = read_source(IngestConfig(), path)
    # The file's BOM is encoding metadata; one inside a value is content, removed (and reported) by cleaning.
    assert list(frame.columns[:2]) == ["doc_id", "text"] and frame["text"].tolist() == ["\ufeffhello there"]


def _error(cfg: IngestConfig, path: Path) -> str:
    with pytest.raises(DoclifeError) as info:
        read_source(cfg, path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _error(IngestConfig(), tmp_path / "nope.csv")


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "empty" in _error(IngestConfig(), empty)
    header = tmp_path / "header.csv"
    header.write_text("text,label\n", encoding="utf-8")
    assert "no rows" in _error(IngestConfig(), header)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n", encoding="utf-8")
    assert "empty" in _error(IngestConfig(), blank)


def test_undecodable_bytes_name_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé,food\n".encode("latin-1"))
    message = _error(IngestConfig(), path)
    assert "UTF-8" in message and "offset 14" in message


def test_missing_text_and_label_columns_list_the_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "cols.csv", [{"a": "x", "b": "y"}], "csv")
    message = _error(IngestConfig(), path)
    assert "'text'" in message and "a, b" in message
    message = _error(IngestConfig(text_column="a", label_column="category"), path)
    assert "label column 'category'" in message


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "corpus.xlsx"
    path.write_bytes(b"PK")
    assert "unsupported format" in _error(IngestConfig(), path)


def test_unparseable_files(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text('text,label\n"unclosed quote,food\n', encoding="utf-8")
    assert "cannot parse" in _error(IngestConfig(), csv_path)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\na,b\nc,d,e,f\n", encoding="utf-8")
    assert "cannot parse" in _error(IngestConfig(), ragged)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "ok", "label": "a"}\n{"text": broken\n', encoding="utf-8")
    assert "line 2" in _error(IngestConfig(), jsonl)
    parquet = tmp_path / "bad.parquet"
    parquet.write_bytes(b"not a parquet file at all")
    assert "Parquet" in _error(IngestConfig(), parquet)


def test_bad_split_and_id_columns(tmp_path: Path) -> None:
    rows = [{"text": "a b", "label": "x", "part": "holdout", "uid": "1"}, {"text": "c d", "label": "x", "part": "train", "uid": "1"}]
    path = _write(tmp_path / "s.csv", rows, "csv")
    assert "holdout" in _error(IngestConfig(split_column="part"), path)
    assert "duplicate" in _error(IngestConfig(id_column="uid"), path)


# ---------------------------------------------------------------------------------------------------------
# Batches: a stage holds engine.batch_rows rows at a time; the table it writes does not depend on that.


def _ingested(cfg: IngestConfig, source: Path, out: Path, batch_rows: int) -> pd.DataFrame:
    ingest(cfg, source, out, EngineConfig(batch_rows=batch_rows))
    # Nothing of the work (drafts, DuckDB's spill) is left beside the output.
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    return pd.read_parquet(out)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_batches_of_any_size_give_the_same_table(tmp_path: Path, fmt: str) -> None:
    texts = [f"review {i % 7}" for i in range(40)] + [None, None]  # repeats within and across batches
    folder = tmp_path / "in"
    folder.mkdir()
    for part in range(3):
        _write(folder / f"part-{part}.{fmt}", [{"text": t, "label": "a"} for t in texts[part::3]], fmt)
    whole = _ingested(IngestConfig(), folder, tmp_path / "whole" / "ingested.parquet", 100_000)
    batched = _ingested(IngestConfig(), folder, tmp_path / "batched" / "ingested.parquet", 4)
    pd.testing.assert_frame_equal(whole, batched)
    # The k-th repeat of a text, in source order across files and batches, gets "~k".
    base = whole["doc_id"].str.split("~").str[0]
    assert whole["doc_id"].is_unique and (whole.groupby(base).cumcount() == whole["doc_id"].str.split("~").str[1]
                                          .fillna("0").astype(int)).all()


def test_an_id_repeated_in_a_later_batch_names_both_rows(tmp_path: Path) -> None:
    rows = [{"id": f"x{i}", "text": f"t{i}", "label": "a"} for i in range(9)] + [{"id": "x2", "text": "late", "label": "a"}]
    path = _write(tmp_path / "ids.csv", rows, "csv")
    with pytest.raises(DoclifeError, match=r"ids.csv: id column 'id' has duplicate value 'x2' \(ids.csv row 2 and ids.csv row 9\)"):
        ingest(IngestConfig(id_column="id"), path, tmp_path / "out" / "ingested.parquet", EngineConfig(batch_rows=3))
    assert not (tmp_path / "out" / "ingested.parquet").exists()


def test_a_jsonl_key_first_seen_in_a_later_batch_is_a_column(tmp_path: Path) -> None:
    path = tmp_path / "late.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", **({"label": "b"} if i >= 5 else {})}) + "\n" for i in range(8)),
                    encoding="utf-8")
    frame = _ingested(IngestConfig(), path, tmp_path / "out" / "ingested.parquet", 2)
    assert frame["label"].fillna("-").tolist() == ["-"] * 5 + ["b"] * 3
    path.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(8)), encoding="utf-8")
    with pytest.raises(DoclifeError, match=r"late.jsonl: no label column 'label' \(columns: text\)"):
        ingest(IngestConfig(), path, tmp_path / "out2" / "ingested.parquet", EngineConfig(batch_rows=2))


def test_a_bad_byte_past_the_first_block_names_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    head = ("text,label\n" + "".join(f"文档 {i} 的内容,a\n" for i in range(120_000))).encode("utf-8")
    assert len(head) > 2 << 20  # the file is decoded a megabyte at a time
    path.write_bytes(head + b"caf\xe9,a\n")
    message = _error(IngestConfig(), path)
    assert f"byte 0xe9 at offset {len(head) + 3}" in message
