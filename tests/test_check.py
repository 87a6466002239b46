"""`doclife check`: any corpus file validated outside the pipeline, one report row per finding."""

from __future__ import annotations

import json
import random

import pandas as pd

from data_checks.io import read_json
from flows.cli import main

# Distinct, unrelated reviews whose words say their label (numbered copies of one sentence would be near
# duplicates, and randomly labelled text would be label noise).
_WORDS = {"food": "tasty fresh spicy sweet salty crisp bitter sour noodles soup bread rice".split(),
          "travel": "hotel beach flight train museum island harbour guide ticket trail lake city".split()}
_RNG = random.Random(0)
CLEAN = [" ".join(_RNG.choices(_WORDS[("food", "travel")[i % 2]], k=9)) + f" {i}" for i in range(300)]


def write_corpus(path, extra: list[dict]) -> None:
    rows = [{"review": text, "cat": ("food", "travel")[i % 2]} for i, text in enumerate(CLEAN)] + extra
    pd.DataFrame(rows).to_csv(path, index=False)


def test_check_reports_each_finding_with_its_source_row(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the rules' default thresholds apply
    source = tmp_path / "reviews.csv"
    write_corpus(source, [
        {"review": None, "cat": "food"},                                # row 300: missing text
        {"review": "<div>great&nbsp;food</div>", "cat": "food"},        # row 301: HTML residue
        {"review": "same words here", "cat": "food"},                   # rows 302, 303: conflicting labels
        {"review": "same words here", "cat": "travel"},
        {"review": "fine trip", "cat": "misc"},                         # row 304: not a declared label
    ])
    before = source.read_bytes()
    code = main(["check", str(source), "--text-column", "review", "--label-column", "cat",
                 "--labels", "food,travel", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr()
    report = pd.read_parquet(tmp_path / "out/report.parquet")
    assert list(report.columns) == ["source_row", "rule", "severity", "action", "detail"]
    found = set(zip(report["source_row"], report["rule"]))
    assert found == {(300, "text_missing"), (301, "html_residue"), (302, "duplicate_conflicting_label"),
                     (303, "duplicate_conflicting_label"), (304, "label_unknown")}
    assert set(report["action"]) == {"quarantine"}
    summary = read_json(tmp_path / "out/summary.json")
    assert (summary["rows_in"], summary["quarantined"], summary["findings"]) == (305, 5, 5)
    assert (tmp_path / "out/data_docs/index.html").is_file()
    assert source.read_bytes() == before
    assert json.loads(capsys.readouterr().out)["success"] is True


def test_check_exits_non_zero_when_a_fail_rule_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "reviews.csv"
    write_corpus(source, [])
    # A declared label with no rows at all fails the table rule `label_set`.
    code = main(["check", str(source), "--text-column", "review", "--label-column", "cat",
                 "--labels", "food,travel,books", "--out", str(tmp_path / "out")])
    assert code == 1
    report = pd.read_parquet(tmp_path / "out/report.parquet")
    failed = report[report["severity"] == "fail"]
    # No "books" row: the label set and the class balance both fail.
    assert failed["rule"].tolist() == ["label_balance", "label_set"] and failed["source_row"].isna().all()
    assert "label_set" in " ".join(json.loads(capsys.readouterr().out)["failures"])


def test_check_reads_a_directory_of_compressed_shards_and_stops_on_a_corrupt_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    whole = tmp_path / "reviews.csv"
    write_corpus(whole, [{"review": None, "cat": "food"}, {"review": "<div>great&nbsp;food</div>", "cat": "food"}])
    frame = pd.read_csv(whole)
    shards = tmp_path / "shards"
    shards.mkdir()
    frame.iloc[:150].to_csv(shards / "part-0.csv.gz", index=False)
    frame.iloc[150:].to_json(shards / "part-1.jsonl.gz", orient="records", lines=True)
    args = ["--text-column", "review", "--label-column", "cat", "--labels", "food,travel"]
    assert main(["check", str(shards), *args, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr()
    report = pd.read_parquet(tmp_path / "out/report.parquet")
    # The same findings on the same rows as the one file: a directory's rows are numbered through its files.
    assert set(zip(report["source_row"], report["rule"])) == {(300, "text_missing"), (301, "html_residue")}
    files = read_json(tmp_path / "out/summary.json")["files"]
    assert [(f["file"], f["rows"], f["first_source_row"]) for f in files] == [("part-0.csv.gz", 150, 0),
                                                                             ("part-1.jsonl.gz", 152, 150)]
    capsys.readouterr()

    (shards / "part-2.csv.gz").write_bytes((shards / "part-0.csv.gz").read_bytes()[:200])
    assert main(["check", str(shards), *args, "--out", str(tmp_path / "out2")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{shards / 'part-2.csv.gz'}: cannot decompress as gzip" in error, error
    assert not (tmp_path / "out2").exists()
