"""Sources of any shape: a directory or a glob of CSV/TSV/JSONL/Parquet files, gzip- or zstd-compressed; each
row's lineage is (file, row in that file); a bad file among many is one line naming it."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from data_checks.config import IngestConfig
from data_checks.ingest import ingest, read_files, read_source
from data_checks.io import DoclifeError
from data_checks.sources import fingerprint, source_files
from flows.config import load_params, set_param

CFG = IngestConfig(text_column="text", label_column="label")


def rows(start: int, n: int) -> list[dict]:
    return [{"text": f"document number {i} about {'sports' if i % 2 else 'food'}", "label": "sports" if i % 2 else "food"}
            for i in range(start, start + n)]


def write(path: Path, records: list[dict]) -> Path:
    """`records` in the format and compression `path`'s suffixes name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(records)
    suffixes = path.suffixes
    compression = {".gz": "gzip", ".zst": "zstd"}.get(suffixes[-1])
    fmt = suffixes[-2] if compression else suffixes[-1]
    if fmt == ".parquet":
        frame.to_parquet(path, index=False)
        return path
    text = ("".join(json.dumps(r) + "\n" for r in records) if fmt == ".jsonl"
            else frame.to_csv(index=False, sep="\t" if fmt == ".tsv" else ","))
    with pa.output_stream(str(path), compression=compression) as out:
        out.write(text.encode("utf-8"))
    return path


def shard_dir(root: Path) -> tuple[Path, dict[str, list[dict]]]:
    """A directory of four shards in four formats, three compressed, one in a sub-directory, and a hidden file."""
    shards = {"2026-11/part-0.csv.gz": rows(0, 5), "2026-11/part-1.jsonl.zst": rows(5, 4),
              "2026-12/part-2.parquet": rows(9, 3), "part-3.tsv": rows(12, 6)}
    for name, records in shards.items():
        write(root / name, records)
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    return root, shards


def test_a_directory_reads_every_file_in_order_with_its_lineage(tmp_path: Path) -> None:
    source, shards = shard_dir(tmp_path / "corpus")
    frame, files = read_files(CFG, source)
    assert [f["file"] for f in files] == sorted(shards)  # the hidden file is not part of the corpus
    assert [(f["format"], f["compression"]) for f in files] == [
        ("csv", "gzip"), ("jsonl", "zstd"), ("parquet", None), ("tsv", None)]
    assert len(frame) == sum(map(len, shards.values())) and frame["doc_id"].is_unique
    assert frame["source_row"].tolist() == list(range(len(frame)))
    # Lineage: each row is row (source_row - first_source_row) of the file its `source` names.
    first = {f["file"]: f["first_source_row"] for f in files}
    for text, source_name, row in zip(frame["text"], frame["source"], frame["source_row"]):
        assert shards[source_name][row - first[source_name]]["text"] == text


def test_sharding_a_file_keeps_every_documents_id_split_and_row(tmp_path: Path) -> None:
    records = rows(0, 40) + [{"text": None, "label": "food"}, rows(3, 1)[0]]  # a missing text and a duplicate
    whole = read_source(CFG, write(tmp_path / "whole.csv", records))
    for i, part in enumerate((records[:15], records[15:30], records[30:])):
        write(tmp_path / "shards" / f"part-{i}.jsonl.gz", part)
    sharded = read_source(CFG, tmp_path / "shards")
    columns = ["doc_id", "text", "label", "split", "source_row"]
    pd.testing.assert_frame_equal(whole[columns], sharded[columns])


def test_a_glob_reads_only_its_matches_named_from_its_fixed_prefix(tmp_path: Path) -> None:
    source, _ = shard_dir(tmp_path / "corpus")
    files = read_files(CFG, str(source / "2026-*" / "*.*"))[1]
    assert [f["file"] for f in files] == ["2026-11/part-0.csv.gz", "2026-11/part-1.jsonl.zst", "2026-12/part-2.parquet"]
    with pytest.raises(DoclifeError, match="no file matches"):
        source_files(str(source / "*.xml"))


