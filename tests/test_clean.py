"""Cleaning: each fix changes what it should and nothing else; duplicates point at the kept copy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_checks.clean import CleanConfig, clean, clean_frame
from data_checks.config import EngineConfig
from data_checks.io import DoclifeError, read_json

# (fix, raw text, cleaned text); a None fix: the text must come out unchanged and unreported.
FIXES = [
    ("bom", "\ufeffgreat phone", "great phone"),
    ("invisible", "gre\u200bat phone", "great phone"),
    ("control", "great\x07 phone", "great phone"),
    ("unicode", "ＡＢＣ１２３ phone", "ABC123 phone"),
    ("unicode", "好评！", "好评!"),
    ("whitespace", "  great   phone \r\n\n\n\nsecond line  ", "great phone\n\nsecond line"),
    (None, "great phone\n\nsecond line", "great phone\n\nsecond line"),
    (None, "naïve café, 中文也行", "naïve café, 中文也行"),
    (None, "cafÃ© au lait", "cafÃ© au lait"),  # garbled text keeps its evidence for the mojibake rule
]


def _frame(texts: list[str | None], labels: list[str | None] | None = None) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "text": pd.Series(texts, dtype=object),
                         "label": pd.Series(labels or ["a"] * n, dtype=object), "split": "train",
                         "source": "t.csv", "source_row": range(n)})


@pytest.mark.parametrize(("fix", "raw", "cleaned"), FIXES)
def test_each_fix(fix: str | None, raw: str, cleaned: str) -> None:
    out, report = clean_frame(_frame([raw]), CleanConfig())
    assert out.loc[0, "text"] == cleaned
    if fix is None:
        assert report.empty and out.loc[0, "fixes"] == ""
    else:
        assert fix in report["fix"].tolist() and fix in out.loc[0, "fixes"].split("; ")
        assert (report["source_row"] == 0).all() and (report["doc_id"] == "d0").all()


def test_fixes_can_be_switched_off() -> None:
    raw = "\ufeffＡＢＣ   phone"
    out, report = clean_frame(_frame([raw]), CleanConfig(unicode_form="none", strip_invisible=False,
                                                         normalise_whitespace=False))
    assert out.loc[0, "text"] == raw and report.empty


def test_exact_duplicates_point_at_the_first_copy_with_the_same_label() -> None:
    texts = ["Same words", "other", "same  WORDS", "same words", "clash", "Clash", None, None]
    labels = ["a", "a", "a", "a", "a", "b", "a", "a"]
    out, report = clean_frame(_frame(texts, labels), CleanConfig())
    assert out["duplicate_of"].fillna("-").tolist() == ["-", "-", "d0", "d0", "-", "-", "-", "-"]
    drops = report[report["fix"] == "duplicate_exact"]
    assert drops["source_row"].tolist() == [2, 3] and drops["detail"].str.contains("doc d0 \\(source row 0\\)").all()


def test_null_text_stays_null_and_input_is_not_modified() -> None:
    frame = _frame([None, "\ufeffx"])
    before = frame.copy()
    out, _ = clean_frame(frame, CleanConfig())
    assert out.loc[0, "text"] is None or pd.isna(out.loc[0, "text"])
    pd.testing.assert_frame_equal(frame, before)


def test_clean_writes_table_report_and_summary(tmp_path: Path) -> None:
    ingested = tmp_path / "ingested.parquet"
    _frame(["\ufeffa b", "a b", "fine"]).to_parquet(ingested)
    summary = clean(CleanConfig(), ingested, tmp_path / "c.parquet", tmp_path / "r.parquet", tmp_path / "s.json")
    assert summary == read_json(tmp_path / "s.json")
    assert summary["fixes"]["bom"] == 1 and summary["duplicates_dropped"] == 1 and summary["rows"] == 3
    cleaned = pd.read_parquet(tmp_path / "c.parquet")
    assert len(cleaned) == 3 and {"fixes", "duplicate_of"} <= set(cleaned.columns)
    with pytest.raises(DoclifeError, match="nope.parquet"):
        clean(CleanConfig(), tmp_path / "nope.parquet", tmp_path / "c.parquet", tmp_path / "r.parquet", tmp_path / "s.json")


def test_bad_unicode_form_is_a_one_line_error() -> None:
    with pytest.raises(DoclifeError, match="clean: unicode_form"):
        CleanConfig(unicode_form="NFX")


def test_batches_of_any_size_give_the_same_tables(tmp_path: Path) -> None:
    # Copies across batch boundaries, a conflicting pair, and copies in another split.
    texts = ["Same words", "other", "same  WORDS", "\ufeffclash", "Clash", "same words", None, "other "] * 3
    labels = ["a", "a", "a", "a", "b", "a", "a", "a"] * 3
    frame = _frame(texts, labels)
    frame.loc[16:, "split"] = "test"
    ingested = tmp_path / "ingested.parquet"
    frame.to_parquet(ingested)
    outputs = {}
    for rows in (100_000, 3):
        out = tmp_path / str(rows)
        summary = clean(CleanConfig(), ingested, out / "c.parquet", out / "r.parquet", out / "s.json",
                        EngineConfig(batch_rows=rows))
        outputs[rows] = (summary, pd.read_parquet(out / "c.parquet"), pd.read_parquet(out / "r.parquet"))
        assert sorted(p.name for p in out.iterdir()) == ["c.parquet", "r.parquet", "s.json"]
    (summary, cleaned, report), (summary_3, cleaned_3, report_3) = outputs[100_000], outputs[3]
    pd.testing.assert_frame_equal(cleaned, cleaned_3)
    pd.testing.assert_frame_equal(report, report_3)
    assert {k: v for k, v in summary.items() if k != "outputs"} == {k: v for k, v in summary_3.items() if k != "outputs"}
    assert summary["duplicates_dropped"] == 11 and summary["fixes"]["bom"] == 3
    # Later copies point at the first copy of their split; the conflicting pair stays unmarked.
    assert cleaned["duplicate_of"].fillna("-").tolist()[:8] == ["-", "-", "d0", "-", "-", "d0", "-", "d1"]
    assert cleaned.loc[16:, "duplicate_of"].fillna("-").tolist() == ["-", "-", "d16", "-", "-", "d16", "-", "d17"]
