"""Validation: every rule catches its crafted example and passes its twin; rows are accounted for;
table-level failures stop the run after writing everything; Data Docs are built."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_checks.clean import CleanConfig, clean
from data_checks.config import EngineConfig, IngestConfig, SampleConfig, ValidateConfig
from data_checks.core_rules import looks_like_mojibake
from data_checks.ingest import CANONICAL_COLUMNS, hash_splits, ingest
from data_checks.io import DoclifeError, read_json
from data_checks.sample_corpus import DEFECT_RULES, TOPICS, generate_sample_corpus, write_sample_corpus
from data_checks.snapshot import PROFILE_FILE, snapshot
from data_checks.validate import ValidationFailed, clean_and_validate, validate, validate_frame

CFG = ValidateConfig(labels=list(TOPICS), min_chars=2, max_chars=60, min_rows_per_split=1, min_label_share=0.0,
                     max_label_share=1.0)

# (rule, text, label, caught?) - one example that must be caught and one that must pass per core rule.
# Rows go through validate_frame without cleaning, so the Unicode warnings see the raw text.
EXAMPLES: list[tuple[str, str | None, str | None, bool]] = [
    ("text_missing", None, "food", True),
    ("text_missing", "NA", "food", False),
    ("text_blank", " \t\n ", "food", True),
    ("text_blank", " ok ", "food", False),
    ("text_too_short", "  x  ", "food", True),
    ("text_too_short", "  xy  ", "food", False),
    ("text_too_long", "the quick brown fox jumps over a lazy dog by the old river bank", "food", True),  # 63 characters
    ("text_too_long", "  pack my box with five dozen liquor jugs, then sing a song!  ", "food", False),  # 58 after stripping
    ("label_missing", "a review without a label", None, True),
    ("label_missing", "a review with a label", "travel", False),
    ("label_unknown", "a review about misc things", "misc", True),
    ("label_unknown", "a review about Food in capitals", "Food", True),
    ("label_unknown", "a review about food things", "food", False),
    ("mojibake", "cafÃ© au lait was fine", "food", True),
    ("mojibake", "é”™è¯¯ in the app", "technology", True),
    ("mojibake", "閿欒", "technology", True),
    ("mojibake", "我喜欢这个".encode().decode("gbk", errors="replace"), "technology", True),
    ("mojibake", "café au lait was fine, naïve", "food", False),
    ("mojibake", "错误的应用，繁體中文也可以", "technology", False),
    ("mojibake", "好好学习天天向上", "technology", False),
    ("fullwidth_alnum", "ＡＢＣ phone", "technology", True),
    ("fullwidth_alnum", "ABC phone, 好评！", "technology", False),
    ("invisible_chars", "zero\u200bwidth inside", "technology", True),
    ("invisible_chars", "nothing hidden inside", "technology", False),
]
# Uncleaned Chinese punctuation (，！) is not NFKC either: that warning has its own test below.
EXAMPLE_CFG = ValidateConfig(**{**CFG.__dict__, "rules": {"unicode_not_normalised": {"severity": "off"}}})


def _clean_rows(n: int) -> list[dict]:
    return [{"text": f"clean review number {i} of {TOPICS[i % 4]}", "label": TOPICS[i % 4]} for i in range(n)]


def _canonical(rows: list[dict]) -> pd.DataFrame:
    """An ingested-style table built in memory (the ingest stage has its own tests)."""
    frame = pd.DataFrame(rows)
    frame["text"] = frame["text"].astype(object)
    source_row = pd.Series(range(len(frame)), dtype="int64")
    return pd.DataFrame(
        {
            "doc_id": [f"d{i:05d}" for i in range(len(frame))],
            "text": frame["text"],
            "label": frame["label"].astype(object),
            "split": hash_splits(frame["text"], source_row, 0.1, 0.1),
            "source": "crafted.csv",
            "source_row": source_row,
        }
    )


@pytest.fixture(scope="module")
def crafted() -> tuple[pd.DataFrame, dict[int, set[str]]]:
    rows = _clean_rows(200) + [{"text": t, "label": y} for _, t, y, _ in EXAMPLES]
    report = validate_frame(EXAMPLE_CFG, _canonical(rows))
    rules: dict[int, set[str]] = {}
    for row, rule in zip(report.findings["source_row"].dropna().astype(int), report.findings["rule"].loc[report.findings["source_row"].notna()]):
        rules.setdefault(row, set()).add(rule)
    expected = pd.DataFrame(EXAMPLES, columns=["rule", "text", "label", "caught"])
    return expected, rules


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_one_example_per_rule(crafted: tuple[pd.DataFrame, dict[int, set[str]]], index: int) -> None:
    expected, rules = crafted
    row = expected.iloc[index]
    got = rules.get(200 + index, set())
    if row["caught"]:
        assert got == {row["rule"]}, f"{row['text']!r} should break {row['rule']}, got {got}"
    else:
        assert got == set(), f"{row['text']!r} should pass every rule, got {got}"


def test_clean_rows_pass_every_rule(crafted: tuple[pd.DataFrame, dict[int, set[str]]]) -> None:
    _, rules = crafted
    assert not [r for r in rules if r < 200]


def test_invisible_only_text_is_told_apart_from_blank_text() -> None:
    from data_checks.clean import CleanConfig

    frame = _canonical(_clean_rows(40) + [{"text": "\u200b\ufeff", "label": "food"}, {"text": "   ", "label": "food"}])
    report, _ = clean_and_validate(CFG, CleanConfig(), frame)
    reasons = report.quarantine.set_index("source_row")["reasons"]
    assert reasons[40] == "text_invisible_only" and reasons[41] == "text_blank"


def test_warnings_are_findings_not_quarantine() -> None:
    frame = _canonical(_clean_rows(40) + [{"text": "ＡＢＣ phone", "label": "food"}])
    report = validate_frame(CFG, frame)
    assert report.quarantine.empty and len(report.validated) == 41
    warned = report.findings[report.findings["source_row"] == 40]
    assert set(warned["rule"]) == {"fullwidth_alnum", "unicode_not_normalised"} and set(warned["action"]) == {"warn"}


def test_severity_and_bounds_come_from_params() -> None:
    frame = _canonical(_clean_rows(40) + [{"text": "ＡＢＣ phone", "label": "food"}, {"text": "the quick brown fox jumps over a lazy dog by the old river bank", "label": "food"}])
    cfg = ValidateConfig(**{**CFG.__dict__, "rules": {"fullwidth_alnum": {"severity": "quarantine", "max_value": 2},
                                                       "text_too_long": {"severity": "off"}}})
    report = validate_frame(cfg, frame)
    assert "text_too_long" not in report.row_rules
    assert report.quarantine["source_row"].tolist() == [40]  # 3 full-width letters > 2
    with pytest.raises(DoclifeError, match="validate.rules: unknown rule"):
        validate_frame(ValidateConfig(**{**CFG.__dict__, "rules": {"no_such_rule": {"severity": "warn"}}}), frame)
    with pytest.raises(DoclifeError, match="severity must be one of"):
        validate_frame(ValidateConfig(**{**CFG.__dict__, "rules": {"mojibake": {"severity": "loud"}}}), frame)


def test_a_fail_severity_row_rule_fails_the_run() -> None:
    frame = _canonical(_clean_rows(40) + [{"text": "cafÃ© au lait", "label": "food"}])
    report = validate_frame(ValidateConfig(**{**CFG.__dict__, "rules": {"mojibake": {"severity": "fail"}}}), frame)
    assert not report.success and report.failures[0].startswith("mojibake: 1 row(s)")


def test_unlabelled_corpus_skips_label_rules() -> None:
    frame = _canonical([{"text": r["text"], "label": None} for r in _clean_rows(40)])
    report = validate_frame(CFG, frame, labelled=False)
    assert report.success and len(report.validated) == 40
    assert "label_set" not in report.table_rules and "label_balance" not in report.table_rules


def test_clean_frame_passes_and_accounts_for_every_row() -> None:
    frame = _canonical(_clean_rows(120))
    report = validate_frame(CFG, frame)
    assert report.success and report.failures == []
    assert len(report.validated) == 120 and report.quarantine.empty and report.findings.empty
    assert all(v["failed_rows"] == 0 for v in report.row_rules.values())
    assert all(v["success"] for v in report.table_rules.values())
    assert list(report.validated.columns) == list(CANONICAL_COLUMNS)


def test_mojibake_detector_leaves_genuine_text_alone() -> None:
    genuine = ["Москва", "I ♥ NY 😀", "日本語のテキスト", "l'été à Paris — «très» bien", "一般！一般！", "價格實惠，值得購買"]
    assert not any(looks_like_mojibake(t) for t in genuine)
    assert looks_like_mojibake("naÃ¯ve") and looks_like_mojibake("鎴戝枩娆㈣繖涓�")


def _outputs(root: Path) -> dict:
    return {
        "validated_path": root / "v.parquet",
        "quarantine_path": root / "q.parquet",
        "findings_path": root / "f.parquet",
        "summary_path": root / "s.json",
        "data_docs_dir": root / "docs",
    }


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sample")
    cfg = SampleConfig(n_docs=600, seed=7, defects_per_kind=4)
    write_sample_corpus(cfg, root / "raw.csv")
    ingest(IngestConfig(), root / "raw.csv", root / "ingested.parquet")
    clean(CleanConfig(), root / "ingested.parquet", root / "cleaned.parquet", root / "fixes.parquet", root / "clean.json")
    paths = _outputs(root)
    summary = validate(ValidateConfig(), root / "cleaned.parquet", **paths)
    return {"cfg": cfg, "root": root, "summary": summary, **paths}


def test_every_planted_defect_is_quarantined_with_its_rule(sample_run: dict) -> None:
    kinds = generate_sample_corpus(sample_run["cfg"], with_kinds=True)["defect"]
    quarantine = pd.read_parquet(sample_run["quarantine_path"]).set_index("source_row")
    for row, kind in kinds.dropna().items():
        assert row in quarantine.index, f"planted {kind} at row {row} was not quarantined"
        assert DEFECT_RULES[kind] in quarantine.loc[row, "reasons"].split("; "), kind
    # Apart from the planted rows, only the originals of the conflicting duplicates are set aside.
    extra = quarantine.drop(index=kinds.dropna().index)
    assert len(extra) == 4 and (extra["reasons"] == "duplicate_conflicting_label").all()


def test_accounting_and_summary(sample_run: dict) -> None:
    summary = read_json(sample_run["summary_path"])
    assert summary == sample_run["summary"]
    validated = pd.read_parquet(sample_run["validated_path"])
    quarantine = pd.read_parquet(sample_run["quarantine_path"])
    assert len(validated) + len(quarantine) == summary["rows_in"] == 600 + 4 * len(DEFECT_RULES)
    assert summary["validated"] == len(validated) and summary["quarantined"] == len(quarantine)
    assert set(validated["doc_id"]).isdisjoint(quarantine["doc_id"])
    assert list(validated.columns) == list(CANONICAL_COLUMNS)
    assert list(quarantine.columns) == [*CANONICAL_COLUMNS, "duplicate_of", "reasons"]
    assert summary["success"] is True
    assert {v["severity"] for v in summary["row_rules"].values()} == {"fail", "quarantine", "warn"}
    assert set(summary["table_rules"]) == {"rejected_fraction", "label_set", "split_min_rows", "label_balance"}
    assert all(v["severity"] == "fail" and v["success"] for v in summary["table_rules"].values())
    assert summary["row_rules"]["mojibake"]["failed_rows"] == 4


def test_data_docs_index_exists(sample_run: dict) -> None:
    index = sample_run["data_docs_dir"] / "index.html"
    assert index.is_file() and read_json(sample_run["summary_path"])["data_docs"] == str(index)
    assert "text_invisible_only" in "".join(p.read_text(encoding="utf-8") for p in sample_run["data_docs_dir"].rglob("*.html"))
    assert not [p for p in sample_run["root"].iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("cfg", "rule", "words"),
    [
        (ValidateConfig(labels=[*TOPICS, "politics"]), "label_set", ["politics"]),
        (ValidateConfig(max_rejected_fraction=0.01), "rejected_fraction", ["rows passed", "0.01"]),
        (ValidateConfig(min_rows_per_split=10**6), "split_min_rows", ["test has"]),
        (ValidateConfig(max_label_share=0.2), "label_balance", ["label share(s) sports 0.2", "outside [0.005, 0.2]"]),
    ],
)
def test_table_rule_failure_raises_after_writing_outputs(
    sample_run: dict, tmp_path: Path, cfg: ValidateConfig, rule: str, words: list[str]
) -> None:
    ingested = sample_run["root"] / "cleaned.parquet"
    out = _outputs(tmp_path)
    with pytest.raises(ValidationFailed) as info:
        validate(cfg, ingested, **out)
    message = str(info.value)
    assert isinstance(info.value, DoclifeError) and "\n" not in message
    assert "cleaned.parquet" in message and rule in message and all(w in message for w in words)
    summary = read_json(out["summary_path"])
    assert summary["success"] is False and summary["table_rules"][rule]["success"] is False
    assert out["quarantine_path"].is_file() and out["validated_path"].is_file()
    assert (out["data_docs_dir"] / "index.html").is_file()


def test_missing_or_foreign_ingested_table(tmp_path: Path) -> None:
    with pytest.raises(DoclifeError, match="nope.parquet"):
        validate(ValidateConfig(), tmp_path / "nope.parquet", **_outputs(tmp_path))
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"text": ["a"]}).to_parquet(foreign)
    with pytest.raises(DoclifeError, match="foreign.parquet.*missing columns"):
        validate(ValidateConfig(), foreign, **_outputs(tmp_path))


def test_drift_is_measured_against_the_previous_snapshot(sample_run: dict, tmp_path: Path) -> None:
    snap = tmp_path / "snapshot"
    snapshot(sample_run["validated_path"], sample_run["summary_path"], snap)
    reference = snap / PROFILE_FILE
    assert reference.is_file()
    cleaned = sample_run["root"] / "cleaned.parquet"
    same = validate(ValidateConfig(), cleaned, **_outputs(tmp_path / "same"), reference_path=reference)
    assert same["drift"]["over_budget"] is False and set(same["drift"]["rules"]) == {
        "label_drift", "length_drift", "script_drift", "new_vocabulary"}
    # The next corpus lost three quarters of its food reviews: the label mix drifts.
    frame = pd.read_parquet(cleaned)
    food = frame.index[frame["label"] == "food"]
    shifted = tmp_path / "shifted.parquet"
    frame.drop(index=food[: int(len(food) * 0.75)]).to_parquet(shifted)
    warned = validate(ValidateConfig(), shifted, **_outputs(tmp_path / "warn"), reference_path=reference)
    assert warned["success"] and warned["drift"]["over_budget"] and not warned["drift"]["rules"]["label_drift"]["success"]
    with pytest.raises(ValidationFailed, match="drift: label_drift"):
        validate(ValidateConfig(drift={"severity": "fail"}), shifted, **_outputs(tmp_path / "fail"), reference_path=reference)
    # No previous snapshot (a missing profile): nothing to compare, nothing fails.
    first = validate(ValidateConfig(), shifted, **_outputs(tmp_path / "first"), reference_path=tmp_path / "none.json")
    assert first["drift"]["over_budget"] is False


def test_text_type_fails_on_non_string_text() -> None:
    frame = _canonical(_clean_rows(40))
    frame.loc[3, "text"] = 12345  # e.g. a numeric column picked as the text column
    report = validate_frame(CFG, frame)
    assert report.row_rules["text_type"]["failed_rows"] == 1 and report.failures[0].startswith("text_type: 1 row(s)")


def test_batches_of_any_size_give_the_same_outputs(tmp_path: Path) -> None:
    """Validation streams the table in batches: near duplicates, leakage and label noise are found across
    batches, and small batches write exactly what one batch does."""
    frame = generate_sample_corpus(SampleConfig(n_docs=1500, seed=3, defects_per_kind=3))
    texts = frame["text"].dropna()
    # Near copies (one word added) of early rows, at the end: most land in another batch, some in another split.
    near = pd.DataFrame({"text": texts.iloc[:40].to_numpy() + " indeed", "label": frame.loc[texts.index[:40], "label"]})
    flipped = frame.iloc[100:130].assign(label=lambda f: f["label"].map(dict(zip(TOPICS, TOPICS[1:] + TOPICS[:1]))))
    corpus = pd.concat([frame.drop(index=frame.index[100:130]), flipped, near], ignore_index=True)
    corpus.to_csv(tmp_path / "raw.csv", index=False)
    ingest(IngestConfig(), tmp_path / "raw.csv", tmp_path / "ingested.parquet")
    clean(CleanConfig(), tmp_path / "ingested.parquet", tmp_path / "cleaned.parquet", tmp_path / "fixes.parquet",
          tmp_path / "clean.json")
    cfg = ValidateConfig(rules={"label_noise": {"severity": "quarantine"}})
    runs = {}
    for rows in (97, 100_000):
        out = _outputs(tmp_path / f"batch{rows}")
        summary = validate(cfg, tmp_path / "cleaned.parquet", **out, engine=EngineConfig(batch_rows=rows))
        runs[rows] = (summary, *(pd.read_parquet(out[k]) for k in ("validated_path", "quarantine_path", "findings_path")))
    (small, *small_tables), (whole, *whole_tables) = runs[97], runs[100_000]
    for a, b in zip(small_tables, whole_tables):
        pd.testing.assert_frame_equal(a, b)
    assert {k: v for k, v in small.items() if k not in ("outputs", "data_docs")} == \
        {k: v for k, v in whole.items() if k not in ("outputs", "data_docs")}
    findings = whole_tables[2]
    found = set(findings["rule"])
    assert {"near_duplicate", "split_leakage", "label_noise", "duplicate_conflicting_label"} <= found, found
    near_rows = findings[findings["rule"] == "near_duplicate"]
    assert (near_rows["source_row"] >= len(corpus) - 40).sum() >= 20  # the planted copies point back across batches
    # Each batch is one run of the row suite in the one Data Docs site.
    pages = list((tmp_path / "batch97/docs/validations/rows").rglob("*.html"))
    assert len(pages) == -(-small["rows_in"] // 97)


KILL_DURING_VALIDATE = """
import os, signal, sys
from pathlib import Path
from data_checks import validate as v
from data_checks.config import EngineConfig, ValidateConfig

