"""Drift against the previous snapshot: profile, the four GX expectations, the section the gate reads."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from data_checks import drift, drift_profile
from data_checks.drift import check_drift
from data_checks.drift_profile import DriftConfig, profile, read_profile, write_profile
from data_checks.io import DoclifeError

SPORTS = ("match goal team coach league season score player referee stadium win draw cup final "
          "striker keeper pitch derby transfer fans").split()
COOKING = ("recipe oven flour butter sugar simmer garlic onion pepper sauce bake roast dough whisk "
           "skillet broth herbs vinegar pastry ladle").split()
HAN = list("比赛球队教练联赛赛季得分球员裁判球场胜利平局杯决赛前锋门将转会球迷主场")
LABELS = ("sports", "technology", "food", "travel")


def corpus(n: int = 1200, seed: int = 0, words: list[str] = SPORTS, min_words: int = 4, max_words: int = 12,
           label_p: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)) -> pd.DataFrame:
    """Crafted documents of random words from `words` (joined by spaces, or run together for Han)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_words, max_words + 1, n)
    sep = "" if words is HAN else " "
    texts = [sep.join(rng.choice(words, k)) for k in sizes]
    return pd.DataFrame({"text": texts, "label": rng.choice(LABELS, n, p=label_p), "split": "train"})


@pytest.fixture(scope="module")
def reference() -> dict:
    return profile(corpus(), DriftConfig())


def outcome(section: dict) -> dict[str, bool]:
    return {name: rule["success"] for name, rule in section["rules"].items()}


ALL_PASS = dict.fromkeys(drift_profile.RULES, True)


def test_identical_corpus_has_no_drift(reference: dict) -> None:
    section = check_drift(corpus(), reference, DriftConfig())
    assert outcome(section) == ALL_PASS
    assert all(rule["observed"] == 0.0 for rule in section["rules"].values())
    assert section["score"] == 0.0 and section["over_budget"] is False and section["success"] is True
    json.dumps(section)  # the section goes into the validation summary as is


def test_random_halves_pass_everything() -> None:
    frame = corpus(n=2400, seed=3)
    order = np.random.default_rng(1).permutation(len(frame))
    first, second = frame.iloc[order[:1200]], frame.iloc[order[1200:]].reset_index(drop=True)
    section = check_drift(second, profile(first, DriftConfig()), DriftConfig())
    assert outcome(section) == ALL_PASS
    assert 0.0 < section["score"] < 1.0


def test_shifted_labels_fail_label_drift(reference: dict) -> None:
    section = check_drift(corpus(label_p=(0.7, 0.1, 0.1, 0.1)), reference, DriftConfig())
    assert outcome(section) == {**ALL_PASS, "label_drift": False}
    assert section["rules"]["label_drift"]["observed"] > 0.2
    assert section["over_budget"] is True and section["score"] > 1.0


