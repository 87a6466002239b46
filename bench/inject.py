"""Defect injection: plant N defects of each kind at random rows of a clean corpus, run `doclife check`,
and report recall per kind (the planted row carries the expected rule) and the share of untouched rows
that were quarantined or warned about.

Clean corpora: the generated sample (clean by construction) and the online_shopping reviews as they are
(their own few natural defects count against us as false positives).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bench.common import DATASETS

N_PER_KIND = 50
SEED = 3
_LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in _LATIN}
_CYRILLIC = "очень хороший товар быстрая доставка рекомендую всем отличный магазин спасибо качество цена".split()


def _mojibake_latin(text: str) -> str:
    return "Ã©tÃ© cafÃ© " + text.encode("utf-8").decode("cp1252", errors="replace")


def _mojibake_gbk(text: str) -> str:
    return ("我很喜欢这个产品" + text).encode("utf-8").decode("gbk", errors="replace")


def _near(text: str) -> str:
    # A repost: punctuation added and, on longer texts, its first words repeated at the end. Both keep the
    # shingle sets' Jaccard above 0.8, clear of the 0.7 threshold (its estimate has sd ~0.04).
    return text + "!!" if len(text) < 60 else text + " " + text[:4]


# kind -> (expected rule in the report, how the row is made from a clean row (text, label) and the rng)
TextEdit = Callable[[str, random.Random], str | None]
TEXT_KINDS: dict[str, tuple[str, TextEdit]] = {
    "text_null": ("text_missing", lambda t, r: None),
    "text_whitespace": ("text_blank", lambda t, r: " \t  "),
    "invisible_only": ("text_invisible_only", lambda t, r: "\u200b\ufeff\u200b"),
    "bom": ("bom", lambda t, r: "\ufeff" + t),
    "zero_width": ("invisible", lambda t, r: t[:3] + "\u200b" + t[3:]),
    "control_char": ("control", lambda t, r: t[:3] + "\x07" + t[3:]),
    "fullwidth": ("unicode", lambda t, r: "".join(_FULLWIDTH.get(c, c) for c in t) + " ＡＢＣ１２３"),
    "html": ("html_residue", lambda t, r: f"<div class=\"c\">{t}</div>&nbsp;"),
    "char_spam": ("char_spam", lambda t, r: t + " " + "好" * 20),
    "mojibake_latin": ("mojibake", lambda t, r: _mojibake_latin(t)),
    "mojibake_gbk": ("mojibake", lambda t, r: _mojibake_gbk(t)),
    "too_long": ("text_too_long", lambda t, r: (t + " ") * (2100 // max(len(t), 1) + 1)),
    "url_spam": ("url_spam", lambda t, r: t[:12] + " http://cheap-deals.example.com/buy?id=123 www.example.net/x"),
    "wrong_script": ("script_mismatch", lambda t, r: " ".join(r.choices(_CYRILLIC, k=8))),
    "repetition": ("char_repetition", lambda t, r: (t[:16] + "，") * 6),
}
# kind -> expected rule; these copy a clean row (appended as a new row) or change its label.
ROW_KINDS = {
    "label_null": "label_missing",
    "label_unknown": "label_unknown",
    "label_flip": "label_noise",
    "duplicate_exact": "duplicate_exact",
    "duplicate_conflicting_label": "duplicate_conflicting_label",
    # An edited copy lands in its own hash split: a near duplicate in the same split, leakage in another.
    "near_duplicate": "near_duplicate|split_leakage",
}


def inject(clean: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(corpus with planted defects, planted rows: source_row, kind, rule, origin row or -1).

    `clean` has columns text, label. Every planted row is a different clean row, so kinds never overlap.
    """
    rng = random.Random(seed)
    labels = sorted(clean["label"].dropna().unique())
    frame = clean.reset_index(drop=True).copy()
    frame["text"] = frame["text"].astype(object)
    frame["label"] = frame["label"].astype(object)
    kinds = list(TEXT_KINDS) + list(ROW_KINDS)
    victims = rng.sample(range(len(frame)), n * len(kinds))
    planted, appended = [], []
    for k, kind in enumerate(kinds):
        for row in victims[k * n : (k + 1) * n]:
            text, label = frame.at[row, "text"], frame.at[row, "label"]
            if kind in TEXT_KINDS:
                rule, edit = TEXT_KINDS[kind]
                frame.at[row, "text"] = edit(text, rng)
                planted.append((row, kind, rule, -1))
            elif kind == "label_null":
                frame.at[row, "label"] = None
                planted.append((row, kind, ROW_KINDS[kind], -1))
            elif kind == "label_unknown":
                frame.at[row, "label"] = "not-a-label"
                planted.append((row, kind, ROW_KINDS[kind], -1))
            elif kind == "label_flip":
                frame.at[row, "label"] = rng.choice([x for x in labels if x != label])
                planted.append((row, kind, ROW_KINDS[kind], -1))
            elif kind == "near_duplicate":
                appended.append({"text": _near(text), "label": label, "_kind": kind, "_origin": row})
            else:
                other = label if kind == "duplicate_exact" else rng.choice([x for x in labels if x != label])
                appended.append({"text": text, "label": other, "_kind": kind, "_origin": row})
    for i, extra in enumerate(appended):
        planted.append((len(frame) + i, extra["_kind"], ROW_KINDS[extra["_kind"]], extra["_origin"]))
    frame = pd.concat([frame, pd.DataFrame(appended)[["text", "label"]]], ignore_index=True)
    return frame, pd.DataFrame(planted, columns=["source_row", "kind", "rule", "origin"])


