"""Metrics from per-document predictions, and the paired bootstrap that gives their intervals.

The gate works on probabilities aligned by document, so both models are scored on exactly the same
documents and every resample of the bootstrap draws the same documents for both (a paired bootstrap).
Resamples are drawn as multinomial counts, so a resample's metric is a weighted sum: one matrix product
for all resamples instead of a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval."""

    observed: float
    """The value on the test documents as they are."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"interval low {self.low} > high {self.high}")

    def as_list(self) -> list[float]:
        return [round(self.low, 6), round(self.high, 6)]


def _weighted_accuracy(weights: np.ndarray, target: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(B,) accuracy per row of document weights (B, n)."""
    correct = (target == predicted).astype(np.float64)
    return weights @ correct / weights.sum(axis=1)


def _weighted_macro_f1(weights: np.ndarray, target: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(B,) macro-F1 per row of weights, averaged over the classes present in the target or the predictions
    (the same convention as the evaluate stage's torchmetrics score)."""
    truth = np.eye(n_classes, dtype=np.float64)[target]  # (n, C)
    guess = np.eye(n_classes, dtype=np.float64)[predicted]
    tp = weights @ (truth * guess)  # (B, C)
    fp = weights @ ((1 - truth) * guess)
    fn = weights @ (truth * (1 - guess))
    denominator = 2 * tp + fp + fn
    present = denominator > 0
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=present)
    return (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def _weighted_roc_auc(weights: np.ndarray, target: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(B,) macro one-vs-rest ROC AUC per row of weights, over classes with positives and negatives."""
    from sklearn.metrics import roc_auc_score

    out = np.full(len(weights), np.nan)
    for b, w in enumerate(weights):
        scores = []
        for c in range(probs.shape[1]):
            positive = target == c
            if 0 < w[positive].sum() < w.sum():
                scores.append(roc_auc_score(positive, probs[:, c], sample_weight=w))
        if scores:
            out[b] = float(np.mean(scores))
    return out


def weighted_metric(metric: str, weights: np.ndarray, target: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """`metric` (accuracy, macro_f1 or roc_auc) for each row of document weights (B, n)."""
    predicted = probs.argmax(axis=1)
    if metric == "accuracy":
        return _weighted_accuracy(weights, target, predicted)
    if metric == "macro_f1":
        return _weighted_macro_f1(weights, target, predicted, probs.shape[1])
    if metric == "roc_auc":
        return _weighted_roc_auc(weights, target, probs)
    raise ValueError(f"unknown metric {metric!r}")


def metric(name: str, target: np.ndarray, probs: np.ndarray) -> float | None:
    """One metric on the documents as they are; None when it is undefined (AUC with a single class)."""
    value = float(weighted_metric(name, np.ones((1, len(target))), target, probs)[0])
    return None if np.isnan(value) else round(value, 6)


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each document is drawn in each resample (n draws with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _interval(observed: float, samples: np.ndarray, confidence: float) -> Interval:
    samples = samples[~np.isnan(samples)]
    tail = (1 - confidence) / 2 * 100
    low, high = (np.percentile(samples, [tail, 100 - tail]) if len(samples) else (np.nan, np.nan))
    return Interval(observed=round(observed, 6), low=round(float(low), 6), high=round(float(high), 6))


def bootstrap(name: str, target: np.ndarray, probs: np.ndarray, weights: np.ndarray, confidence: float) -> Interval:
    """The interval of one model's metric over the resamples in `weights`."""
    observed = metric(name, target, probs)
    return _interval(np.nan if observed is None else observed, weighted_metric(name, weights, target, probs), confidence)


def paired_improvement(name: str, target: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                       weights: np.ndarray, confidence: float, direction: str = "higher") -> Interval:
    """The interval of (challenger − champion), signed so that positive is better, over the same resamples."""
    sign = 1.0 if direction == "higher" else -1.0
    a, b = metric(name, target, challenger), metric(name, target, champion)
    observed = np.nan if a is None or b is None else sign * (a - b)
    diffs = sign * (weighted_metric(name, weights, target, challenger) - weighted_metric(name, weights, target, champion))
    return _interval(observed, diffs, confidence)
