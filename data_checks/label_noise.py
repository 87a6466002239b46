"""Likely mislabelled rows, found by confident learning (Northcutt et al., 2021) on out-of-fold predictions.

Every checked row gets a predicted probability for each label from a model that never saw it (k-fold
cross-fitting). Confident learning then sets one threshold per label — the mean predicted probability of
that label over the rows that carry it — and counts a row labelled i as confidently belonging to j when
p_j reaches j's threshold; rows whose confident label differs from the given one are the candidates, and
`cleanlab.filter.find_label_issues` prunes them to the estimated number of errors per label
(`filter_by`). Rows are reported with the suggested label; they are only set aside when the rule's
severity says so.

The model is a linear classifier on hashed character n-grams, so Chinese (no spaces) and space-separated
text need no tokenizer and no vocabulary: the features of 1M short documents are built in a few seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_checks.config import need
from data_checks.io import DoclifeError
from data_checks.rulebook import WARN, RowRule
from data_checks.text_arrays import chunk_bounds

SECTION = "validate.label_noise"
FILTERS = ("prune_by_noise_rate", "confident_learning", "both")
MEASURE_COLUMNS = ("label_issue", "suggested_label", "label_confidence")

# Odd 64-bit constants for multiplicative hashing (golden ratio; a large prime for the rolling n-gram hash).
_MIX = np.uint64(0x9E3779B97F4A7C15)
_ROLL = np.uint64(1_000_003)


@dataclass
class LabelNoiseConfig:
    """How likely mislabelled rows are found (`validate.label_noise` in params.yaml)."""

    splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """Splits whose rows are checked (pooled for the cross-fitting); rows of other splits get NA. A wrong
    label in validation or test corrupts the evaluation as surely as one in train misleads the model."""
    folds: int = 5
    """Cross-fitting folds: each row's probabilities come from a model fit on the other folds."""
    min_ngram: int = 1
    """Shortest character n-gram used as a feature (characters, so any script works without a tokenizer)."""
    max_ngram: int = 3
    """Longest character n-gram used as a feature."""
    n_features: int = 2**20
    """Hashing space of the n-gram features; collisions are rare below about a million distinct n-grams."""
    max_chars: int = 256
    """The model reads each text's first max_chars characters: enough to tell its label, and the features'
    memory (about 3 n-grams a character) then stays bounded on documents of any length."""
    alpha: float = 3e-5
    """L2 regularisation of the logistic-loss SGD classifier."""
    epochs: int = 5
    """Passes of SGD over each fold's training rows."""
    filter_by: str = "prune_by_noise_rate"
    """cleanlab's filter: prune_by_noise_rate (the estimated number of errors per label, most likely first),
    confident_learning (every off-diagonal row of the confident joint) or both (rows both flag)."""
    min_rows: int = 1000
    """Fewer checked rows than this and the check does not run (NA): a model fit on so little text
    contradicts many correct labels (on SST-2's 872 dev sentences it flagged a quarter of them)."""
    min_rows_per_label: int = 10
    """Labels with fewer checked rows cannot be learnt: their rows get NA and no row is suggested them.
    When fewer than two labels are left, the whole check is NA."""
    max_rows: int | None = 60_000
    """Cap on the rows each fold's model is fit on: above it, the model is fit on a seeded sample of
    max_rows of the fold's training rows (stratified by label, each label keeping at least
    min(its rows, min_rows_per_label)); every checked row still gets an out-of-fold prediction and is
    judged. None fits on all rows."""
    seed: int = 0
    """Seed of the folds, the fit samples and SGD; the same seed gives the same report."""

    def __post_init__(self) -> None:
        self.splits = [str(split) for split in self.splits]
        need(len(self.splits) >= 1, SECTION, "splits must name at least one split")
        need(self.folds >= 2, SECTION, f"folds must be >= 2, got {self.folds}")
        need(self.min_rows >= 0, SECTION, f"min_rows must be >= 0, got {self.min_rows}")
        need(1 <= self.min_ngram <= self.max_ngram, SECTION,
              f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram} and {self.max_ngram}")
        need(self.max_ngram <= 8, SECTION, f"max_ngram must be <= 8, got {self.max_ngram}")
        need(self.n_features >= 2, SECTION, f"n_features must be >= 2, got {self.n_features}")
        need(self.max_chars >= 1, SECTION, f"max_chars must be >= 1, got {self.max_chars}")
        need(self.alpha > 0, SECTION, f"alpha must be > 0, got {self.alpha}")
        need(self.epochs >= 1, SECTION, f"epochs must be >= 1, got {self.epochs}")
        need(self.filter_by in FILTERS, SECTION, f"filter_by must be one of {', '.join(FILTERS)}, got {self.filter_by!r}")
        # Stratified folds need every kept label in every fold.
        need(self.min_rows_per_label >= self.folds, SECTION,
              f"min_rows_per_label ({self.min_rows_per_label}) must be >= folds ({self.folds})")
        need(self.max_rows is None or self.max_rows >= 1, SECTION, f"max_rows must be >= 1 or null, got {self.max_rows}")