def score(report: pd.DataFrame, planted: pd.DataFrame, rows: int) -> dict:
    """Recall per kind, and the share of untouched rows quarantined (or dropped) and warned about."""
    found = set(zip(report["source_row"].dropna().astype(int), report["rule"]))
    recall = {}
    for kind, group in planted.groupby("kind", sort=False):
        # A leak is set aside on its training side, which may be the copied row rather than the planted one.
        hits = sum(any((int(r), one) in found or (one == "split_leakage" and (int(o), one) in found)
                       for one in rules.split("|"))
                   for r, rules, o in zip(group["source_row"], group["rule"], group["origin"]))
        recall[kind] = round(hits / len(group), 4)
    touched = set(planted["source_row"]) | set(planted.loc[planted["origin"] >= 0, "origin"])
    untouched = report[report["source_row"].notna() & ~report["source_row"].isin(touched)]
    set_aside = untouched.loc[untouched["action"].isin(["quarantine", "drop"]), "source_row"].nunique()
    warned = untouched.loc[untouched["action"] == "warn", "source_row"].nunique()
    clean_rows = rows - len(touched)
    return {"recall": recall, "min_recall": min(recall.values()), "untouched_rows": clean_rows,
            "untouched_quarantined_share": round(set_aside / clean_rows, 5),
            "untouched_warned_share": round(warned / clean_rows, 5),
            "untouched_quarantined_by_rule": {str(k): int(v) for k, v in untouched.loc[
                untouched["action"].isin(["quarantine", "drop"]), "rule"].value_counts().items()}}


def _run(name: str, clean: pd.DataFrame, work: Path) -> dict:
    from data_checks.check import check
    from data_checks.config import IngestConfig, ValidateConfig

    corpus, planted = inject(clean, N_PER_KIND, SEED)
    path = work / f"inject_{name}.parquet"
    corpus.to_parquet(path, index=False)
    out = work / f"inject_{name}"
    labels = sorted(clean["label"].dropna().unique())  # declared: the planted unknown label is not among them
    check(path, IngestConfig(source=str(path)), ValidateConfig(), out, labels=labels)
    result = {"corpus": name, "rows": len(corpus), "per_kind": N_PER_KIND,
              **score(pd.read_parquet(out / "report.parquet"), planted, len(corpus))}
    print(f"inject {name}: min recall {result['min_recall']:.3f}, untouched quarantined "
          f"{result['untouched_quarantined_share']:.3%}, warned {result['untouched_warned_share']:.3%}")
    for kind, value in result["recall"].items():
        print(f"  {kind:30s} {value:.3f}")
    return result


def inject_benchmark(work: Path) -> list[dict]:
    from data_checks.config import SampleConfig
    from data_checks.sample_corpus import generate_sample_corpus

    results = [_run("sample", generate_sample_corpus(SampleConfig(n_docs=20_000, seed=5, defects_per_kind=0)), work)]
    shopping = DATASETS / "online_shopping_10_cats.csv"
    if shopping.is_file():
        raw = pd.read_csv(shopping, dtype=str, keep_default_na=False, na_values=[""])
        results.append(_run("online_shopping", raw[["review", "cat"]].set_axis(["text", "label"], axis=1), work))
    return results