def test_a_label_never_seen_before_fails_label_drift(reference: dict) -> None:
    frame = corpus()
    frame.loc[: len(frame) // 10, "label"] = "politics"
    section = check_drift(frame, reference, DriftConfig())
    assert section["rules"]["label_drift"]["success"] is False
    assert np.isfinite(section["rules"]["label_drift"]["observed"])


def test_much_longer_texts_fail_length_drift(reference: dict) -> None:
    section = check_drift(corpus(min_words=30, max_words=60), reference, DriftConfig())
    assert outcome(section) == {**ALL_PASS, "length_drift": False}
    assert section["rules"]["length_drift"]["observed"] > 0.9


def test_slightly_longer_texts_pass_length_drift(reference: dict) -> None:
    # One more word in a few documents moves the length distribution a little: within budget.
    frame = corpus()
    frame.loc[:100, "text"] = frame.loc[:100, "text"] + " goal"
    section = check_drift(frame, reference, DriftConfig())
    assert 0.0 < section["rules"]["length_drift"]["observed"] <= 0.1
    assert section["rules"]["length_drift"]["success"] is True


def test_another_script_fails_script_drift(reference: dict) -> None:
    section = check_drift(corpus(words=HAN), reference, DriftConfig())
    assert section["rules"]["script_drift"]["success"] is False
    assert section["rules"]["script_drift"]["details"]["observed_shares"] == {"han": 1.0}


def test_a_few_documents_in_another_script_pass_script_drift(reference: dict) -> None:
    frame = corpus()
    frame.loc[:11, "text"] = corpus(n=12, words=HAN)["text"].to_numpy()  # 1% of the corpus
    section = check_drift(frame, reference, DriftConfig())
    assert section["rules"]["script_drift"]["success"] is True


def test_another_domain_fails_new_vocabulary(reference: dict) -> None:
    section = check_drift(corpus(words=COOKING), reference, DriftConfig())
    rule = section["rules"]["new_vocabulary"]
    assert rule["success"] is False and rule["observed"] > 0.9
    assert set(rule["details"]["top_new_tokens"]) <= set(COOKING)
    assert outcome(section)["label_drift"] and outcome(section)["script_drift"]


def test_a_few_new_words_pass_new_vocabulary(reference: dict) -> None:
    frame = corpus()
    frame.loc[:29, "text"] = frame.loc[:29, "text"] + " oven"
    section = check_drift(frame, reference, DriftConfig())
    assert 0.0 < section["rules"]["new_vocabulary"]["observed"] < 0.05
    assert section["rules"]["new_vocabulary"]["success"] is True


def test_a_corpus_counted_in_batches_gives_the_same_section(reference: dict) -> None:
    # Labels shifted and partly missing, lengths spread, new words, another script: every rule sees drift.
    frame = corpus(label_p=(0.4, 0.3, 0.2, 0.1), min_words=2, max_words=20)
    frame.loc[::40, "label"] = None
    frame.loc[:59, "text"] = frame.loc[:59, "text"] + " oven flour"
    frame.loc[60:99, "text"] = "... !!!"  # script "other"
    half = len(frame) // 2
    builder = drift_profile.ProfileBuilder(DriftConfig()).add(frame.iloc[:half]).add(frame.iloc[half:])
    section = check_drift(builder, reference, DriftConfig())
    assert section == check_drift(frame, reference, DriftConfig())
    assert section["rows"] == len(frame) and all(rule["observed"] > 0 for rule in section["rules"].values())


def test_no_previous_snapshot_passes() -> None:
    section = check_drift(corpus(n=50), None, DriftConfig())
    assert section["reference"] is None and section["rules"] == {}
    assert section["over_budget"] is False and section["success"] is True
    assert section["score"] == 0.0 and section["budget"] == 1.0


def test_severity_fail_fails_the_check_and_warn_only_reports(reference: dict) -> None:
    shifted = corpus(label_p=(0.7, 0.1, 0.1, 0.1))
    warn = check_drift(shifted, reference, DriftConfig())
    fail = check_drift(shifted, reference, DriftConfig(severity="fail"))
    assert warn["success"] is True and warn["over_budget"] is True and warn["failures"]
    assert fail["success"] is False and fail["failures"][0].startswith("label_drift:")
    assert fail["rules"]["label_drift"]["severity"] == "fail"


def test_only_the_configured_rules_run(reference: dict) -> None:
    section = check_drift(corpus(min_words=30, max_words=60), reference, DriftConfig(rules=["label_drift"]))
    assert list(section["rules"]) == ["label_drift"] and section["over_budget"] is False


def test_expectations_carry_rule_and_severity(reference: dict) -> None:
    expectations = drift.drift_expectations(reference, DriftConfig(severity="fail"))
    assert [e.meta["rule"] for e in expectations] == list(drift_profile.RULES)
    assert all(e.meta["severity"] == "fail" for e in expectations)
    assert all(e.description.startswith(f"{e.meta['rule']}: ") for e in expectations)


def test_profile_round_trips_through_json(tmp_path, reference: dict) -> None:
    path = tmp_path / "snap" / "drift_profile.json"
    assert read_profile(path) is None  # no previous snapshot
    write_profile(path, reference)
    assert read_profile(path) == reference
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    # The profile read back drives the same check as the one in memory.
    assert check_drift(corpus(), read_profile(path), DriftConfig())["score"] == 0.0


def test_read_profile_refuses_another_format(tmp_path, reference: dict) -> None:
    path = tmp_path / "profile.json"
    write_profile(path, {**reference, "version": 99})
    with pytest.raises(DoclifeError, match="version 99"):
        read_profile(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DoclifeError, match="not a drift profile"):
        read_profile(path)


def test_profile_contents() -> None:
    frame = pd.DataFrame({"text": ["Hello World 42", "你好世界", "iPhone12 很好", "...", None],
                          "label": ["a", "b", "a", None, "b"], "split": "train"})
    p = profile(frame, DriftConfig())
    assert p["rows"] == 5
    assert dict(zip(p["labels"]["values"], p["labels"]["counts"])) == {"<missing>": 1, "a": 2, "b": 2}
    assert dict(zip(p["script"]["values"], p["script"]["counts"])) == {"han": 1, "latin": 1, "mixed": 1, "other": 2}
    tokens = dict(zip(p["vocabulary"]["tokens"], p["vocabulary"]["counts"]))
    assert tokens == {"hello": 1, "world": 1, "42": 1, "你": 1, "好": 2, "世": 1, "界": 1, "iphone12": 1, "很": 1}
    assert dict(zip(p["length"]["values"], p["length"]["counts"])) == {0: 1, 3: 1, 4: 1, 11: 1, 14: 1}
    assert sum(p["length"]["histogram"]) == 5
    assert p["vocabulary"]["coverage"] == 1.0
    assert p["vocabulary"]["hapax_share"] == pytest.approx(8 / 10)
    assert profile(frame, DriftConfig(vocabulary_size=2))["vocabulary"]["coverage"] == pytest.approx(3 / 10)


def test_scripts_agree_with_the_gate_slices() -> None:
    from flows.slices import script_of

    texts = pd.Series(["plain English", "纯中文", "中文 with English words", "mostly 中文中文中文中文", "1234 !!",
                       "", "Ça va très bien", "東京 Tokyo 東京 Tokyo"])
    assert drift_profile.scripts(texts).tolist() == [script_of(t) for t in texts]


def test_ks_statistic_is_exact() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 40, 300), rng.integers(5, 50, 200)
    values, counts = np.unique(a, return_counts=True)
    assert drift_profile.ks_statistic(b, values.tolist(), counts.tolist()) == pytest.approx(stats.ks_2samp(a, b).statistic)


