"""Drift of a new corpus against the previous snapshot, checked as Great Expectations expectations.

Each snapshot stores a profile of its corpus (`profile`): label distribution, text lengths, the script
mix and the most frequent tokens. A new corpus is compared with the previous snapshot's profile
through four expectations parameterised from that profile:

- label_drift: PSI of the label distribution (missing labels count as their own category);
- length_drift: two-sample Kolmogorov-Smirnov statistic of the text length in characters, computed
  exactly (the profile keeps the count of every distinct length);
- script_drift: PSI of the per-document script (han, latin, mixed, other);
- new_vocabulary: share of the new corpus's tokens whose token is not in the stored vocabulary, beyond
  the share expected by chance: the tokens the stored vocabulary leaves out plus the Good-Turing
  estimate of unseen tokens (the reference's share of tokens seen exactly once; I. J. Good, 1953).
  Without that correction a corpus drawn from the very same source would "drift" whenever it is
  small: a 10% sample of a news corpus finds 21% of the other 90%'s tokens new.

Tokens are single Han characters (CJK Unified Ideographs, Extension A and Compatibility blocks) and
maximal runs of lowercased Latin letters and ASCII digits ("iPhone12" -> "iphone12"); other scripts
yield no tokens, punctuation and whitespace separate them.

No built-in expectation fits: ExpectColumnKLDivergenceToBeLessThan measures a one-sided KL divergence
and turns an unseen category into an infinite value, and GX's KS expectations test a p-value, which
for corpora of 10^4+ documents flags shifts too small to matter. The metrics and expectations below
are registered with GX when this module is imported, so they run in a Checkpoint and render in Data
Docs like the built-in ones.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# Must be set before the first import of great_expectations, which reads it at import time.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import ColumnAggregateExpectation  # noqa: E402
from great_expectations.expectations.metrics.column_aggregate_metric_provider import (  # noqa: E402
    ColumnAggregateMetricProvider,
    column_aggregate_value,
)
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent  # noqa: E402
from great_expectations.render.renderer.renderer import renderer  # noqa: E402
from great_expectations.render.renderer_configuration import RendererConfiguration, RendererValueType  # noqa: E402

from data_checks.config import need  # noqa: E402
from data_checks.io import DoclifeError, read_json, write_json  # noqa: E402

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


def _labels(labels: pd.Series) -> pd.Series:
    return labels.astype(object).where(labels.notna(), MISSING_LABEL).astype(str)


def _distribution(values: pd.Series) -> dict[str, list]:
    counts = values.value_counts().sort_index()
    return {"values": [str(v) for v in counts.index], "counts": [int(c) for c in counts]}


def profile(frame: pd.DataFrame, cfg: DriftConfig) -> dict:
    """A JSON-serialisable profile of a corpus table (columns text, label and optionally split)."""
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DoclifeError(f"<frame>: cannot profile a table without columns {', '.join(missing)}")
    measured = scan(frame["text"])
    lengths, tokens = measured.lengths, measured.tokens
    assert tokens is not None
    n = len(lengths)
    values, counts = np.unique(lengths, return_counts=True)
    edges = np.asarray(cfg.length_bins)
    # Bin i holds edges[i] <= length < edges[i+1]; the last bin is open-ended.
    histogram = np.bincount(np.searchsorted(edges, lengths, side="right") - 1, minlength=len(edges))
    total = sum(tokens.values())
    kept = tokens.most_common(cfg.vocabulary_size)
    script_counts = np.bincount(measured.scripts, minlength=len(SCRIPTS))
    out: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "rows": int(len(frame)),
        "labels": _distribution(_labels(frame["label"])),
        "length": {
            "unit": "characters",
            "mean": float(lengths.mean()) if n else 0.0,
            "max": int(lengths.max()) if n else 0,
            "quantiles": {str(q): float(np.quantile(lengths, q)) if n else 0.0 for q in LENGTH_QUANTILES},
            "bin_edges": [int(e) for e in edges],
            "histogram": [int(c) for c in histogram],
            # Every distinct length with its count: the exact distribution the KS statistic needs.
            "values": [int(v) for v in values],
            "counts": [int(c) for c in counts],
        },
        "script": {"values": list(SCRIPTS), "counts": [int(c) for c in script_counts]},
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
    if "split" in frame.columns:
        out["splits"] = _distribution(frame["split"].astype(str))
    return out


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


def _shares(values: list[str], weights: list[float]) -> dict[str, float]:
    total = float(sum(weights))
    return {str(v): float(w) / total for v, w in zip(values, weights, strict=True)} if total else {}


def ks_statistic(values: np.ndarray, reference_values: list[int], reference_counts: list[int]) -> float:
    """Largest gap between the empirical CDFs of `values` and of the reference (exact for discrete data)."""
    if len(values) == 0 or sum(reference_counts) == 0:
        return 0.0
    ref_v = np.asarray(reference_values, dtype=np.float64)
    ref_cdf = np.cumsum(reference_counts) / float(sum(reference_counts))
    new_v, new_c = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    new_cdf = np.cumsum(new_c) / float(new_c.sum())
    # Both CDFs are steps that jump only at their own values: the supremum is reached at one of them.
    points = np.union1d(ref_v, new_v)

    def at(v: np.ndarray, cdf: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(v, points, side="right") - 1
        return np.where(idx >= 0, cdf[np.clip(idx, 0, None)], 0.0)

    return float(np.abs(at(ref_v, ref_cdf) - at(new_v, new_cdf)).max())


def new_token_share(texts: pd.Series, vocabulary: list[str], top: int = 10) -> tuple[float, dict[str, int], int]:
    """(share of tokens of `texts` not in `vocabulary`, the `top` most frequent of them, token count)."""
    counts = token_counts(texts)
    total = sum(counts.values())
    known = set(vocabulary)
    new = Counter({t: c for t, c in counts.items() if t not in known})
    share = sum(new.values()) / total if total else 0.0
    return float(share), dict(new.most_common(top)), int(total)


# ---------------------------------------------------------------------------------------------------
# Great Expectations metrics and expectations (registered with GX when their classes are created)


class ColumnPsi(ColumnAggregateMetricProvider):
    """PSI of a categorical column's distribution against reference shares."""

    metric_name = "column.doclife_psi"
    value_keys = ("reference_values", "reference_weights")

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, reference_values: list[str], reference_weights: list[float], **kwargs: Any) -> dict:
        counts = _labels(column).value_counts()
        observed = _shares(list(counts.index), list(counts.to_numpy()))
        value, terms = psi(_shares(reference_values, reference_weights), observed)
        return {"psi": value, "observed_shares": observed, "terms": terms}