# Characters featurised at once: the n-gram keys and their sort take about 50 bytes a character.
FEATURE_CHUNK_CHARS = 2_000_000


def char_ngram_features(texts: pd.Series, min_n: int, max_n: int, n_features: int) -> sp.csr_matrix:
    """Hashed character n-gram counts of lower-cased texts padded with one space each side: (len(texts), n_features).

    Vectorised over all characters of FEATURE_CHUNK_CHARS at a time (no per-document Python), so it scales to
    millions of rows in bounded memory.
    """
    padded = " " + texts.astype(str).str.lower() + " "
    lengths = padded.str.len().to_numpy(np.int64)
    parts = [_ngram_counts(padded.iloc[lo:hi].tolist(), lengths[lo:hi], min_n, max_n, n_features)
             for lo, hi in chunk_bounds(lengths, max(len(lengths), 1), FEATURE_CHUNK_CHARS)]
    if not parts:
        return sp.csr_matrix((0, n_features), dtype=np.float32)
    return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")


def _ngram_counts(padded: list[str], lengths: np.ndarray, min_n: int, max_n: int, n_features: int) -> sp.csr_matrix:
    """char_ngram_features of padded texts. Each n-gram becomes the key doc * n_features + its hash; one sort
    of all keys orders every row's n-grams and puts repeats side by side, where they are counted (twice as fast
    as sorting row by row)."""
    n_docs = len(padded)
    # One code point per character, all documents back to back: (total_chars,)
    codes = np.frombuffer("".join(padded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    # Characters from each position to the end of its document.
    left = np.repeat(np.cumsum(lengths), lengths) - np.arange(len(codes), dtype=np.int64)
    keys = []
    rolling = codes * _MIX
    for n in range(1, max_n + 1):
        if n > 1:
            # rolling[i] now hashes codes[i : i + n]; it shrinks by one at each n.
            rolling = rolling[:-1] * _ROLL + codes[n - 1:]
        if n < min_n:
            continue
        inside = left[: len(rolling)] >= n  # drop n-grams that run into the next doc
        mixed = (rolling[inside] ^ np.uint64(n)) * _MIX  # salted by n: sizes hash independently
        mixed ^= mixed >> np.uint64(31)
        keys.append(doc[: len(rolling)][inside] * n_features + (mixed % np.uint64(n_features)).astype(np.int64))
    ordered = np.sort(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    starts = np.flatnonzero(np.append(True, ordered[1:] != ordered[:-1])) if len(ordered) else ordered
    counts = np.diff(np.append(starts, len(ordered))).astype(np.float32)
    unique = ordered[starts]
    # Keys are sorted, so each row's n-grams are one run: row k's start at the first key >= k * n_features.
    indptr = np.searchsorted(unique, np.arange(n_docs + 1, dtype=np.int64) * n_features)
    columns = unique - np.repeat(np.arange(n_docs, dtype=np.int64) * n_features, np.diff(indptr))
    return sp.csr_matrix((counts, columns.astype(np.int32), indptr), shape=(n_docs, n_features))


def _idf(counts: sp.csr_matrix) -> np.ndarray:
    """Smoothed inverse document frequency of each hashed n-gram; it needs no labels."""
    doc_freq = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1.0 + counts.shape[0]) / (1.0 + doc_freq)) + 1.0).astype(np.float32)


def tfidf(counts: sp.csr_matrix, idf: np.ndarray | None = None) -> sp.csr_matrix:
    """Sublinear tf (1 + log count) times smoothed idf (from `counts` itself when not given), rows scaled
    to unit length."""
    from sklearn.preprocessing import normalize  # here: every stage builds this module's config; sklearn takes 0.5 s

    idf = _idf(counts) if idf is None else idf
    weighted = counts.astype(np.float32, copy=True)
    weighted.data = 1.0 + np.log(weighted.data)
    weighted.data *= idf[weighted.indices]
    return normalize(weighted, copy=False)


# Rows featurised at a time when predicting: the sparse n-gram matrix of the whole corpus is never held.
PREDICT_CHUNK = 100_000

TextsAt = Callable[[np.ndarray], pd.Series]
"""The texts at the given (ascending) row positions, in that order."""
MapTexts = Callable[[Callable[[pd.Series], Any]], Iterable[Any]]
"""Applies a function to the text column batch by batch, in row order (each batch indexed by its rows'
positions), and yields its results: wherever the engine runs them (data_checks/engines.py)."""


