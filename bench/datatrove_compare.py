"""Our Gopher/C4 measures + long-profile rules against datatrove's filters, on real English documents.

In one run on the English documents of dbpedia_sub.csv and agnews_sub.csv: datatrove 0.10.1's
GopherQualityFilter, GopherRepetitionFilter and C4QualityFilter (defaults, each called through `filter`
on a fresh Document) against `measure_text` + the long profile's rules of the same family. Reports the
docs/s of each, their ratio, and per filter the share of documents where datatrove keeps iff we keep.

`doclife check` and the validate stage measure the cleaned text (the clean stage's Unicode NFKC, invisible
characters removed, whitespace runs collapsed and every line trimmed), so the agreement is also measured on
that path: both on the cleaned text, and what doclife decides on the cleaned text against what datatrove
decides on the raw text.

Also times measure_text alone on synthetic short documents (~60 characters, half Chinese, half English),
and reports the share of rows each short-profile noise rule flags on the real short corpora.

    python -m bench.datatrove_compare [--limit N] [--short-docs 1000000]
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import pandas as pd

from bench.common import DATASETS, save_result
from data_checks.clean import CleanConfig, clean_texts
from data_checks.text_quality import TextQualityConfig, measure_text, text_rules

FAMILIES = {"gopher_quality": "gopher_q_", "gopher_repetition": "gopher_rep_", "c4": "c4_"}
C4_DOCUMENT_RULES = ("c4_sentences", "c4_lorem_ipsum", "c4_curly_bracket")  # datatrove drops only lines for the others


def load_documents(limit: int | None) -> list[str]:
    """The texts of dbpedia_sub.csv then agnews_sub.csv (headerless: label, text), first `limit` of each."""
    texts: list[str] = []
    for name in ("dbpedia_sub.csv", "agnews_sub.csv"):
        path = DATASETS / name
        if not path.is_file():
            raise SystemExit(f"SKIP: {path} not found")
        frame = pd.read_csv(path, header=None, names=["label", "text"], dtype={"text": str})
        texts += frame["text"].dropna().astype(str).head(limit).tolist()
    return texts


def datatrove_decisions(texts: list[str]) -> tuple[dict[str, list[bool]], dict[str, float]]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

    filters = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(), "c4": C4QualityFilter()}
    filters["gopher_quality"].filter(Document(text="warm up the tokenizer", id="0"))  # spaCy loads lazily
    keep, seconds = {}, {}
    for name, flt in filters.items():
        start = time.perf_counter()
        keep[name] = [flt.filter(Document(text=t, id=str(i))) is True for i, t in enumerate(texts)]
        seconds[name] = time.perf_counter() - start
    return keep, seconds


def our_decisions(texts: list[str]) -> tuple[dict[str, list[bool]], float]:
    cfg = TextQualityConfig(profile="long", languages=["en"])
    rules = text_rules(cfg)
    measure_text(pd.Series(["Warm up the lookup tables."]), cfg)  # built once per process, like spaCy's load
    start = time.perf_counter()
    measures = measure_text(pd.Series(texts), cfg)
    keep = {}
    for family, prefix in FAMILIES.items():
        chosen = [r for r in rules if r.name.startswith(prefix) and (family != "c4" or r.name in C4_DOCUMENT_RULES)]
        bad = pd.Series(False, index=measures.index)
        for rule in chosen:
            bad |= rule.violations(measures)
        keep[family] = (~bad).tolist()
    return keep, time.perf_counter() - start


def cleaned(texts: list[str]) -> tuple[list[str], int]:
    """(the texts as the clean stage leaves them with its defaults, how many it changed)."""
    text, fixes = clean_texts(pd.Series(texts), CleanConfig())
    return text.tolist(), int(fixes.any(axis=1).sum())


def agreement(a: list[bool], b: list[bool]) -> float:
    return round(sum(x == y for x, y in zip(a, b)) / len(a), 4)


def synthetic_short_docs(n: int, seed: int = 0) -> list[str]:
    """n made-up short texts of about 60 characters: even rows Chinese-like, odd rows English-like."""
    rng = np.random.default_rng(seed)
    han = [chr(c) for c in rng.integers(0x4E00, 0x9FA5, 3000)] + ["，", "。", "！"] * 100
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, k)) for k in rng.integers(2, 9, 2000)]
    zh = rng.choice(han, (n // 2 + 1, 70))
    en = rng.choice(words, (n // 2 + 1, 13))
    docs = []
    for i in range(n):
        if i % 2 == 0:
            docs.append("".join(zh[i // 2, : 40 + i % 31]) + "。")
        else:
            docs.append(" ".join(en[i // 2, : 8 + i % 5]).capitalize() + ".")
    return docs


def time_short_docs(n: int) -> dict:
    texts = pd.Series(synthetic_short_docs(n))
    cfg = TextQualityConfig(profile="short")
    measure_text(texts.head(10), cfg)
    start = time.perf_counter()
    measures = measure_text(texts, cfg)
    seconds = time.perf_counter() - start
    mean_chars = float(texts.str.len().mean())
    print(f"{n} short documents (mean {mean_chars:.0f} chars): measured in {seconds:.1f} s "
          f"({n / seconds:.0f} docs/s, {measures.shape[1]} measures)")
    return {"documents": n, "mean_chars": round(mean_chars, 1), "seconds": round(seconds, 2), "docs_per_s": round(n / seconds)}


SHORT_CORPORA = {  # file -> (read_csv keyword arguments, text column)
    "online_shopping_10_cats.csv": ({}, "review"),
    "waimai_10k.csv": ({}, "review"),
    "sst2_train.tsv": ({"sep": "\t", "quoting": csv.QUOTE_NONE}, "sentence"),
    "agnews_sub.csv": ({"header": None, "names": ["label", "text"]}, "text"),
}


def short_profile_shares() -> dict:
    """Per real short corpus: the share of rows each active short-profile rule flags, and their union."""
    cfg = TextQualityConfig(profile="short", languages=["zh", "en"])
    rules = [r for r in text_rules(cfg) if r.severity != "off"]
    shares = {}
    for name, (kwargs, column) in SHORT_CORPORA.items():
        text = pd.read_csv(DATASETS / name, **kwargs)[column]
        measures = measure_text(text, cfg)
        flagged = pd.DataFrame({r.name: r.violations(measures) for r in rules})
        shares[name] = {"rows": len(text), **{r: round(float(flagged[r].mean()), 5) for r in flagged},
                        "any_rule": round(float(flagged.any(axis=1).mean()), 5)}
    table = pd.DataFrame(shares).T
    print((table.drop(columns="rows") * 100).round(3).to_string(), "\n(percent of rows flagged, short profile)")
    return shares


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="documents per corpus (default: all)")
    parser.add_argument("--short-docs", type=int, default=1_000_000, help="synthetic short documents to time (0: skip)")
    args = parser.parse_args(argv)
    texts = load_documents(args.limit)
    theirs, their_seconds = datatrove_decisions(texts)
    ours, our_seconds = our_decisions(texts)
    n = len(texts)
    clean, changed = cleaned(texts)
    theirs_clean, _ = datatrove_decisions(clean)
    ours_clean, _ = our_decisions(clean)
    rows = {}
    for family in FAMILIES:
        rows[family] = {
            "datatrove_docs_per_s": round(n / their_seconds[family], 1),
            "agreement": agreement(theirs[family], ours[family]),
            "agreement_both_cleaned": agreement(theirs_clean[family], ours_clean[family]),
            "agreement_ours_cleaned_vs_datatrove_raw": agreement(theirs[family], ours_clean[family]),
            "datatrove_kept": round(sum(theirs[family]) / n, 4),
            "ours_kept": round(sum(ours[family]) / n, 4),
        }
    combined = n / sum(their_seconds.values())
    result = {
        "documents": n,
        "changed_by_cleaning": changed,
        "filters": rows,
        "datatrove_combined_docs_per_s": round(combined, 1),
        "ours_docs_per_s": round(n / our_seconds, 1),
        "speedup": round((n / our_seconds) / combined, 1),
        "note": "ours = measure_text (every measure) + the long profile's Gopher and C4 rules; one process, one core",
    }
    print(f"{'filter':<20}{'datatrove docs/s':>18}{'kept dt':>9}{'kept ours':>10}{'agree':>8}{'cleaned':>9}{'ours cl/dt raw':>16}")
    for family, row in rows.items():
        print(f"{family:<20}{row['datatrove_docs_per_s']:>18}{row['datatrove_kept']:>9}{row['ours_kept']:>10}"
              f"{row['agreement']:>8}{row['agreement_both_cleaned']:>9}{row['agreement_ours_cleaned_vs_datatrove_raw']:>16}")
    print(f"cleaning changed {changed} of {n} documents")
    print(f"{n} documents: datatrove combined {combined:.0f} docs/s, ours {n / our_seconds:.0f} docs/s, "
          f"speed-up {result['speedup']}x")
    if args.short_docs:
        result["short_docs"] = time_short_docs(args.short_docs)
    result["short_profile_flagged_share"] = short_profile_shares()
    save_result("datatrove", result)
    return result


if __name__ == "__main__":
    main()