class ColumnKsStatistic(ColumnAggregateMetricProvider):
    """Two-sample KS statistic of a numeric column against a reference given as distinct values and counts."""

    metric_name = "column.doclife_ks_statistic"
    value_keys = ("reference_values", "reference_counts")

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, reference_values: list[int], reference_counts: list[int], **kwargs: Any) -> float:
        values = pd.to_numeric(column, errors="coerce").dropna().to_numpy()
        return ks_statistic(values, reference_values, reference_counts)


class ColumnNewTokenShare(ColumnAggregateMetricProvider):
    """Share of a text column's tokens that are not in a reference vocabulary (tokens joined by newlines)."""

    metric_name = "column.doclife_new_token_share"
    value_keys = ("vocabulary",)

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, vocabulary: str, **kwargs: Any) -> dict:
        share, top, total = new_token_share(column, vocabulary.split("\n"))
        return {"share": share, "top_new_tokens": top, "tokens": total}


class _DriftExpectation(ColumnAggregateExpectation):
    """A drift statistic of one column must not exceed `threshold`; the statistic comes from one metric."""

    threshold: float
    statistic: ClassVar[str] = ""
    """Key of the statistic in a dict-valued metric ("" when the metric is the number itself)."""
    summary: ClassVar[str] = ""
    """What is bounded, in words, for Data Docs."""

    @classmethod
    def is_abstract(cls) -> bool:
        # Only the concrete expectations (those naming a metric) go into GX's registry.
        return not cls.metric_dependencies

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        # The default templates print every keyword argument, which here includes the whole reference.
        renderer_configuration.add_param(name="column", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="threshold", param_type=RendererValueType.NUMBER)
        renderer_configuration.template_str = f"$column: {cls.summary} is at most $threshold"
        return renderer_configuration

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration: Any = None, result: Any = None,
                               runtime_configuration: dict | None = None) -> list[RenderedStringTemplateContent]:
        # Data Docs call this with a configuration, a result, or (on some paths) neither.
        if configuration is None and result is not None:
            configuration = result.expectation_config
        kwargs = configuration.kwargs if configuration is not None else {}
        template = {"template": f"$column: {cls.summary} is at most $threshold",
                    "params": {"column": kwargs.get("column", "?"), "threshold": kwargs.get("threshold", "?")}}
        return [RenderedStringTemplateContent(content_block_type="string_template", string_template=template)]

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> dict:
        value = metrics[self.metric_dependencies[0]]
        details = {k: v for k, v in value.items() if k != self.statistic} if self.statistic else {}
        observed = float(value[self.statistic]) if self.statistic else float(value)
        threshold = float(self.configuration.kwargs["threshold"])
        return {"success": observed <= threshold, "result": {"observed_value": observed, "details": details}}