@dataclass
class LabelIssues:
    """The label-noise measures of every row of a corpus, as compact arrays (a few bytes a row)."""

    issue: np.ndarray
    """int8: 1 flagged, 0 not, -1 not checked."""
    suggested: np.ndarray
    """int16 index into `names` of the suggested label on flagged rows, -1 elsewhere."""
    confidence: np.ndarray
    """float32 out-of-fold probability of the given label; NaN on rows not checked."""
    names: np.ndarray
    """The labels the model learnt, sorted."""

    @staticmethod
    def none(rows: int) -> LabelIssues:
        return LabelIssues(np.full(rows, -1, np.int8), np.full(rows, -1, np.int16), np.full(rows, np.nan, np.float32),
                           np.array([], dtype=object))

    def frame(self, rows: slice, index: pd.Index) -> pd.DataFrame:
        """MEASURE_COLUMNS for `rows` (label_issue Int8, suggested_label string, label_confidence float32)."""
        issue, suggested = self.issue[rows], self.suggested[rows]
        names = np.append(self.names.astype(object), None)  # code -1 picks the trailing None
        return pd.DataFrame({
            "label_issue": pd.arrays.IntegerArray(np.maximum(issue, 0), issue < 0),
            "suggested_label": pd.array(names[suggested], dtype="string"),
            "label_confidence": self.confidence[rows],
        }, index=index)


