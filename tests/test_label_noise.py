"""Likely mislabelled rows: crafted corpora of three clearly separable topics, in English and Chinese."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_checks.io import DoclifeError
from data_checks.label_noise import (
    LabelNoiseConfig,
    _stratified_sample,
    char_ngram_features,
    find_label_issues,
    label_issues,
    label_noise_rules,
)
from data_checks.rulebook import QUARANTINE, WARN

# Per topic: English words (joined with spaces) and Chinese words (joined without spaces).
TOPICS = {
    "sport": (
        ["football", "goal", "match", "striker", "league", "referee", "penalty", "stadium", "coach", "tennis"],
        ["足球", "比赛", "进球", "球队", "教练", "裁判", "点球", "球场", "联赛", "冠军"],
    ),
    "food": (
        ["noodles", "spicy", "delicious", "dinner", "soup", "dumplings", "recipe", "sauce", "bakery", "rice"],
        ["米饭", "好吃", "外卖", "味道", "面条", "饺子", "辣椒", "汤底", "甜点", "餐厅"],
    ),
    "tech": (
        ["laptop", "battery", "screen", "software", "keyboard", "charger", "update", "processor", "router", "camera"],
        ["手机", "电脑", "屏幕", "软件", "键盘", "充电", "系统", "芯片", "路由", "相机"],
    ),
}
FILLER = (["the", "was", "really", "today", "and", "very"], ["今天", "非常", "我们", "还是", "真的", "有点"])
PER_TOPIC = 60
# (row, true topic, given label): planted mislabels, spread over topics, both scripts and both directions.
FLIPS = [(0, "sport", "food"), (3, "sport", "tech"), (PER_TOPIC + 1, "food", "sport"), (PER_TOPIC + 4, "food", "tech"),
         (2 * PER_TOPIC + 2, "tech", "sport"), (2 * PER_TOPIC + 5, "tech", "food")]


def crafted_corpus(seed: int = 11) -> pd.DataFrame:
    """PER_TOPIC rows per topic, alternating English and Chinese; five topic words and one filler word each."""
    rng = np.random.default_rng(seed)
    rows = []
    for topic, (english, chinese) in TOPICS.items():
        for i in range(PER_TOPIC):
            script = i % 2  # 0 English, 1 Chinese
            words = list(rng.choice((english, chinese)[script], 5, replace=False)) + [rng.choice(FILLER[script])]
            rng.shuffle(words)
            rows.append({"text": ("", " ")[script == 0].join(words), "label": topic, "split": "train"})
    frame = pd.DataFrame(rows)
    frame.insert(0, "doc_id", [f"d{i:03d}" for i in range(len(frame))])
    # A non-default index: the report must come back on the caller's index.
    frame.index = pd.Index(np.arange(len(frame)) * 10 + 7, name="row")
    return frame


def with_flips(frame: pd.DataFrame) -> pd.DataFrame:
    flipped = frame.copy()
    for row, true, given in FLIPS:
        assert flipped["label"].iloc[row] == true
        flipped.iloc[row, flipped.columns.get_loc("label")] = given
    return flipped


def flagged(report: pd.DataFrame) -> pd.Index:
    return report.index[report["label_issue"].eq(1).fillna(False).to_numpy(bool)]


def test_planted_mislabels_are_flagged_with_the_true_label():
    frame = with_flips(crafted_corpus())
    report = find_label_issues(frame, LabelNoiseConfig(min_rows=0))
    planted = frame.index[[row for row, _, _ in FLIPS]]
    assert set(planted) <= set(flagged(report))
    assert len(set(flagged(report)) - set(planted)) <= 1
    for (row, true, _), idx in zip(FLIPS, planted):
        assert report.at[idx, "suggested_label"] == true
        assert report.at[idx, "label_confidence"] < 0.5
    assert report["label_issue"].dtype == "Int8"
    assert report["suggested_label"].dtype == "string"
    assert report["label_confidence"].dtype == np.float32
    assert report.index.equals(frame.index)
    # Unflagged rows carry no suggestion; every checked row has a confidence.
    assert report.loc[report["label_issue"].eq(0), "suggested_label"].isna().all()
    assert report["label_confidence"].notna().all()


def test_clean_corpus_has_no_issues():
    report = find_label_issues(crafted_corpus(), LabelNoiseConfig(min_rows=0))
    assert report["label_issue"].notna().all()
    assert len(flagged(report)) == 0
    assert report["label_confidence"].mean() > 0.6


def test_same_seed_same_report():
    frame = with_flips(crafted_corpus())
    first = find_label_issues(frame, LabelNoiseConfig(min_rows=0, seed=3))
    second = find_label_issues(frame, LabelNoiseConfig(min_rows=0, seed=3))
    pd.testing.assert_frame_equal(first, second)


def test_unlabelled_corpus_is_all_na():
    frame = crafted_corpus().assign(label=None)
    report = find_label_issues(frame, LabelNoiseConfig(min_rows=0))
    assert report["label_issue"].isna().all()
    assert report["suggested_label"].isna().all()
    assert report["label_confidence"].isna().all()
    assert find_label_issues(crafted_corpus().drop(columns="label"), LabelNoiseConfig(min_rows=0))["label_issue"].isna().all()


def test_other_splits_and_null_rows_are_not_checked():
    frame = with_flips(crafted_corpus())
    planted = [row for row, _, _ in FLIPS]
    held_out = frame.index[[pos for pos in range(1, len(frame), 5) if pos not in planted]]
    frame.loc[held_out, "split"] = "validation"
    frame.loc[frame.index[2], "text"] = None
    frame.loc[frame.index[4], "label"] = None
    report = find_label_issues(frame, LabelNoiseConfig(min_rows=0, splits=["train"]))
    unchecked = held_out.append(frame.index[[2, 4]])
    assert report.loc[unchecked, "label_issue"].isna().all()
    assert report.loc[unchecked, "label_confidence"].isna().all()
    assert report.drop(index=unchecked)["label_issue"].notna().all()
    assert set(frame.index[planted]) <= set(flagged(report))
    # Checking validation too gives those rows a verdict.
    both = find_label_issues(frame, LabelNoiseConfig(min_rows=0, splits=["train", "validation"]))
    assert both.loc[held_out, "label_issue"].notna().all()


def test_rare_label_is_left_out_and_tiny_corpus_is_na():
    frame = crafted_corpus()
    rare = pd.DataFrame({"doc_id": ["r1", "r2", "r3"], "text": ["opera aria", "歌剧 咏叹调", "opera tenor"],
                         "label": "music", "split": "train"}, index=[9001, 9002, 9003])
    report = find_label_issues(pd.concat([frame, rare]), LabelNoiseConfig(min_rows=0))
    assert report.loc[rare.index, "label_issue"].isna().all()
    assert report.loc[frame.index, "label_issue"].notna().all()
    assert not (report["suggested_label"] == "music").any()
    # Fewer than two learnable labels: nothing is checked, nothing crashes.
    tiny = frame.groupby("label").head(3)
    assert find_label_issues(tiny, LabelNoiseConfig(min_rows=0))["label_issue"].isna().all()
    one_label = frame[frame["label"] == "food"]
    assert find_label_issues(one_label, LabelNoiseConfig(min_rows=0))["label_issue"].isna().all()
    assert find_label_issues(frame.iloc[:0], LabelNoiseConfig(min_rows=0)).empty


def test_max_rows_still_judges_every_row():
    frame = with_flips(crafted_corpus())
    # Each fold's 144 training rows are cut to a sample of 90; all 180 rows are still judged.
    report = find_label_issues(frame, LabelNoiseConfig(min_rows=0, max_rows=90))
    assert report["label_issue"].notna().all()
    assert set(frame.index[[row for row, _, _ in FLIPS]]) <= set(flagged(report))


def test_fit_sample_is_stratified_and_keeps_rare_labels():
    codes = np.array([0] * 900 + [1] * 90 + [2] * 10)
    rows = np.arange(len(codes)) + 5000
    sample = _stratified_sample(rows, codes, 100, 8, np.random.default_rng(0))
    assert np.bincount(codes[sample - 5000]).tolist() == [90, 9, 8]
    assert len(np.unique(sample)) == len(sample) and np.isin(sample, rows).all()


def test_confident_learning_filter_also_finds_the_flips():
    frame = with_flips(crafted_corpus())
    report = find_label_issues(frame, LabelNoiseConfig(min_rows=0, filter_by="confident_learning"))
    assert set(frame.index[[row for row, _, _ in FLIPS]]) <= set(flagged(report))


def test_char_ngrams_cover_chinese_and_spaced_text():
    features = char_ngram_features(pd.Series(["ab", "好吃", "ab"]), 1, 2, 2**18)
    # " ab " has 4 unigrams and 3 bigrams; the same text always hashes the same.
    assert features[0].sum() == 7 and features[1].sum() == 7
    assert (features[0] != features[2]).nnz == 0
    # The two texts share only the padding unigram " ", which each counts twice.
    assert features[0].multiply(features[1]).sum() == 2 * 2


@pytest.mark.parametrize(
    "kwargs",
    [{"folds": 1}, {"max_chars": 0}, {"min_ngram": 3, "max_ngram": 2}, {"filter_by": "argmax"}, {"folds": 5, "min_rows_per_label": 4},
     {"max_rows": 0}, {"splits": []}, {"alpha": 0}],
)
def test_bad_settings_are_one_line_errors(kwargs):
    with pytest.raises(DoclifeError, match="validate.label_noise"):
        LabelNoiseConfig(**kwargs)


def test_rule_flags_issues_and_skips_unchecked_rows():
    (rule,) = label_noise_rules(LabelNoiseConfig(min_rows=0))
    assert (rule.name, rule.column, rule.family, rule.severity, rule.max_value) == (
        "label_noise", "label_issue", "label_noise", WARN, 0)
    assert "suggested_label" in rule.text
    measures = pd.DataFrame({"label_issue": pd.array([0, 1, None], dtype="Int8")})
    assert rule.violations(measures).tolist() == [False, True, False]
    assert rule.configured({"severity": QUARANTINE}).severity == QUARANTINE


def test_too_few_rows_are_not_judged() -> None:
    report = find_label_issues(crafted_corpus(), LabelNoiseConfig(min_rows=10_000))
    assert report["label_issue"].isna().all() and report["suggested_label"].isna().all()


def test_streamed_text_batches_give_the_same_report():
    """label_issues reads only the fit samples' texts at once and predicts as the text column streams past in
    batches: batches of 7 rows give exactly the report of one batch, with max_rows sampling on."""
    frame = with_flips(crafted_corpus()).reset_index(drop=True)
    cfg = LabelNoiseConfig(min_rows=0, max_rows=60)
    texts = frame["text"]
    label = pd.factorize(frame["label"])
    split = (np.zeros(len(frame), np.int64), ["train"])
    batches = lambda predict: [predict(texts.iloc[lo:lo + 7]) for lo in range(0, len(texts), 7)]  # noqa: E731
    streamed = label_issues((label[0], list(label[1])), split, texts.notna().to_numpy(), cfg, lambda at: texts.iloc[at],
                            batches)
    whole = find_label_issues(frame, cfg)
    pd.testing.assert_frame_equal(streamed.frame(slice(None), frame.index), whole)
    assert whole["label_issue"].eq(1).sum() >= 2  # a report with flagged rows, not an all-clear one
