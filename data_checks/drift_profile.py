"""What a snapshot stores of its corpus for the next drift check, and the statistics that compare two corpora.

A profile (`profile`) holds the label distribution, every distinct text length with its count, the
script mix and the most frequent tokens; `psi`, `ks_statistic` and `new_token_share` (or
`new_token_share_of_counts`) compare a new corpus with it. `ProfileBuilder.count_frame` gives a new
corpus's counts as a small table, one row per distinct value, which data_checks.drift's expectations
read. Plain numpy, no Great Expectations: every stage that reads params.yaml builds a DriftConfig, and
the snapshot stage writes a profile, so neither pays GX's import (2-3 s). data_checks.drift runs these
comparisons as GX expectations.
"""

from __future__ import annotations

import functools
import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_checks.config import need
from data_checks.io import DoclifeError, read_json, write_json

PROFILE_FORMAT = "doclife-drift-profile"
PROFILE_VERSION = 1
RULES = ("label_drift", "length_drift", "script_drift", "new_vocabulary")
SEVERITIES = ("warn", "fail")
SCRIPTS = ("han", "latin", "mixed", "other")
MISSING_LABEL = "<missing>"
PSI_EPSILON = 1e-4
"""Share a category absent on one side is given so PSI stays finite: a category new at 1% adds 0.05, at 5% 0.31."""
LENGTH_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

# The same letter classes and cut-offs as flows.slices.script_of, so drift and the gate's slices agree.
_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_LATIN_RANGES = ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F))
# Characters of a word after lowercasing: ASCII digits and letters, Latin-1 and Latin Extended-A/B letters.
_WORD_RANGES = ((0x30, 0x39), (0x61, 0x7A), (0xDF, 0xF6), (0xF8, 0xFF), (0x100, 0x24F))


def _default_length_bins() -> list[int]:
    # Half-octave steps from 1 to 4096 characters: equal resolution for tweets and articles alike.
    edges = sorted({int(round(2 ** (k / 2))) for k in range(0, 25)})
    return [0, *edges]


