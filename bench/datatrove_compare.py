"""Our Gopher/C4 measures + long-profile rules against datatrove's filters, on real English documents.

In one run on the English documents of dbpedia_sub.csv and agnews_sub.csv: datatrove 0.10.1's
GopherQualityFilter, GopherRepetitionFilter and C4QualityFilter (defaults, each called through `filter`
on a fresh Document) against `measure_text` + the long profile's rules of the same family. Reports the
docs/s of each, their ratio, and per filter the share of documents where datatrove keeps iff we keep.

    python -m bench.datatrove_compare [--limit N]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from bench.common import DATASETS, save_result
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="documents per corpus (default: all)")
    args = parser.parse_args(argv)
    texts = load_documents(args.limit)
    theirs, their_seconds = datatrove_decisions(texts)
    ours, our_seconds = our_decisions(texts)
    n = len(texts)
    rows = {}
    for family in FAMILIES:
        agree = sum(a == b for a, b in zip(theirs[family], ours[family])) / n
        rows[family] = {
            "datatrove_docs_per_s": round(n / their_seconds[family], 1),
            "agreement": round(agree, 4),
            "datatrove_kept": round(sum(theirs[family]) / n, 4),
            "ours_kept": round(sum(ours[family]) / n, 4),
        }
    combined = n / sum(their_seconds.values())
    result = {
        "documents": n,
        "filters": rows,
        "datatrove_combined_docs_per_s": round(combined, 1),
        "ours_docs_per_s": round(n / our_seconds, 1),
        "speedup": round((n / our_seconds) / combined, 1),
        "note": "ours = measure_text (every measure) + the long profile's Gopher and C4 rules; one process, one core",
    }
    print(f"{'filter':<20}{'datatrove docs/s':>18}{'kept dt':>9}{'kept ours':>10}{'agree':>8}")
    for family, row in rows.items():
        print(f"{family:<20}{row['datatrove_docs_per_s']:>18}{row['datatrove_kept']:>9}{row['ours_kept']:>10}{row['agreement']:>8}")
    print(f"{n} documents: datatrove combined {combined:.0f} docs/s, ours {n / our_seconds:.0f} docs/s, "
          f"speed-up {result['speedup']}x")
    save_result("datatrove", result)
    return result


if __name__ == "__main__":
    main()