def test_one_bad_file_among_many_is_one_line_naming_it(tmp_path: Path) -> None:
    source, _ = shard_dir(tmp_path / "corpus")
    cases = {
        # A gzip archive cut short in transfer.
        "2026-12/part-9.csv.gz": lambda p: write(p, rows(0, 500)).write_bytes(p.read_bytes()[:-8]),
        "part-9.jsonl.zst": lambda p: write(p, rows(0, 500)).write_bytes(p.read_bytes()[:-8]),
        "part-9.jsonl": lambda p: p.write_text('{"text": "fine", "label": "food"}\n{"text": broken\n'),
        "part-9.csv": lambda p: p.write_bytes("text,label\ncaf\xe9,food\n".encode("latin-1")),
        "notes.txt": lambda p: p.write_text("a README among the shards"),
        "part-9.parquet.gz": lambda p: p.write_bytes(gzip.compress(b"PAR1")),
        "part-9.tsv": lambda p: p.write_text("body\tlabel\nhello\tfood\n"),
    }
    expected = {"part-9.csv.gz": "cannot decompress as gzip", "part-9.jsonl.zst": "cannot decompress as zstd",
                "part-9.jsonl": "line 2 is not valid JSON", "part-9.csv": "not valid UTF-8",
                "notes.txt": "unsupported format '.txt'", "part-9.parquet.gz": "compressed Parquet",
                "part-9.tsv": "no text column 'text'"}
    for name, make in cases.items():
        bad = source / name
        bad.parent.mkdir(parents=True, exist_ok=True)
        make(bad)
        with pytest.raises(DoclifeError) as err:
            ingest(CFG, source, tmp_path / "ingested.parquet")
        message = str(err.value)
        assert "\n" not in message and message.startswith(str(bad)) and expected[Path(name).name] in message, message
        assert not (tmp_path / "ingested.parquet").exists()
        bad.unlink()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".gitkeep").touch()
    with pytest.raises(DoclifeError, match="a directory with no corpus files"):
        source_files(tmp_path / "empty")


def test_an_id_in_two_files_names_both(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.csv", [{"id": "x1", "text": "one", "label": "food"}, {"id": "x2", "text": "two", "label": "food"}])
    write(tmp_path / "d" / "b.csv", [{"id": "x3", "text": "three", "label": "food"}, {"id": "x1", "text": "four", "label": "food"}])
    with pytest.raises(DoclifeError, match=r"duplicate value 'x1' \(a.csv row 0 and b.csv row 1\)"):
        read_source(IngestConfig(id_column="id"), tmp_path / "d")


def test_the_fingerprint_sees_a_new_or_rewritten_file_and_nothing_else(tmp_path: Path) -> None:
    source, _ = shard_dir(tmp_path / "corpus")
    before = fingerprint(source)
    assert fingerprint(source) == before
    (source / ".part-4.csv.tmp").write_text("a download under way")  # hidden: not yet part of the corpus
    assert fingerprint(source) == before
    write(source / "2026-12" / "part-4.csv.gz", rows(20, 3))  # a new week's shard landed
    landed = fingerprint(source)
    assert landed != before
    stat = (source / "part-3.tsv").stat()
    os.utime(source / "part-3.tsv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint(source) != landed


def test_a_workspace_source_must_be_a_file_or_a_directory_dvc_can_track(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  source: data/raw/sample.csv\n", encoding="utf-8")
    assert load_params(params).ingest.source == "data/raw/sample.csv"
    set_param(params, "ingest.source", "shards/*.jsonl.gz")
    with pytest.raises(DoclifeError, match=r"params.yaml: ingest.source shards/\*.jsonl.gz: a glob cannot be"):
        load_params(params)


def test_the_cli_refuses_a_glob_as_a_workspace_source_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from flows.cli import main

    source, _ = shard_dir(tmp_path / "corpus")
    pattern = str(source / "2026-11" / "*.gz")
    assert main(["init", str(tmp_path / "ws"), "--source", pattern, "--text-column", "text"]) == 2
    assert "a glob cannot be a workspace's ingest.source" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()

    (tmp_path / "w").mkdir()
    params = tmp_path / "w" / "params.yaml"
    params.write_text("ingest:\n  source: corpus.csv\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "w")
    assert main(["run", "--source", pattern]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{pattern}: a glob cannot be" in err, err
    assert params.read_text(encoding="utf-8") == "ingest:\n  source: corpus.csv\n"