@dataclass
class DriftConfig:
    """How a new corpus is compared with the previous snapshot (`validate.drift` in params.yaml)."""

    psi_max: float = 0.2
    """Largest accepted population stability index of the label and script distributions. The industry
    rule of thumb (N. Siddiqi, "Credit Risk Scorecards", Wiley, 2006) reads below 0.1 as stable, 0.1-0.25
    as some change, above 0.25 as a significant shift; 0.2 flags a shift a little before it is
    "significant". It is an effect size: with no drift, PSI / (1/n + 1/m) follows chi-square with one
    degree of freedom less than the categories (B. Yurdakul, "Statistical properties of the population
    stability index", Western Michigan University, 2018), so sampling noise alone stays below 0.01 for
    corpora of a few thousand documents."""
    ks_max: float = 0.1
    """Largest accepted Kolmogorov-Smirnov statistic of text lengths: the share of documents shorter than
    any given length may move by at most 10 points. An effect size, not a p-value (on 10^4+ documents a
    p-value flags shifts of a point or two); sampling noise alone, c(alpha) * sqrt(2/n) for n documents
    per side, stays below 0.1 from about 370 documents (alpha 5%) or 760 (alpha 0.1%)."""
    new_vocabulary_max: float = 0.05
    """Largest accepted share of the new corpus's tokens that are not in the stored vocabulary, beyond the
    share expected by chance. Random halves of real corpora stay at or below 0.024; news vs
    encyclopedia (AG News -> DBpedia) reaches 0.14, movie reviews vs news 0.12 to 0.23."""
    severity: str = "warn"
    """warn: drift is reported (and the gate refuses over-budget drift); fail: over-budget drift also
    fails the check."""
    vocabulary_size: int = 50000
    """How many of the most frequent tokens the stored profile keeps (the "previous vocabulary")."""
    length_bins: list[int] = field(default_factory=_default_length_bins)
    """Edges of the stored length histogram in characters, increasing from 0; the last bin is open."""
    rules: list[str] = field(default_factory=lambda: list(RULES))
    """Which comparisons run: any of label_drift, length_drift, script_drift, new_vocabulary."""

    def __post_init__(self) -> None:
        need(self.psi_max > 0, "validate.drift", f"psi_max must be > 0, got {self.psi_max}")
        need(0 < self.ks_max <= 1, "validate.drift", f"ks_max must be in (0, 1], got {self.ks_max}")
        need(0 < self.new_vocabulary_max <= 1, "validate.drift", f"new_vocabulary_max must be in (0, 1], got {self.new_vocabulary_max}")
        need(self.severity in SEVERITIES, "validate.drift", f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        need(self.vocabulary_size >= 1, "validate.drift", f"vocabulary_size must be >= 1, got {self.vocabulary_size}")
        self.length_bins = [int(e) for e in self.length_bins]
        need(
            len(self.length_bins) >= 2 and self.length_bins[0] == 0 and all(np.diff(self.length_bins) > 0),
            "validate.drift",
            f"length_bins must increase strictly from 0 and have at least 2 edges, got {self.length_bins}",
        )
        self.rules = [str(r) for r in self.rules]
        unknown = sorted(set(self.rules) - set(RULES))
        need(not unknown, "validate.drift", f"unknown rule(s) {', '.join(unknown)} (expected any of {', '.join(RULES)})")

    def threshold(self, rule: str) -> float:
        """The budget of one rule, in the unit of its observed value."""
        return {"label_drift": self.psi_max, "script_drift": self.psi_max, "length_drift": self.ks_max,
                "new_vocabulary": self.new_vocabulary_max}[rule]



# ---------------------------------------------------------------------------------------------------
# Measures (vectorised: one pass over the concatenated text, no per-document Python)


def _texts(texts: pd.Series) -> list[str]:
    # A missing text counts as empty: length 0, script "other", no tokens.
    missing = texts.isna().to_numpy()
    return [("" if gone else str(t)) for t, gone in zip(texts.tolist(), missing, strict=True)]


@functools.cache
def _table(ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    # One flag per Unicode code point (1.1 MB): a lookup is one gather instead of two compares per range.
    table = np.zeros(0x110000, dtype=bool)
    for low, high in ranges:
        table[low : high + 1] = True
    return table


def _in_ranges(codes: np.ndarray, ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    return _table(ranges)[codes]


def _code_points(text: str) -> np.ndarray:
    # UTF-32 has one unit per code point, so offsets in the array are offsets in the Python string.
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass
class Scan:
    """What one pass over a column of texts measures."""

    lengths: np.ndarray
    """Characters per text (int64, one per text)."""
    scripts: np.ndarray
    """Index into SCRIPTS per text (int8)."""
    tokens: Counter[str] | None
    """How often each token occurs over all texts (None when not asked for)."""


def scan(texts: pd.Series, tokens: bool = True) -> Scan:
    """Lengths, scripts and (optionally) token counts of `texts`, from the texts joined into one string.

    Script: han when >= 80% of a text's Han + Latin letters are Han, latin when <= 20%, mixed between,
    other when it has neither (the rule of flows.slices.script_of). Tokens: single Han characters and
    maximal runs of lowercased Latin letters and ASCII digits.
    """
    values = _texts(texts)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    # "\n" ends every text, so no word spans two documents. Shape: (total characters + texts - 1,).
    joined = "\n".join(values)
    codes = _code_points(joined)
    # The text each code point belongs to (its "\n" separator included); same shape as `codes`.
    owner = np.repeat(np.arange(len(values), dtype=np.int32), lengths + 1)[: len(codes)]
    han_mask = _in_ranges(codes, _HAN_RANGES)

    def per_text(mask: np.ndarray) -> np.ndarray:
        return np.bincount(owner[mask], minlength=len(values))

    han, latin = per_text(han_mask), per_text(_in_ranges(codes, _LATIN_RANGES))
    letters = han + latin
    share = np.divide(han, letters, out=np.zeros(len(han)), where=letters > 0)
    script = np.select([letters == 0, share >= 0.8, share <= 0.2], [3, 0, 1], default=2).astype(np.int8)

    counts: Counter[str] | None = None
    if tokens:
        counts = Counter()
        han_values, han_freq = np.unique(codes[han_mask], return_counts=True)
        counts.update(dict(zip(map(chr, han_values.tolist()), han_freq.tolist(), strict=True)))
        # Words: blank out every non-word character of the lowercased text and split on the blanks;
        # far faster than a regex over millions of words.
        low = _code_points(joined.lower()).copy()
        low[~_in_ranges(low, _WORD_RANGES)] = 0x20
        counts.update(low.tobytes().decode("utf-32-le").split())
    return Scan(lengths, script, counts)


def scripts(texts: pd.Series) -> pd.Series:
    """han, latin, mixed or other per text (see `scan`)."""
    return pd.Series(np.asarray(SCRIPTS, dtype=object)[scan(texts, tokens=False).scripts], index=texts.index)


def token_counts(texts: pd.Series) -> Counter[str]:
    """How often each token occurs in `texts`: Han characters and lowercased Latin words/numbers."""
    counts = scan(texts).tokens
    assert counts is not None
    return counts


def with_missing_labels(labels: pd.Series) -> pd.Series:
    """Labels as strings, a missing one as its own category (MISSING_LABEL)."""
    return labels.astype(object).where(labels.notna(), MISSING_LABEL).astype(str)


def _quantile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """np.quantile (linear) of the sorted sample in which each of `values` occurs `counts` times."""
    position = (int(counts.sum()) - 1) * q
    rank = np.cumsum(counts)  # values[i] holds the ranks rank[i - 1] .. rank[i] - 1
    low, high = (values[np.searchsorted(rank, int(r), side="right")] for r in (np.floor(position), np.ceil(position)))
    return float(low + (high - low) * (position - np.floor(position)))


class ProfileBuilder:
    """A profile built batch by batch: every part is a count that adds up (labels, lengths, scripts, tokens),
    so the profile of a corpus is the sum of its batches' and memory grows with the distinct lengths and
    tokens, not with the documents."""

    def __init__(self, cfg: DriftConfig) -> None:
        self.cfg = cfg
        self.rows = 0
        self.labels: Counter[str] = Counter()
        self.splits: Counter[str] | None = None
        self.lengths: Counter[int] = Counter()
        self.scripts = np.zeros(len(SCRIPTS), np.int64)
        self.tokens: Counter[str] = Counter()

    def add(self, frame: pd.DataFrame) -> ProfileBuilder:
        """Count one batch of a corpus table (columns text, label and optionally split)."""
        missing = [c for c in ("text", "label") if c not in frame.columns]
        if missing:
            raise DoclifeError(f"<frame>: cannot profile a table without columns {', '.join(missing)}")
        measured = scan(frame["text"])
        assert measured.tokens is not None
        self.rows += len(frame)
        self.labels.update(with_missing_labels(frame["label"]).value_counts().to_dict())
        if "split" in frame.columns:
            self.splits = (self.splits or Counter()) + Counter(frame["split"].astype(str).value_counts().to_dict())
        values, counts = np.unique(measured.lengths, return_counts=True)
        self.lengths.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
        self.scripts += np.bincount(measured.scripts, minlength=len(SCRIPTS))
        self.tokens.update(measured.tokens)
        return self

    def count_frame(self) -> pd.DataFrame:
        """Everything counted so far as one long table with columns label, length, script, token and count.

        One row per distinct label (a missing one as MISSING_LABEL), per distinct length, per script that
        occurs and per distinct token; each row sets its own dimension's column and leaves the other three
        null, and `count` (int64) is how many documents (tokens, for a token row) have that value. Its size
        follows the distinct values, never the documents.
        """
        # Labels and tokens in the order first counted: for a single batch that is the order a scan of the
        # whole table gives, so ties among the most frequent new tokens come out as they always did.
        labels, tokens, lengths = list(self.labels), list(self.tokens), sorted(self.lengths)
        scripts = [s for s, c in zip(SCRIPTS, self.scripts.tolist(), strict=True) if c]
        counts = np.array([*self.labels.values(), *(self.lengths[v] for v in lengths),
                           *(int(c) for c in self.scripts if c), *self.tokens.values()], np.int64)
        rows = len(counts)
        first = {"label": 0, "length": len(labels), "script": len(labels) + len(lengths),
                 "token": len(labels) + len(lengths) + len(scripts)}

        def strings(name: str, values: list[str]) -> pd.Series:
            # Object, not pandas' str dtype (which it would infer): the column points at the builder's own
            # strings instead of copying them, and is the same dtype when empty.
            column = np.full(rows, None, dtype=object)
            column[first[name] : first[name] + len(values)] = values
            return pd.Series(column, dtype=object, copy=False)

        own = slice(first["length"], first["length"] + len(lengths))
        length_values, length_missing = np.zeros(rows, np.int64), np.ones(rows, bool)
        length_values[own], length_missing[own] = lengths, False
        return pd.DataFrame({
            "label": strings("label", labels),
            "length": pd.arrays.IntegerArray(length_values, length_missing),
            "script": strings("script", scripts),
            "token": strings("token", tokens),
            "count": counts,
        })

    def result(self) -> dict:
        """The JSON-serialisable profile of everything added."""
        n, tokens = self.rows, self.tokens
        values = np.array(sorted(self.lengths), np.int64)
        counts = np.array([self.lengths[v] for v in values.tolist()], np.int64)
        edges = np.asarray(self.cfg.length_bins)
        # Bin i holds edges[i] <= length < edges[i+1]; the last bin is open-ended.
        histogram = np.bincount(np.searchsorted(edges, values, side="right") - 1, weights=counts, minlength=len(edges))
        total = sum(tokens.values())
        # Ties broken by the token, so the kept vocabulary does not depend on how the corpus was batched.
        kept = heapq.nsmallest(self.cfg.vocabulary_size, tokens.items(), key=lambda item: (-item[1], item[0]))
        out: dict[str, Any] = {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "rows": int(n),
            "labels": _distribution(self.labels),
            "length": {
                "unit": "characters",
                "mean": float((values * counts).sum() / n) if n else 0.0,
                "max": int(values[-1]) if n else 0,
                "quantiles": {str(q): _quantile(values, counts, q) if n else 0.0 for q in LENGTH_QUANTILES},
                "bin_edges": [int(e) for e in edges],
                "histogram": [int(c) for c in histogram],
                # Every distinct length with its count: the exact distribution the KS statistic needs.
                "values": [int(v) for v in values],
                "counts": [int(c) for c in counts],
            },
            "script": {"values": list(SCRIPTS), "counts": [int(c) for c in self.scripts]},
            "vocabulary": {
                "tokens": [t for t, _ in kept],
                "counts": [int(c) for _, c in kept],
                "total_tokens": int(total),
                "distinct_tokens": len(tokens),
                # Share of the corpus's own tokens the kept vocabulary covers.
                "coverage": float(sum(c for _, c in kept) / total) if total else 1.0,
                # Good-Turing: the share of tokens seen once estimates the share of a new sample never seen.
                "hapax_share": float(sum(1 for c in tokens.values() if c == 1) / total) if total else 0.0,
            },
        }
        if self.splits is not None:
            out["splits"] = _distribution(self.splits)
        return out


def _distribution(counts: Counter[str]) -> dict[str, list]:
    ordered = sorted(counts)
    return {"values": [str(v) for v in ordered], "counts": [int(counts[v]) for v in ordered]}


def profile(frame: pd.DataFrame, cfg: DriftConfig) -> dict:
    """A JSON-serialisable profile of a corpus table (columns text, label and optionally split)."""
    return ProfileBuilder(cfg).add(frame).result()


def write_profile(path: Path | str, data: dict) -> None:
    """Write a profile as JSON, atomically."""
    write_json(path, data)


def read_profile(path: Path | str) -> dict | None:
    """The profile stored at `path`, or None when there is none (no previous snapshot)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ValueError as err:
        raise DoclifeError(f"{path}: not a drift profile (invalid JSON: {err})") from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise DoclifeError(f"{path}: not a drift profile (format is not {PROFILE_FORMAT!r})")
    if data.get("version") != PROFILE_VERSION:
        raise DoclifeError(f"{path}: drift profile version {data.get('version')!r} is not supported "
                           f"(expected {PROFILE_VERSION})")
    return data

# ---------------------------------------------------------------------------------------------------
# Statistics


def psi(reference: dict[str, float], observed: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Population stability index sum((o - r) * ln(o / r)) over the union of categories, and each
    category's term; shares below PSI_EPSILON are raised to it so an unseen category stays finite."""
    keys = sorted(set(reference) | set(observed))
    r = np.maximum([reference.get(k, 0.0) for k in keys], PSI_EPSILON)
    o = np.maximum([observed.get(k, 0.0) for k in keys], PSI_EPSILON)
    terms = (o - r) * np.log(o / r)
    return float(terms.sum()), dict(zip(keys, (float(t) for t in terms), strict=True))


def shares(values: list[str], weights: list[float]) -> dict[str, float]:
    """Each value's share of the total weight ({} when the total is 0)."""
    total = float(sum(weights))
    return {str(v): float(w) / total for v, w in zip(values, weights, strict=True)} if total else {}


def ks_statistic(values: np.ndarray, reference_values: list[int], reference_counts: list[int],
                 weights: np.ndarray | None = None) -> float:
    """Largest gap between the empirical CDFs of `values` and of the reference (exact for discrete data).

    `weights` says how often each of `values` occurs (distinct values with their counts, say); None counts
    each once.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.ones(len(values), np.int64) if weights is None else np.asarray(weights)
    if weights.sum() == 0 or sum(reference_counts) == 0:
        return 0.0
    ref_v = np.asarray(reference_values, dtype=np.float64)
    ref_cdf = np.cumsum(reference_counts) / float(sum(reference_counts))
    new_v, where = np.unique(values, return_inverse=True)
    # Integer weights stay integers, so the CDF is the same to the last bit as from the repeated values.
    new_c = np.zeros(len(new_v), weights.dtype)
    np.add.at(new_c, where, weights)
    new_cdf = np.cumsum(new_c) / float(new_c.sum())
    # Both CDFs are steps that jump only at their own values: the supremum is reached at one of them.
    points = np.union1d(ref_v, new_v)

    def at(v: np.ndarray, cdf: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(v, points, side="right") - 1
        return np.where(idx >= 0, cdf[np.clip(idx, 0, None)], 0.0)

    return float(np.abs(at(ref_v, ref_cdf) - at(new_v, new_cdf)).max())


def new_token_share(texts: pd.Series, vocabulary: list[str], top: int = 10) -> tuple[float, dict[str, int], int]:
    """(share of tokens of `texts` not in `vocabulary`, the `top` most frequent of them, token count)."""
    return new_token_share_of_counts(token_counts(texts), vocabulary, top)


def new_token_share_of_counts(counts: Mapping[str, int], vocabulary: Iterable[str],
                              top: int = 10) -> tuple[float, dict[str, int], int]:
    """`new_token_share` of a corpus given as how often each token occurs; ties among the `top` keep the
    order of `counts`."""
    total = sum(counts.values())
    known = set(vocabulary)
    new = Counter({t: c for t, c in counts.items() if t not in known})
    share = sum(new.values()) / total if total else 0.0
    return float(share), dict(new.most_common(top)), int(total)

