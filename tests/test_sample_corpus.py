"""The generated sample corpus: deterministic, bilingual, learnable, and carrying every planted defect."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from data_checks.config import SampleConfig
from data_checks.core_rules import looks_like_mojibake
from data_checks.text_quality import HTML_REGEX
from data_checks.sample_corpus import DEFECT_RULES, TOPICS, generate_sample_corpus, write_sample_corpus

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return generate_sample_corpus(SampleConfig(n_docs=800, seed=3, defects_per_kind=5), with_kinds=True)


def test_same_seed_gives_identical_frame() -> None:
    cfg = SampleConfig(n_docs=300, seed=11, defects_per_kind=3)
    first, second = generate_sample_corpus(cfg), generate_sample_corpus(cfg)
    pd.testing.assert_frame_equal(first, second)
    other = generate_sample_corpus(SampleConfig(n_docs=300, seed=12, defects_per_kind=3))
    assert not first.equals(other)


def test_columns_and_row_count(corpus: pd.DataFrame) -> None:
    plain = generate_sample_corpus(SampleConfig(n_docs=800, seed=3, defects_per_kind=5))
    assert list(plain.columns) == ["text", "label"]
    assert len(plain) == 800 + 5 * len(DEFECT_RULES)
    pd.testing.assert_frame_equal(plain, corpus[["text", "label"]])


def test_clean_rows_are_bilingual_with_the_declared_labels(corpus: pd.DataFrame) -> None:
    clean = corpus[corpus["defect"].isna()]
    assert set(clean["label"]) == set(TOPICS)
    assert min(Counter(clean["label"]).values()) > 0.15 * len(clean)
    chinese = clean["text"].str.contains(CJK)
    assert 0.35 < chinese.mean() < 0.65
    zh_lengths = clean.loc[chinese, "text"].str.len()
    assert zh_lengths.between(8, 80).all()
    en_words = clean.loc[~chinese, "text"].str.split().str.len()
    assert en_words.between(5, 60).all()
    # Clean rows never collide, so the only conflicting duplicates are the planted ones.
    assert clean["text"].map(lambda t: " ".join(t.split())).is_unique


def test_every_defect_kind_is_planted(corpus: pd.DataFrame) -> None:
    assert Counter(corpus["defect"].dropna()) == {kind: 5 for kind in DEFECT_RULES}
    rows = {kind: corpus[corpus["defect"] == kind] for kind in DEFECT_RULES}
    assert rows["text_null"]["text"].isna().all()
    assert (rows["text_empty"]["text"] == "").all()
    assert rows["text_whitespace"]["text"].map(lambda t: t != "" and t.strip() == "").all()
    assert (~rows["label_unknown"]["label"].isin(TOPICS) & rows["label_unknown"]["label"].notna()).all()
    assert rows["label_null"]["label"].isna().all()
    assert rows["html_residue"]["text"].str.contains(HTML_REGEX).all()
    assert rows["char_spam"]["text"].map(lambda t: re.search(r"(\S)\1{8,}", t) is not None).all()
    assert rows["mojibake"]["text"].map(looks_like_mojibake).all()
    for _, row in rows["duplicate_conflicting_label"].iterrows():
        copies = corpus[corpus["text"] == row["text"]]
        assert len(copies) == 2 and copies["label"].nunique() == 2


def test_mojibake_covers_latin_and_gbk_garbling(corpus: pd.DataFrame) -> None:
    texts = corpus.loc[corpus["defect"] == "mojibake", "text"]
    assert texts.str.contains("Ã").any()  # English UTF-8 read as cp1252
    assert texts.str.contains(CJK).any()  # Chinese UTF-8 read as GBK
    assert texts.str.contains("ä|å|æ|è|é").any()  # Chinese UTF-8 read as cp1252


def _features(text: str) -> list[str]:
    # Words for English, character bigrams for Chinese: enough for a bag-of-features baseline.
    if CJK.search(text):
        return [text[i : i + 2] for i in range(len(text) - 1)]
    return re.findall(r"[a-z-]+", text.lower())


def test_topic_signal_is_learnable_but_not_trivial(corpus: pd.DataFrame) -> None:
    """A naive Bayes baseline trained on half the clean rows labels the other half well, not perfectly."""
    clean = corpus[corpus["defect"].isna()].reset_index(drop=True)
    train, test = clean.iloc[::2], clean.iloc[1::2]
    counts = {label: Counter() for label in TOPICS}
    for text, label in zip(train["text"], train["label"], strict=True):
        counts[label].update(_features(text))
    vocab = set().union(*counts.values())
    totals = {label: sum(c.values()) for label, c in counts.items()}

    def predict(text: str) -> str:
        def score(label: str) -> float:
            denom = totals[label] + len(vocab)
            return sum(math.log((counts[label][f] + 1) / denom) for f in _features(text) if f in vocab)

        return max(TOPICS, key=score)

    accuracy = sum(predict(t) == y for t, y in zip(test["text"], test["label"], strict=True)) / len(test)
    assert 0.7 < accuracy < 0.995


def test_csv_round_trip_keeps_commas_quotes_and_newlines(tmp_path: Path) -> None:
    cfg = SampleConfig(n_docs=400, seed=5, defects_per_kind=2)
    path = tmp_path / "raw" / "sample.csv"
    counts = write_sample_corpus(cfg, path)
    frame = generate_sample_corpus(cfg)
    assert counts["rows"] == len(frame) == 400 + 2 * len(DEFECT_RULES)
    assert counts["defects"] == {kind: 2 for kind in DEFECT_RULES}
    texts = frame["text"].dropna()
    assert texts.str.contains(",").any() and texts.str.contains('"').any() and texts.str.contains("\n").any()

    back = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    assert len(back) == len(frame)
    for original, read in zip(frame["text"], back["text"], strict=True):
        # An empty CSV cell cannot be told from a missing one; everything else is exact.
        assert (read == original) if original else pd.isna(read)
    assert [x if isinstance(x, str) else None for x in back["label"]] == list(frame["label"])
    assert not list(path.parent.glob(".*.tmp"))
