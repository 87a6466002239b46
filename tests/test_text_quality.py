"""Noise measures and rules for document text: every rule catches a crafted bad text and passes a good one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_checks.io import DoclifeError
from data_checks.rulebook import OFF, QUARANTINE
from data_checks.text_quality import MEASURES, TextQualityConfig, measure_text, text_rules

# A plain web-style document: three lines of ordinary sentences, enough words, no repeats.
GOOD_DOC = (
    "The old harbour town wakes up early, long before the first ferry leaves for the islands. "
    "Fishermen unload their catch with quick hands while gulls circle above the market stalls.\n"
    "By nine o'clock the bakery on the corner has sold most of its bread to hungry visitors. "
    "Children walk to school along the sea wall and wave to the captain of the morning boat.\n"
    "In the afternoon a quiet settles over the streets, and the museum of local history opens its doors. "
    "Evening brings music from the square, where neighbours share stories and plans for the coming season."
)
LINES = GOOD_DOC.split("\n")
FILLER = ("Rivers carve patient valleys through granite while farmers plant barley beside ancient stone walls "
          "and merchants travel between distant markets carrying wool, copper, salt, spices, linen and amber.")


def _rule(name: str, profile: str):
    return {r.name: r for r in text_rules(TextQualityConfig(profile=profile))}[name]


def flagged(name: str, text: str, profile: str = "long") -> bool:
    rule = _rule(name, profile)
    measures = measure_text(pd.Series([text]), TextQualityConfig(profile=profile, languages=["zh", "en"]))
    return bool(rule.violations(measures).iloc[0])


SENTENCE = "the quick brown fox jumps over the lazy dog near our river bank"
# (rule, profile, must be caught, must pass)
CASES = [
    ("gopher_q_word_count", "long", "The cat sat with the dog.", GOOD_DOC),
    ("gopher_q_mean_word_length", "long", " ".join(["to be or not so"] * 15), GOOD_DOC),
    ("gopher_q_hash_ratio", "long", GOOD_DOC + " #tag" * 30, GOOD_DOC + " #one"),
    ("gopher_q_ellipsis_ratio", "long", GOOD_DOC.replace(",", "...").replace(" the ", " the ... "), GOOD_DOC + " Well..."),
    ("gopher_q_bullet_lines", "long", "\n".join(f"- point {i} of the plan with the team" for i in range(12)),
     "\n".join(["- " + LINES[0], "- " + LINES[1], LINES[2]])),
    ("gopher_q_ellipsis_lines", "long", "\n".join(line[:-1] + "..." for line in LINES), GOOD_DOC + "\nTo be continued..."),
    ("gopher_q_alpha_words", "long", GOOD_DOC + " 12 34 56 78 90" * 12, GOOD_DOC + " 12 34"),
    ("gopher_q_stop_words", "long", FILLER.replace(" and ", " plus "), GOOD_DOC),
    ("gopher_rep_dup_lines", "long", "\n".join([LINES[0]] * 3 + LINES[1:]), GOOD_DOC),
    ("gopher_rep_dup_paragraphs", "long", "\n\n".join([LINES[0]] * 3 + LINES[1:]), "\n\n".join(LINES)),
    ("gopher_rep_dup_line_chars", "long", "\n".join(LINES + [LINES[2]]), GOOD_DOC),
    ("gopher_rep_dup_paragraph_chars", "long", "\n\n".join(LINES + [LINES[2]]), "\n\n".join(LINES)),
    ("gopher_rep_top_2gram", "long", GOOD_DOC + " red wine" * 40, GOOD_DOC),
    ("gopher_rep_top_3gram", "long", GOOD_DOC + " big red wine" * 30, GOOD_DOC),
    ("gopher_rep_top_4gram", "long", GOOD_DOC + " very big red wine" * 25, GOOD_DOC),
    *[(f"gopher_rep_dup_{n}gram", "long", LINES[0] + " " + " ".join([SENTENCE] * 4), GOOD_DOC)
      for n in range(5, 11)],
    ("c4_sentences", "long", "The ferry left at noon. It came back at six.", GOOD_DOC),
    ("c4_lorem_ipsum", "long", GOOD_DOC + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", GOOD_DOC),
    ("c4_curly_bracket", "long", GOOD_DOC + "\nThe function returns { value } to the caller.", GOOD_DOC + "\nA brace {"),
    ("c4_javascript_lines", "long", GOOD_DOC + "\nPlease enable JavaScript in your browser to continue.", GOOD_DOC),
    ("c4_policy_lines", "long", GOOD_DOC + "\nBy using this site you accept our privacy policy and rules.", GOOD_DOC),
    ("fineweb_line_punct", "long", "\n".join(f"Section {i} of the annual report on harbour traffic" for i in range(9)), GOOD_DOC),
    ("fineweb_short_lines", "long", "\n".join(["Home", "About us", "Contact", "Shop", LINES[0]]), GOOD_DOC),
    ("fineweb_dup_line_chars", "long", GOOD_DOC + "\n" + LINES[1], GOOD_DOC),
    ("fineweb_newlines", "long", "\n".join(f"item {i}." for i in range(20)), GOOD_DOC),
    ("html_residue", "short", "Great <b>phone</b> &amp; case", "Great phone & case, 3 < 5"),
    ("url_spam", "short", "buy now http://deals.example.com/offer?id=12345 http://deals.example.com/x",
     "I compared prices on www.example.com before ordering this kettle and it arrived fast"),
    ("email_spam", "short", "cheap watches cheapdeals@spam-example.com", "size chart was wrong, I wrote to help@example.cn and they fixed my order quickly"),
    ("char_spam", "short", "好好好好好好好好好好好", "好好好好好好哈哈哈哈哈哈哈哈哈哈"),
    ("char_spam_punct", "short", "太差了!!!!!!!!!!!!", "一般的书。。。。。。质量还行！！！！！！"),
    ("symbol_garbage", "short", "#$%^&*@#$%^&*()", "好！！"),
    ("digit_garbage", "short", "1234567890 0987654321", "5星好评"),
    ("script_mismatch", "short", "Это очень хороший товар", "这个东西很好 good value"),
    ("char_repetition", "short", "东西不错，手感不错，东西不错，手感不错，东西不错，手感不错",
     "这个东西质量不错，物流也很快，下次还会再来买。"),
]


@pytest.mark.parametrize(("name", "profile", "bad", "good"), CASES, ids=[c[0] for c in CASES])
def test_rule_catches_bad_and_passes_good(name, profile, bad, good):
    assert flagged(name, bad, profile), f"{name} missed: {bad[:80]!r}"
    assert not flagged(name, good, profile), f"{name} flagged: {good[:80]!r}"


def test_every_rule_has_a_case():
    names = {r.name for r in text_rules(TextQualityConfig(profile="long"))}
    assert names == {c[0] for c in CASES}


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        ("Great <b>phone</b>", "html_residue"),
        ("好好好好好好好好好好好", "char_spam"),
        ("wow !!!!!!!!!!!!", "char_spam_punct"),
        ("win http://spam.example.com/a http://spam.example.com/b", "url_spam"),
        ("mail spam@example.com", "email_spam"),
        ("1234 5678 9012 3456", "digit_garbage"),
        ("@#$%^&*!~", "symbol_garbage"),
        ("هذا منتج جيد جدا", "script_mismatch"),
        ("This is great. This is great. This is great. This is great.", "char_repetition"),
    ],
)
def test_short_profile_catches_planted_defects(bad, name):
    assert flagged(name, bad, "short")


def test_short_profile_passes_ordinary_short_texts():
    cfg = TextQualityConfig(profile="short")
    texts = pd.Series(["外观漂亮，运行速度快，就是电池不太耐用。。。。。。", "送餐很快！！！！！！味道也不错",
                       "a gorgeous , witty , seductive movie .", "Oil prices rise as supply fears grow",
                       "还行", "ok", "看了上 ,就没兴趣看下了 ! 5分"])
    measures = measure_text(texts, cfg)
    active = [r for r in text_rules(cfg) if r.severity != OFF]
    bad = {r.name: texts[r.violations(measures)].tolist() for r in active if r.violations(measures).any()}
    assert bad == {}


def test_profiles_differ_and_carry_the_published_thresholds():
    long = {r.name: r for r in text_rules(TextQualityConfig(profile="long"))}
    short = {r.name: r for r in text_rules(TextQualityConfig(profile="short"))}
    assert long.keys() == short.keys()
    assert (long["gopher_q_word_count"].min_value, long["gopher_q_word_count"].max_value) == (50, 100_000)
    assert long["gopher_rep_top_2gram"].max_value == 0.20 and long["gopher_rep_dup_10gram"].max_value == 0.10
    assert long["gopher_q_word_count"].severity == QUARANTINE and short["gopher_q_word_count"].severity == OFF
    assert short["char_spam_punct"].max_value < long["char_spam_punct"].max_value
    for rule in long.values():
        assert rule.family == "noise" and "{" not in rule.text
        assert rule.column in MEASURES


def test_null_text_gives_nan_and_blank_text_is_measured():
    text = pd.Series([None, "", "   \n\t", np.nan, "fine text."], index=[10, 11, 12, 13, 14])
    measures = measure_text(text)
    assert list(measures.index) == [10, 11, 12, 13, 14]
    assert list(measures.columns) == list(MEASURES)
    assert (measures.dtypes == np.float32).all()
    assert measures.loc[[10, 13]].isna().all().all()
    # Blank text has no characters, words or sentences (so the long profile drops it), and no ratios.
    blank = measures.loc[[11, 12]]
    counts = ["chars", "words", "stop_words", "c4_kept_lines", "c4_sentences", "html_residue", "max_char_run"]
    assert (blank[counts] == 0).all().all()
    assert (blank["line_punct_frac"] == 0).all() and (blank["short_line_frac"] == 1).all()
    assert blank[["mean_word_length", "symbol_frac", "url_char_frac", "char_dup_10gram_frac"]].isna().all().all()
    assert measures.loc[14].notna().sum() > 30


def test_word_measures_are_nan_without_words():
    measures = measure_text(pd.Series(["!!! ???"]))
    assert np.isnan(measures.loc[0, "mean_word_length"]) and measures.loc[0, "words"] == 0
    assert measures.loc[0, "symbol_frac"] == 1.0


def test_script_shares_and_declared_languages():
    text = pd.Series(["这个 good", "Это товар"])
    zh_en = measure_text(text, TextQualityConfig(languages=["zh", "en"]))
    assert zh_en["han_frac"].tolist() == pytest.approx([2 / 6, 0.0])
    assert zh_en["foreign_script_frac"].tolist() == [0.0, 1.0]
    ru = measure_text(text, TextQualityConfig(languages=["ru"]))
    assert ru["foreign_script_frac"].tolist() == [1.0, 0.0]


def test_measures_match_gopher_definitions_on_a_crafted_text():
    text = "Dr. Smith's dog didn't bark... #1 U.S. fan!\nIt's 3.5 well-known km."
    m = measure_text(pd.Series([text])).iloc[0]
    # spaCy's English tokens: Dr. Smith 's dog did n't bark ... # 1 U.S. fan ! It 's 3.5 well - known km .
    assert m["words"] == 16  # tokens with a letter or digit
    assert m["hash_per_word"] == pytest.approx(1 / 21)
    assert m["ellipsis_per_word"] == pytest.approx(1 / 21)
    assert m["newline_per_word"] == pytest.approx(1 / 21)
    assert m["ellipsis_lines_frac"] == 0.0 and m["stop_words"] == 0


def test_char_runs_and_regex_counts():
    m = measure_text(pd.Series(["好好好！！！！ <br/> &nbsp; x@y.com http://a.example.org/p"])).iloc[0]
    assert (m["max_letter_run"], m["max_punct_run"], m["max_char_run"]) == (3, 4, 4)
    assert m["html_residue"] == 2
    assert m["email_char_frac"] == pytest.approx(7 / m["chars"]) and m["url_char_frac"] == pytest.approx(22 / m["chars"])


def test_config_is_checked():
    with pytest.raises(DoclifeError, match="profile"):
        TextQualityConfig(profile="medium")
    with pytest.raises(DoclifeError, match="xx"):
        TextQualityConfig(languages=["en", "xx"])
    with pytest.raises(DoclifeError, match="chunk_chars"):
        TextQualityConfig(chunk_chars=0)


def test_chunks_do_not_change_results():
    text = pd.Series([GOOD_DOC, "", "好好好好好好好好好好好", None, "a\n\nb\n\na", " \t ", "x" * 40] * 3)
    whole = measure_text(text)
    chunked = measure_text(text, TextQualityConfig(chunk_chars=50))
    pd.testing.assert_frame_equal(whole, chunked)


def test_agrees_with_datatrove_on_crafted_documents():
    datatrove = pytest.importorskip("datatrove.pipeline.filters")
    pytest.importorskip("spacy")
    from datatrove.data import Document

    docs = [GOOD_DOC, "The cat sat with the dog.", GOOD_DOC + " red wine" * 40, "\n".join([LINES[0]] * 3 + LINES[1:]),
            GOOD_DOC + "\nThe function returns { value } to the caller.", "The ferry left at noon. It came back at six.",
            " ".join(["to be or not so"] * 15), GOOD_DOC + " " + SENTENCE + " " + SENTENCE,
            *[case[2] for case in CASES if case[0].startswith("fineweb_")], " \t\n  "]
    cfg = TextQualityConfig(profile="long")
    measures = measure_text(pd.Series(docs), cfg)
    rules = text_rules(cfg)
    families = {"gopher_q_": datatrove.GopherQualityFilter(), "gopher_rep_": datatrove.GopherRepetitionFilter(),
                "c4_": datatrove.C4QualityFilter(), "fineweb_": datatrove.FineWebQualityFilter()}
    for prefix, flt in families.items():
        chosen = [r for r in rules if r.name.startswith(prefix) and r.name not in ("c4_javascript_lines", "c4_policy_lines")]
        ours = ~pd.concat([r.violations(measures) for r in chosen], axis=1).any(axis=1)
        theirs = [flt.filter(Document(text=d, id=str(i))) is True for i, d in enumerate(docs)]
        assert ours.tolist() == theirs, prefix