real, runs = v.run_on, [0]

def run_on(*args, **kwargs):  # die in the middle of the judging pass, its outputs half written
    runs[0] += 1
    if runs[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

v.run_on = run_on
root = Path(sys.argv[1])
v.validate(ValidateConfig(), root / "cleaned.parquet", root / "v.parquet", root / "q.parquet", root / "f.parquet",
           root / "s.json", root / "docs", None, EngineConfig(batch_rows=300))
"""


def test_kill_9_in_the_middle_of_validating_then_the_same_command_completes(tmp_path: Path) -> None:
    """kill -9 while batches are being judged and written; the rerun writes what an uninterrupted run does, every
    input row in validated or quarantine, and removes the killed run's spill directory."""
    import subprocess
    import sys

    write_sample_corpus(SampleConfig(n_docs=1500, seed=4, defects_per_kind=3), tmp_path / "raw.csv")
    ingest(IngestConfig(), tmp_path / "raw.csv", tmp_path / "ingested.parquet")
    clean(CleanConfig(), tmp_path / "ingested.parquet", tmp_path / "cleaned.parquet", tmp_path / "fixes.parquet",
          tmp_path / "clean.json")
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_VALIDATE, str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list(tmp_path.glob(".v.parquet.spill.*")), "the run was killed before it spilled anything"
    assert not (tmp_path / "v.parquet").exists() and not (tmp_path / "s.json").exists()

    out = {k: v.parent / v.name for k, v in _outputs(tmp_path).items()}
    summary = validate(ValidateConfig(), tmp_path / "cleaned.parquet", **out, engine=EngineConfig(batch_rows=300))
    assert not list(tmp_path.glob(".v.parquet.spill.*"))
    rows_in = len(pd.read_parquet(tmp_path / "cleaned.parquet"))
    assert summary["rows_in"] == rows_in == len(pd.read_parquet(out["validated_path"])) + len(pd.read_parquet(out["quarantine_path"]))
    uninterrupted = _outputs(tmp_path / "whole")
    validate(ValidateConfig(), tmp_path / "cleaned.parquet", **uninterrupted, engine=EngineConfig(batch_rows=300))
    for key in ("validated_path", "quarantine_path", "findings_path"):
        pd.testing.assert_frame_equal(pd.read_parquet(out[key]), pd.read_parquet(uninterrupted[key]))