class ExpectColumnPsiToBeLessThan(_DriftExpectation):
    """The population stability index of a categorical column against reference shares is at most `threshold`."""

    reference_values: list[str]
    reference_weights: list[float]
    metric_dependencies = ("column.doclife_psi",)
    success_keys = ("reference_values", "reference_weights", "threshold")
    args_keys = ("column", "reference_values", "reference_weights", "threshold")
    statistic: ClassVar[str] = "psi"
    summary: ClassVar[str] = "population stability index against the previous snapshot"


class ExpectColumnKsStatisticToBeLessThan(_DriftExpectation):
    """The two-sample Kolmogorov-Smirnov statistic of a numeric column against a reference is at most `threshold`."""

    reference_values: list[int]
    reference_counts: list[int]
    metric_dependencies = ("column.doclife_ks_statistic",)
    success_keys = ("reference_values", "reference_counts", "threshold")
    args_keys = ("column", "reference_values", "reference_counts", "threshold")
    summary: ClassVar[str] = "Kolmogorov-Smirnov statistic against the previous snapshot"


class ExpectColumnNewTokenShareToBeLessThan(_DriftExpectation):
    """The share of a text column's tokens outside a reference vocabulary, less `expected_share` (the share
    expected by chance), is at most `threshold`."""

    vocabulary: str
    """The reference tokens joined by newlines: one string, because GX validates and copies the keyword
    arguments many times per run, which for a list of 50,000 strings costs seconds."""
    expected_share: float = 0.0
    metric_dependencies = ("column.doclife_new_token_share",)
    success_keys = ("vocabulary", "expected_share", "threshold")
    args_keys = ("column", "vocabulary", "expected_share", "threshold")
    summary: ClassVar[str] = "share of tokens new to the previous snapshot, beyond chance,"

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> dict:
        value = metrics[self.metric_dependencies[0]]
        expected = float(self.configuration.kwargs.get("expected_share", 0.0))
        # Less new vocabulary than chance predicts is no drift: the excess never goes below zero.
        observed = max(0.0, float(value["share"]) - expected)
        details = {"new_share": value["share"], "expected_share": expected, "tokens": value["tokens"],
                   "top_new_tokens": value["top_new_tokens"]}
        threshold = float(self.configuration.kwargs["threshold"])
        return {"success": observed <= threshold, "result": {"observed_value": observed, "details": details}}


# ---------------------------------------------------------------------------------------------------
# The drift check


@dataclass(frozen=True)
class DriftRule:
    """One drift comparison and the expectation that checks it."""

    name: str
    description: str
    expectation: gx.expectations.Expectation


def drift_rules(reference: dict, cfg: DriftConfig) -> list[DriftRule]:
    """The enabled drift rules, each with its expectation parameterised from the reference profile."""
    ref_rows = reference.get("rows", 0)
    vocabulary = reference["vocabulary"]
    # Tokens the stored vocabulary dropped plus the Good-Turing share of never-seen tokens (disjoint events).
    expected = round((1.0 - vocabulary["coverage"]) + vocabulary["hapax_share"], 6)
    specs = {
        "label_drift": (
            "label",
            f"PSI of the label distribution vs the previous snapshot ({ref_rows} rows) is at most {cfg.psi_max:g}",
            ExpectColumnPsiToBeLessThan,
            {"reference_values": reference["labels"]["values"], "reference_weights": reference["labels"]["counts"],
             "threshold": cfg.psi_max},
        ),
        "length_drift": (
            "length",
            f"KS statistic of text length (characters) vs the previous snapshot is at most {cfg.ks_max:g}",
            ExpectColumnKsStatisticToBeLessThan,
            {"reference_values": reference["length"]["values"], "reference_counts": reference["length"]["counts"],
             "threshold": cfg.ks_max},
        ),
        "script_drift": (
            "script",
            f"PSI of the script mix (han/latin/mixed/other per document) vs the previous snapshot is at most {cfg.psi_max:g}",
            ExpectColumnPsiToBeLessThan,
            {"reference_values": reference["script"]["values"], "reference_weights": reference["script"]["counts"],
             "threshold": cfg.psi_max},
        ),
        "new_vocabulary": (
            "text",
            f"share of tokens outside the previous snapshot's {len(vocabulary['tokens'])} most frequent tokens, "
            f"beyond the {expected:.2%} expected by chance, is at most {cfg.new_vocabulary_max:g}",
            ExpectColumnNewTokenShareToBeLessThan,
            {"vocabulary": "\n".join(vocabulary["tokens"]), "expected_share": expected, "threshold": cfg.new_vocabulary_max},
        ),
    }
    rules = []
    for name in (r for r in RULES if r in cfg.rules):
        column, description, kind, kwargs = specs[name]
        expectation = kind(column=column, **kwargs, meta={"rule": name, "severity": cfg.severity},
                           description=f"{name}: {description}")
        rules.append(DriftRule(name, description, expectation))
    return rules


