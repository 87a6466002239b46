"""Findings of an independent check of the noise rules, pinned.

- In the long profile, a C4 or FineWeb rule by which the published pipeline drops the whole document
  quarantines it; C4's JavaScript and policy rules, which there remove only the offending line, warn
  (doclife keeps rows whole). docs/stages.md says the same.
- Empty and whitespace-only text is measured (no words, no sentences), so the noise rules alone drop it as
  datatrove's filters do; validation still reports such a row once, as text_blank.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_checks.clean import CleanConfig
from data_checks.config import ValidateConfig
from data_checks.ingest import hash_splits
from data_checks.rulebook import QUARANTINE, WARN
from data_checks.text_quality import TextQualityConfig, measure_text, text_rules
from data_checks.validate import clean_and_validate

ROOT = Path(__file__).resolve().parents[1]
LONG = TextQualityConfig(profile="long", languages=["en"])

# The long profile's C4 and FineWeb rules and the severity docs/stages.md gives them; every other
# long-profile rule (Gopher quality and repetition, markup, spam, scripts) quarantines.
C4_FINEWEB_SEVERITY = {
    "c4_sentences": QUARANTINE,  # C4: too_few_sentences drops the page
    "c4_lorem_ipsum": QUARANTINE,  # drops the page
    "c4_curly_bracket": QUARANTINE,  # drops the page
    "c4_javascript_lines": WARN,  # C4 removes the line and keeps the page
    "c4_policy_lines": WARN,  # C4 removes the line and keeps the page
    "fineweb_line_punct": QUARANTINE,  # FineWeb drops the document on each of its four rules
    "fineweb_short_lines": QUARANTINE,
    "fineweb_dup_line_chars": QUARANTINE,
    "fineweb_newlines": QUARANTINE,
}

# Distinct ordinary documents of about 110 words in six sentences: they pass every long-profile rule.
NOUNS = ("harbour ferry market baker captain museum garden bridge village teacher river orchard lantern "
         "library station meadow painter miller shepherd tailor chapel quarry furnace canal").split()
VERBS = "opens repairs visits paints crosses guards follows carries sells builds".split()
ADJS = "old quiet busy narrow bright wooden distant gentle crowded ancient".split()


def sentence(i: int, j: int) -> str:
    def noun(k: int) -> str:
        return NOUNS[(i * 7 + j * 3 + k) % len(NOUNS)]

    return (f"The {ADJS[(i + j) % 10]} {noun(0)} {VERBS[(i * 3 + j) % 10]} the {noun(1)} with the {noun(2)} "
            f"of the {noun(5)}, and that {noun(11)} seems {ADJS[(i * 2 + j + 3) % 10]} to everyone.")


def doc(i: int, sentences: int = 6) -> str:
    return " ".join(sentence(i, j) for j in range(sentences))


# One crafted document per C4/FineWeb rule, breaking that rule and no other long-profile rule.
CRAFTED = {
    "c4_sentences": doc(2, sentences=4),  # 75 words, but 4 sentences
    "c4_lorem_ipsum": doc(3) + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "c4_curly_bracket": doc(4) + "\nThe function returns { value } to the caller.",
    "fineweb_line_punct": doc(5) + "\n" + "\n".join(sentence(15, j)[:-1].replace(",", "") for j in range(9)),
    "fineweb_short_lines": doc(6) + "\nOpen daily\nFree entry\nGuided tours",
    "fineweb_dup_line_chars": "\n".join([sentence(7, 0) + " " + sentence(7, 1), "Read more.",
                                         sentence(7, 2) + " " + sentence(7, 3), "Read more.",
                                         sentence(7, 4) + " " + sentence(7, 5)]),
    "fineweb_newlines": "\n\n".join(f"{a.capitalize()} and {v} the {b}." for a, v, b in zip(NOUNS, VERBS * 3, reversed(NOUNS))),
    "c4_javascript_lines": doc(8) + "\nPlease enable JavaScript in your browser to continue.",
    "c4_policy_lines": doc(9) + "\nBy using this site you accept our privacy policy and rules.",
}
BLANK = {"empty": "", "whitespace": " \t\n  "}


def broken(text: str) -> list[str]:
    measures = measure_text(pd.Series([text]), LONG)
    return [r.name for r in text_rules(LONG) if r.severity != "off" and r.violations(measures).iloc[0]]


def test_long_profile_severities_are_the_documented_ones():
    rules = {r.name: r.severity for r in text_rules(LONG)}
    assert {n: s for n, s in rules.items() if n.startswith(("c4_", "fineweb_"))} == C4_FINEWEB_SEVERITY
    others = {n: s for n, s in rules.items() if n not in C4_FINEWEB_SEVERITY}
    assert set(others.values()) == {QUARANTINE}, others


def test_docs_state_the_same_severities():
    row = next(line for line in (ROOT / "docs" / "stages.md").read_text().splitlines() if line.startswith("| noise |"))
    long_part = row.split("profile: long", 1)[1]
    # "... (`c4_sentences`, ...) ... (quarantine: ...)" then "... `c4_javascript_lines`, `c4_policy_lines` (warn: ...)"
    for severity in (QUARANTINE, WARN):
        documented = {n for n, s in C4_FINEWEB_SEVERITY.items() if s == severity}
        segment = re.search(rf"^(.*?)\({severity}\b", long_part if severity == QUARANTINE else long_part.split(f"({QUARANTINE}", 1)[1])
        assert segment, f"docs/stages.md: no '({severity}' in the long-profile description"
        named = set(re.findall(r"`((?:c4|fineweb)_[a-z_]+)`", segment.group(1)))
        assert named == documented, (severity, named)


def test_base_documents_pass_every_long_rule():
    assert {i: broken(doc(i)) for i in range(20, 26)} == {i: [] for i in range(20, 26)}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_document_breaks_exactly_its_rule(name):
    assert broken(CRAFTED[name]) == [name]


@pytest.mark.parametrize("name", sorted(BLANK))
def test_noise_rules_alone_drop_blank_text(name):
    """As bench/datatrove_compare runs them: datatrove's Gopher quality, C4 and FineWeb filters drop these."""
    measures = measure_text(pd.Series([BLANK[name]]), LONG)
    row = measures.iloc[0]
    assert (row["chars"], row["words"], row["stop_words"], row["c4_sentences"]) == (0, 0, 0, 0)
    assert row["line_punct_frac"] == 0 and row["short_line_frac"] == 1
    quarantining = [r for r in text_rules(LONG) if r.severity == QUARANTINE]
    reasons = [r.name for r in quarantining if r.violations(measures).iloc[0]]
    assert reasons == ["gopher_q_word_count", "gopher_q_stop_words", "c4_sentences", "fineweb_line_punct",
                       "fineweb_short_lines"]