def out_of_fold_probabilities(positions: np.ndarray, codes: np.ndarray, n_labels: int, cfg: LabelNoiseConfig,
                              texts_at: TextsAt, map_texts: MapTexts) -> np.ndarray:
    """(len(positions), n_labels) probabilities of the rows at `positions`, each from a model fit on the folds
    it is not in.

    Only the fit samples' texts are read at once (max_rows per fold); predictions are made batch by batch as
    the text column streams past (`map_texts` runs them), so memory follows max_rows and the batch size rather
    than the corpus. The idf weights come from the first fold's fit sample.
    """
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(cfg.seed)
    folds = StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed)
    fold_of = np.empty(len(codes), np.int8)
    fits = []
    for k, (train, held_out) in enumerate(folds.split(np.zeros(len(codes)), codes)):
        if cfg.max_rows is not None and len(train) > cfg.max_rows:
            train = _stratified_sample(train, codes[train], cfg.max_rows, cfg.min_rows_per_label, rng)
        fits.append(train)
        fold_of[held_out] = k
    needed = np.unique(np.concatenate(fits))
    fit_texts = texts_at(positions[needed])
    fit_texts.index = needed  # by checked-row number

    def features(texts: pd.Series) -> sp.csr_matrix:
        return char_ngram_features(texts.astype(str).str.slice(0, cfg.max_chars), cfg.min_ngram, cfg.max_ngram,
                                   cfg.n_features)

    idf = _idf(features(fit_texts.loc[fits[0]]))
    models = []
    for train in fits:
        model = SGDClassifier(loss="log_loss", alpha=cfg.alpha, max_iter=cfg.epochs, tol=None, random_state=cfg.seed)
        with warnings.catch_warnings():
            # A fixed number of epochs is the point (speed); SGD's convergence warning says nothing here.
            warnings.simplefilter("ignore")
            model.fit(tfidf(features(fit_texts.loc[train]), idf), codes[train])
        models.append(model)
    del fit_texts

    # Each checked row's fold, by table position (-1: not checked): what a batch needs to know of the table.
    fold_at = np.full(int(positions[-1]) + 1 if len(positions) else 0, -1, np.int8)
    fold_at[positions] = fold_of

    def predict(batch: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(table positions of the batch's checked rows, their out-of-fold probabilities)."""
        at = batch.index.to_numpy()
        folds = fold_at[at[at < len(fold_at)]]
        at = at[:len(folds)][folds >= 0]
        folds = folds[folds >= 0]
        out = np.zeros((len(at), n_labels), np.float32)
        for k, model in enumerate(models):
            rows = np.flatnonzero(folds == k)
            for start in range(0, len(rows), PREDICT_CHUNK):
                part = rows[start:start + PREDICT_CHUNK]
                out[np.ix_(part, model.classes_)] = model.predict_proba(tfidf(features(batch.loc[at[part]]), idf))
        return at, out

    probs = np.zeros((len(codes), n_labels), np.float32)
    for at, predicted in map_texts(predict):
        probs[np.searchsorted(positions, at)] = predicted
    return probs


def _stratified_sample(rows: np.ndarray, codes: np.ndarray, size: int, floor: int, rng: np.random.Generator) -> np.ndarray:
    # Each label keeps its share of `size`, but never fewer than min(its rows, floor), so rare labels stay learnable.
    per_label = np.bincount(codes)
    quota = np.maximum(np.floor(per_label * size / len(rows)), np.minimum(per_label, floor)).astype(np.int64)
    order = rng.permutation(len(rows))
    order = order[np.argsort(codes[order], kind="stable")]  # grouped by label, random within a label
    rank = np.arange(len(order)) - np.repeat(np.cumsum(per_label) - per_label, per_label)
    return np.sort(rows[order[rank < quota[codes[order]]]])


def find_label_issues(frame: pd.DataFrame, cfg: LabelNoiseConfig) -> pd.DataFrame:
    """Per row of `frame` (index kept): label_issue (Int8 0/1), suggested_label (string, set on flagged rows) and
    label_confidence (float32: out-of-fold probability of the given label). All are NA on rows not checked:
    other splits, null text or label, labels with too few rows, or a corpus with fewer than two such labels."""
    if "label" not in frame.columns or "text" not in frame.columns:
        return LabelIssues.none(len(frame)).frame(slice(None), frame.index)
    texts = frame["text"].reset_index(drop=True)
    label_code, label_names = pd.factorize(frame["label"].astype("string"))
    # Without a split column every row is in a checked split.
    split = (pd.factorize(frame["split"].astype("string")) if "split" in frame
             else (np.zeros(len(frame), np.int64), cfg.splits[:1]))
    issues = label_issues((label_code, list(label_names)), (split[0], list(split[1])), texts.notna().to_numpy(), cfg,
                          lambda at: texts.iloc[at], lambda predict: [predict(texts)])
    return issues.frame(slice(None), frame.index)


def label_issues(label: tuple[np.ndarray, list], split: tuple[np.ndarray, list], has_text: np.ndarray,
                 cfg: LabelNoiseConfig, texts_at: TextsAt, map_texts: MapTexts) -> LabelIssues:
    """The label-noise measures of a corpus given as (code per row, values) of its labels and splits (-1: null),
    whether each row has text, and readers of its text column (see `find_label_issues` for what is checked)."""
    n = len(has_text)
    out = LabelIssues.none(n)
    label_code, label_names = label
    wanted = np.array([str(v) in cfg.splits for v in split[1]] + [False])  # code -1 (null split) picks False
    checked = wanted[split[0]] & has_text & (label_code >= 0)
    sizes = np.bincount(label_code[checked], minlength=len(label_names))
    learnable = sizes >= cfg.min_rows_per_label
    checked &= np.append(learnable, False)[label_code]
    if learnable.sum() < 2 or checked.sum() < cfg.min_rows:
        return out

    positions = np.flatnonzero(checked)
    # Model codes number the learnt labels in sorted order.
    names = np.array(sorted(str(label_names[c]) for c in np.flatnonzero(learnable)), dtype=object)
    rank = np.full(len(label_names), -1, np.int64)
    rank[np.flatnonzero(learnable)] = np.searchsorted(names, [str(label_names[c]) for c in np.flatnonzero(learnable)])
    codes = rank[label_code[positions]]
    probs = out_of_fold_probabilities(positions, codes, len(names), cfg, texts_at, map_texts)
    flagged = _cleanlab_issues(codes, probs, cfg.filter_by)

    others = probs.copy()
    others[np.arange(len(codes)), codes] = -1.0  # the suggestion is never the given label
    out.issue[positions] = flagged.astype(np.int8)
    out.suggested[positions] = np.where(flagged, others.argmax(axis=1), -1).astype(np.int16)
    out.confidence[positions] = probs[np.arange(len(codes)), codes]
    out.names = names
    return out


def _cleanlab_issues(codes: np.ndarray, probs: np.ndarray, filter_by: str) -> np.ndarray:
    # cleanlab's confident joint and pruning; n_jobs=1 keeps it in this process (its pool would fork the caller).
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(cleanlab_find_label_issues(codes, probs.astype(np.float64), filter_by=filter_by, n_jobs=1), bool)
    except ValueError as err:  # cleanlab's own input checks; our inputs are built to pass them
        raise DoclifeError(f"label noise check: cleanlab rejected the predictions: {err}") from err


def label_noise_rules(cfg: LabelNoiseConfig | None = None) -> list[RowRule]:
    """The label-noise row rule; warn by default (params.yaml `validate.rules.label_noise` may quarantine)."""
    return [
        RowRule(
            name="label_noise",
            column="label_issue",
            description=(
                "the given label must not be contradicted by confident learning on out-of-fold predictions "
                "(label_issue <= {max_value}); the report names the suggested label (suggested_label)"
            ),
            max_value=0,
            severity=WARN,
            family="label_noise",
        )
    ]