def drift_expectations(reference: dict, cfg: DriftConfig) -> list[gx.expectations.Expectation]:
    """The GX expectations of the enabled drift rules (meta carries each rule's name and severity)."""
    return [r.expectation for r in drift_rules(reference, cfg)]


def add_drift_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The corpus plus the derived columns the drift expectations read: `length` and `script`."""
    measured = scan(frame["text"], tokens=False)
    out = frame.copy()
    out["length"] = measured.lengths
    out["script"] = np.asarray(SCRIPTS, dtype=object)[measured.scripts]
    return out


def _no_reference() -> dict:
    return {"reference": None, "message": "no previous snapshot: nothing to compare with", "rules": {},
            "score": 0.0, "budget": 1.0, "over_budget": False, "success": True, "failures": []}


def _run(context: Any, frame: pd.DataFrame, rules: list[DriftRule], build_docs: bool) -> dict[str, Any]:
    """Run the drift rules as one suite through a Checkpoint; {rule name: GX result}."""
    # One context may run the drift suite more than once (e.g. several corpora); GX names must be unique.
    taken = {c.name for c in context.checkpoints.all()}
    name = next(n for n in ("drift", *(f"drift_{k}" for k in range(2, 10**6))) if n not in taken)
    from data_checks.validate import run_checkpoint  # here: validate imports this module

    return run_checkpoint(context, name, frame, [r.expectation for r in rules], build_docs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round(float(value), 6)
    return value


def check_drift(frame: pd.DataFrame, reference: dict | None, cfg: DriftConfig, context: Any = None,
                data_docs_dir: Path | None = None) -> dict:
    """Compare a corpus table with the previous snapshot's profile through GX; a JSON-serialisable section.

    Per rule: severity, description, success, observed, threshold and details. `score` is the largest
    observed/threshold ratio (above `budget` = 1.0 means some rule is over its threshold, `over_budget`);
    `success` is False only when severity is fail and the drift is over budget. With no reference (the
    first snapshot) the section says so and passes. `context` is a GX context to run in (an ephemeral
    one when None, with a Data Docs site in `data_docs_dir` when given); a given context builds Data Docs
    into its "doclife" site when `data_docs_dir` is given.
    """
    if reference is None or not reference.get("rows"):
        # An empty previous snapshot has no distribution to compare with: the same as none.
        return _no_reference()
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DoclifeError(f"<frame>: cannot check drift of a table without columns {', '.join(missing)}")
    rules = drift_rules(reference, cfg)
    section: dict[str, Any] = {"reference": {"rows": reference.get("rows"), "version": reference.get("version")},
                               "rows": int(len(frame)), "rules": {}}
    if rules:
        if context is None:
            from data_checks.validate import _context  # here: validate may import this module

            context = _context(data_docs_dir)
        results = _run(context, add_drift_columns(frame.reset_index(drop=True)), rules, data_docs_dir is not None)
    ratios = [0.0]
    failures = []
    for rule in rules:
        result = results[rule.name]
        observed = float(result.result["observed_value"])
        threshold = cfg.threshold(rule.name)
        ratios.append(observed / threshold)
        section["rules"][rule.name] = {
            "severity": cfg.severity, "description": rule.description, "success": bool(result.success),
            "observed": round(observed, 6), "threshold": threshold,
            "details": _jsonable(result.result.get("details") or {}),
        }
        if not result.success:
            failures.append(f"{rule.name}: {observed:.4g} over {threshold:g} ({rule.description})")
    score = max(ratios)
    over = bool(score > 1.0)
    section.update(score=round(score, 6), budget=1.0, over_budget=over,
                   success=not (over and cfg.severity == "fail"), failures=failures)
    return section