def test_null_text_is_not_measured():
    measures = measure_text(pd.Series([None, np.nan], dtype=object), LONG)
    assert measures.isna().all().all()
    assert not any(r.violations(measures).any() for r in text_rules(LONG))


@pytest.fixture(scope="module")
def long_report():
    """The crafted documents among ordinary ones, cleaned and validated with the long profile."""
    rows = [(doc(20 + i), "ab"[i % 2]) for i in range(24)]
    rows += [(text, "a") for text in CRAFTED.values()] + [(text, "b") for text in BLANK.values()]
    frame = pd.DataFrame(rows, columns=["text", "label"]).astype(object)
    source_row = pd.Series(range(len(frame)), dtype="int64")
    frame = pd.DataFrame({"doc_id": [f"d{i:05d}" for i in range(len(frame))], "text": frame["text"],
                          "label": frame["label"], "split": hash_splits(frame["text"], source_row, 0.1, 0.1),
                          "source": "crafted.jsonl", "source_row": source_row})
    cfg = ValidateConfig(labels=["a", "b"], min_chars=2, max_chars=5000, max_rejected_fraction=1.0,
                         min_rows_per_split=0, min_label_share=0.0, max_label_share=1.0, text_quality=LONG)
    report, _ = clean_and_validate(cfg, CleanConfig(), frame, labels=["a", "b"])
    names = ["ordinary"] * 24 + list(CRAFTED) + list(BLANK)
    return report, names


def _reasons(report) -> dict[int, str]:
    return dict(zip(report.quarantine["source_row"].astype(int), report.quarantine["reasons"]))


def test_long_profile_quarantines_what_the_published_filters_drop(long_report):
    report, names = long_report
    reasons = _reasons(report)
    for name, severity in C4_FINEWEB_SEVERITY.items():
        row = names.index(name)
        if severity == QUARANTINE:
            assert reasons.get(row) == name, f"{name}: quarantine reasons {reasons.get(row)!r}"
        else:
            assert row not in reasons, f"{name} should warn, got quarantined: {reasons[row]!r}"
            warned = report.findings[report.findings["source_row"] == row]
            assert set(warned["rule"]) == {name} and set(warned["action"]) == {WARN}


def test_blank_rows_keep_their_one_clear_reason(long_report):
    report, names = long_report
    reasons = _reasons(report)
    for name in BLANK:
        row = names.index(name)
        assert reasons.get(row) == "text_blank", f"{name}: {reasons.get(row)!r}"
        found = report.findings[report.findings["source_row"] == row]
        assert set(found.loc[found["action"] != "fix", "rule"]) == {"text_blank"}


def test_ordinary_documents_are_validated(long_report):
    report, names = long_report
    assert not [r for r in _reasons(report) if names[r] == "ordinary"]


def test_datatrove_drops_exactly_what_the_long_profile_quarantines():
    filters = pytest.importorskip("datatrove.pipeline.filters")
    pytest.importorskip("spacy")
    from datatrove.data import Document

    published = {"c4_": filters.C4QualityFilter(), "fineweb_": filters.FineWebQualityFilter()}
    for name, text in CRAFTED.items():
        document = Document(text=text, id=name)
        kept = published[name[: name.index("_") + 1]].filter(document) is True
        assert kept == (C4_FINEWEB_SEVERITY[name] == WARN), name
        if kept:  # C4 cut the offending line and kept the rest
            assert document.text != text and name.startswith("c4_")
    for name, text in BLANK.items():
        for flt in (filters.GopherQualityFilter(), filters.C4QualityFilter(), filters.FineWebQualityFilter()):
            assert flt.filter(Document(text=text, id=name)) is not True, (name, flt.name)
