"""Exact and near duplicates, split leakage and conflicting labels on crafted corpora."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_checks import duplicates
from data_checks.duplicates import (
    MEASURES,
    DuplicatesConfig,
    Sketches,
    codes,
    duplicate_rules,
    find_duplicates,
    measure_duplicates,
)
from data_checks.io import DoclifeError
from data_checks.text_arrays import chunk_bounds
from data_checks.rulebook import QUARANTINE, WARN

EN = "The battery easily lasts two full days and the bright screen is sharp even outdoors in summer"
EN_EDIT = "The battery easily lasts two full days and the bright display is sharp even outdoors in summer"
EN_OTHER = "Delivery took three weeks and the box arrived crushed with the charger missing entirely"
ZH = "这款手机的电池非常耐用，屏幕清晰明亮，物流也很快，包装完整没有破损，客服态度很好，值得推荐购买"
ZH_EDIT = "这款手机的电池非常耐用，屏幕清晰明亮，物流也很快，包装完整没有破损，客服态度很好，值得推荐购买！总之满意"
ZH_OTHER = "酒店的早餐种类太少了，房间隔音很差，晚上一直听到走廊里的声音，前台办理入住还排了半小时队"


def corpus(rows: list[tuple]) -> pd.DataFrame:
    """rows of (text, label, split)."""
    frame = pd.DataFrame(rows, columns=["text", "label", "split"])
    frame.insert(0, "doc_id", [f"d{i}" for i in range(len(frame))])
    return frame


def ints(series: pd.Series) -> list:
    return [None if pd.isna(v) else int(v) for v in series]


def violators(measures: pd.DataFrame, name: str) -> list[int]:
    rule = next(r for r in duplicate_rules() if r.name == name)
    return [int(i) for i in measures.index[rule.violations(measures)]]


def test_exact_duplicates_keep_first_after_nfkc_casefold_and_whitespace() -> None:
    frame = corpus([
        ("Great phone", "a", "train"),
        ("ＧＲＥＡＴ   phone ", "a", "train"),  # full-width letters, extra spaces: same key
        ("Straße", "a", "train"),
        ("STRASSE", "a", "train"),  # case folding, not lower-casing
        ("Great phones", "a", "train"),  # a different text passes
        ("great phone", "a", "train"),
    ])
    out = find_duplicates(frame, DuplicatesConfig())
    assert list(out.columns) == list(MEASURES)
    assert ints(out["duplicate_of"]) == [None, 0, None, 2, None, 0]
    assert ints(out["exact_duplicate"]) == [0, 1, 0, 1, 0, 1]


def test_pointers_are_positions_not_index_labels() -> None:
    frame = corpus([("same text here", "a", "train")] * 3).set_axis([10, 20, 30])
    out = find_duplicates(frame, DuplicatesConfig())
    assert list(out.index) == [10, 20, 30]
    assert ints(out["duplicate_of"]) == [None, 0, 0]


@pytest.mark.parametrize(("text", "edit", "other"), [(EN, EN_EDIT, EN_OTHER), (ZH, ZH_EDIT, ZH_OTHER)],
                         ids=["english", "chinese"])
def test_near_duplicates_point_at_the_earliest_text(text: str, edit: str, other: str) -> None:
    frame = corpus([(text, "a", "train"), (other, "a", "train"), (edit, "a", "train"), (edit, "a", "train")])
    out = find_duplicates(frame, DuplicatesConfig())
    assert ints(out["near_duplicate_of"]) == [None, None, 0, None]
    assert ints(out["near_duplicate"]) == [0, 0, 1, None]  # the exact copy is duplicate_exact's business
    assert out["near_duplicate_similarity"].iloc[2] >= 0.7
    assert pd.isna(out["near_duplicate_similarity"].iloc[1])
    assert violators(out, "near_duplicate") == [2]


def test_punctuation_and_short_texts_are_near_duplicates() -> None:
    frame = corpus([("好评", "a", "train"), ("好评！！！", "a", "train"), ("差评", "a", "train"),
                    ("!!!", "a", "train"), ("?!", "a", "train"), ("ok", "a", "train"), ("OK.", "a", "train")])
    out = find_duplicates(frame, DuplicatesConfig())
    # Shorter than one shingle: the whole text is one shingle; punctuation-only text keys on itself.
    assert ints(out["near_duplicate_of"]) == [None, 0, None, None, None, None, 5]
    assert out["near_duplicate_similarity"].iloc[1] == 1.0


def test_near_duplicate_threshold_is_configurable() -> None:
    frame = corpus([(EN, "a", "train"), (EN_EDIT, "a", "train")])
    assert ints(find_duplicates(frame, DuplicatesConfig(threshold=0.6))["near_duplicate"]) == [0, 1]
    assert ints(find_duplicates(frame, DuplicatesConfig(threshold=1.0))["near_duplicate"]) == [0, 0]


def test_leakage_flags_the_train_copy_and_points_at_the_test_copy() -> None:
    frame = corpus([
        (EN, "a", "test"),
        (EN, "a", "train"),
        (EN, "a", "train"),
        (ZH, "a", "validation"),
        (ZH, "a", "test"),
        (ZH_EDIT, "a", "train"),  # near duplicate of a validation and a test text: points at the test one
        (EN_OTHER, "a", "train"),
        (EN_OTHER, "a", "train"),  # copies within one split are no leakage
    ])
    out = find_duplicates(frame, DuplicatesConfig())
    assert ints(out["split_leakage"]) == [0, 1, 1, 1, 0, 1, 0, 0]
    assert ints(out["leak_of"]) == [None, 0, 0, 4, None, 4, None, None]
    # Within-split duplicates only: the test copy stays, the second train copy is also an exact duplicate.
    assert ints(out["duplicate_of"]) == [None, None, 1, None, None, None, None, 6]
    assert violators(out, "split_leakage") == [1, 2, 3, 5]


def test_rows_outside_the_known_splits_get_no_leakage_measure() -> None:
    frame = corpus([(EN, "a", "train"), (EN, "a", None), (EN, "a", "holdout")])
    out = find_duplicates(frame, DuplicatesConfig())
    assert ints(out["split_leakage"]) == [0, None, None]


def test_conflicting_labels_flag_every_copy() -> None:
    frame = corpus([
        ("works as described", "pos", "train"),
        ("Works as described!", "pos", "train"),  # near duplicate, same label: passes
        ("WORKS as described", "neg", "test"),
        ("arrived broken", "neg", "train"),
        ("arrived broken", "neg", "train"),
        ("arrived broken", None, "train"),  # a null label is no conflict
    ])
    out = find_duplicates(frame, DuplicatesConfig())
    assert ints(out["labels_per_text"]) == [2, 1, 2, 1, 1, 1]
    assert violators(out, "duplicate_conflicting_label") == [0, 2]
    assert ints(out["labels_per_cluster"]) == [2, 2, 2, 1, 1, 1]
    assert violators(out, "near_duplicate_conflicting_label") == [0, 1, 2]


def test_near_duplicates_with_different_labels() -> None:
    frame = corpus([(ZH, "pos", "train"), (ZH_EDIT, "neg", "train"), (ZH_OTHER, "neg", "train")])
    out = find_duplicates(frame, DuplicatesConfig())
    assert ints(out["conflicting_label"]) == [0, 0, 0]
    assert ints(out["near_duplicate_conflicting_label"]) == [1, 1, 0]


def test_unlabelled_corpus_has_no_label_conflicts() -> None:
    frame = corpus([(EN, None, "train"), (EN, None, "train"), (EN_EDIT, None, "train")])
    out = find_duplicates(frame, DuplicatesConfig())
    assert ints(out["labels_per_text"]) == [0, 0, 0]
    assert ints(out["conflicting_label"]) == [0, 0, 0]
    assert ints(out["near_duplicate_conflicting_label"]) == [0, 0, 0]
    assert ints(out["exact_duplicate"]) == [0, 1, 0]


def test_null_and_blank_text_are_not_applicable() -> None:
    frame = corpus([(None, "a", "train"), ("  \t ", "a", "test"), ("", "a", "train"), (EN, "a", "train")])
    out = find_duplicates(frame, DuplicatesConfig())
    assert out.iloc[:3].isna().all().all()
    assert ints(out["exact_duplicate"]) == [None, None, None, 0]


def test_without_split_and_label_columns() -> None:
    out = find_duplicates(pd.DataFrame({"text": [EN, EN, EN_EDIT]}), DuplicatesConfig())
    assert ints(out["duplicate_of"]) == [None, 0, None]
    assert ints(out["near_duplicate_of"]) == [None, None, 0]
    assert out["split_leakage"].isna().all()


def test_result_does_not_depend_on_chunk_size() -> None:
    rows = [(EN, "a", "train"), (ZH_OTHER, "b", "test"), (EN_EDIT, "b", "train"), (ZH, "a", "validation"),
            (None, "a", "train"), (EN_OTHER, "a", "train"), (ZH_EDIT, "a", "test"), ("ＥＮ  " + EN, "a", "test"),
            (ZH, "b", "validation"), ("好评", "a", "train"), ("好评！", "a", "test")]
    frame = corpus(rows * 3)
    small = find_duplicates(frame, DuplicatesConfig(chunk_rows=3))
    large = find_duplicates(frame, DuplicatesConfig(chunk_rows=10_000))
    pd.testing.assert_frame_equal(small, large)
    assert small["near_duplicate"].sum() > 0 and small["split_leakage"].sum() > 0
    # Chunks cut by characters (every long text a chunk of its own) give the same result too.
    pd.testing.assert_frame_equal(find_duplicates(frame, DuplicatesConfig(chunk_chars=10)), large)


def test_chunks_hold_at_most_their_rows_and_characters_and_cover_every_row() -> None:
    chars = np.array([5, 0, 30, 2, 2, 2, 9, 1])
    chunks = chunk_bounds(chars, max_rows=3, max_chars=8)
    assert chunks == [(0, 2), (2, 3), (3, 6), (6, 7), (7, 8)]  # the 30-character text alone
    assert [lo for lo, _ in chunks[1:]] == [hi for _, hi in chunks[:-1]]


def test_rules_and_their_defaults() -> None:
    rules = {rule.name: rule for rule in duplicate_rules(DuplicatesConfig())}
    # Exact copies are dropped by the clean stage (tests/test_clean.py), not by a rule here.
    assert set(rules) == {"near_duplicate", "split_leakage", "duplicate_conflicting_label",
                          "near_duplicate_conflicting_label"}
    assert rules["near_duplicate"].severity == WARN and rules["near_duplicate"].family == "inconsistency"
    assert rules["split_leakage"].severity == QUARANTINE
    assert rules["duplicate_conflicting_label"].severity == QUARANTINE
    assert all(rule.column in MEASURES for rule in rules.values())
    assert "near_duplicate <= 0" in rules["near_duplicate"].text


@pytest.mark.parametrize("bad", [{"threshold": 0.0}, {"threshold": 1.5}, {"word_ngram": 0}, {"chunk_rows": 0},
                                 {"num_bands": 0}, {"chunk_rows": 10**9}, {"chunk_chars": 0}])
def test_bad_settings_are_one_line_errors(bad: dict) -> None:
    with pytest.raises(DoclifeError, match="validate.duplicates"):
        DuplicatesConfig(**bad)


def test_band_hashes_spilled_to_disk_give_the_same_measures(tmp_path) -> None:
    """Sketches added in batches with their signatures and band hashes on disk measure what one in-memory pass does."""
    frame = corpus([(EN, "a", "train"), (EN_OTHER, "b", "train"), (ZH, "a", "test"), (EN_EDIT, "a", "train"),
                    (ZH_EDIT, "b", "train"), (None, "a", "train"), (EN, "b", "validation")] * 3)
    cfg = DuplicatesConfig(chunk_rows=2)
    sketches = Sketches(cfg, len(frame), tmp_path)
    for lo in range(0, len(frame), 5):
        sketches.add(frame["text"].iloc[lo:lo + 5])
    spilled_files = sorted([*(f"band-{b:04d}.u64" for b in range(cfg.num_bands)), "sig8.u8"])
    assert sorted(p.name for p in tmp_path.iterdir()) == spilled_files
    spilled = measure_duplicates(sketches, codes(frame, "split"), codes(frame, "label")[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == spilled_files  # the shelved candidate pairs are gone
    whole = find_duplicates(frame, cfg)
    for name in MEASURES:
        expected = whole[name].astype("float64").fillna(-1 if name != "near_duplicate_similarity" else np.nan)
        np.testing.assert_array_equal(spilled[name].astype("float64"), expected.to_numpy(), err_msg=name)
    assert (whole["near_duplicate"] == 1).sum() >= 1 and (whole["split_leakage"] == 1).sum() >= 1


def test_signature_blocks_and_hash_slices_give_the_same_measures(tmp_path, monkeypatch) -> None:
    """Near copies whose signatures lie in different blocks, and buckets grouped a slice of hash values at a
    time, measure what one block and one slice do; the arrays are narrow."""
    rows = [(EN, "a", "train"), (EN_OTHER, "b", "train"), (ZH, "a", "test"), ("好评", "a", "train"),
            (None, "a", "train"), (ZH_OTHER, "b", "validation"), (EN_EDIT, "b", "train"), (ZH_EDIT, "a", "test"),
            ("好评！", "b", "train"), (EN, "a", "validation")]
    frame = corpus(rows * 4)
    cfg = DuplicatesConfig(chunk_rows=3)
    whole = find_duplicates(frame, cfg)
    monkeypatch.setattr(duplicates, "_BLOCK_BYTES", 4 * cfg.num_perm)  # 4 rows a signature block
    monkeypatch.setattr(duplicates, "_GROUP_TEXTS", 3)  # 3 slices of band hash values
    sketches = Sketches(cfg, len(frame), tmp_path)
    for lo in range(0, len(frame), 7):
        sketches.add(frame["text"].iloc[lo:lo + 7])
    blocked = measure_duplicates(sketches, codes(frame, "split"), codes(frame, "label")[0])
    for name in MEASURES:
        expected = whole[name].astype("float64").fillna(-1 if name != "near_duplicate_similarity" else np.nan)
        np.testing.assert_array_equal(blocked[name].astype("float64"), expected.to_numpy(), err_msg=name)
    assert (whole["near_duplicate"] == 1).sum() >= 3 and (whole["split_leakage"] == 1).sum() >= 3
    assert blocked["duplicate_of"].dtype == np.int32 and blocked["labels_per_text"].dtype == np.int8
    assert blocked["near_duplicate_similarity"].dtype == np.float64