@pytest.mark.parametrize("bad", [{"psi_max": 0}, {"ks_max": 1.5}, {"new_vocabulary_max": 0}, {"severity": "quarantine"},
                                 {"vocabulary_size": 0}, {"length_bins": [5, 10]}, {"length_bins": [0, 10, 10]},
                                 {"rules": ["label_drift", "colour_drift"]}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(DoclifeError, match=r"params.yaml: validate.drift: "):
        DriftConfig(**bad)


def test_importing_twice_keeps_the_expectations_working(reference: dict) -> None:
    module = importlib.reload(drift)
    section = module.check_drift(corpus(words=COOKING), reference, module.DriftConfig())
    assert section["rules"]["new_vocabulary"]["success"] is False


def test_data_docs_render_the_drift_rules(tmp_path, reference: dict) -> None:
    docs = tmp_path / "docs"
    section = check_drift(corpus(words=COOKING), reference, DriftConfig(), data_docs_dir=docs)
    assert section["over_budget"] is True
    pages = [p.read_text(encoding="utf-8") for p in docs.rglob("*.html")]
    assert pages, "no Data Docs were built"
    html = "\n".join(pages)
    for rule in drift_profile.RULES:
        assert f"{rule}: " in html
    # The reference vocabulary travels in the expectation's arguments but is not printed in the docs.
    assert "reference_counts" not in html and "striker" not in html


def test_renderer_without_description_names_the_bound_not_the_reference(reference: dict) -> None:
    for expectation in drift.drift_expectations(reference, DriftConfig()):
        kind = type(expectation)
        blocks = kind._prescriptive_renderer(configuration=expectation.configuration)
        text = json.dumps(blocks[0].to_json_dict())
        assert "at most" in text and "reference_" not in text and "striker" not in text
        assert kind._prescriptive_renderer()  # some Data Docs paths pass neither configuration nor result
