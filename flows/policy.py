"""The promotion policy: the `promote` section of params.yaml as typed, checked dataclasses.

Modelled on TFX's model validation (value thresholds, change thresholds with a direction, per-slice
thresholds) and MLflow's `MetricThreshold`, plus what neither has: a paired-bootstrap interval on the
improvement, a minimum slice size, baselines, data coupling and a serving check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

METRIC_NAMES = ("accuracy", "macro_f1", "roc_auc")
SLICE_DIMENSIONS = ("label", "script", "length", "source")
DIRECTIONS = ("higher", "lower")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class MetricPolicy:
    """Thresholds on one metric; every field is optional (None: not checked)."""

    direction: str = "higher"
    """higher | lower: which way is better (signs every change below)."""
    lower_bound: float | None = None
    """The challenger's value must be at least this (a floor; applies to the first model too)."""
    upper_bound: float | None = None
    """The challenger's value must be at most this."""
    min_change: float | None = None
    """Change against the champion (in the better direction) must be at least this; a negative value is a
    tolerated regression (-0.01: up to 0.01 worse is still accepted)."""
    min_relative_change: float | None = None
    """Change against the champion divided by the champion's value must be at least this."""
    max_change: float | None = None
    """A cap on the improvement over the champion: more than this is suspicious (often leakage) and fails."""

    def __post_init__(self) -> None:
        _need(self.direction in DIRECTIONS, f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.lower_bound is not None and self.upper_bound is not None:
            _need(self.lower_bound <= self.upper_bound, "lower_bound must not exceed upper_bound")
        if self.max_change is not None:
            _need(self.max_change > 0, "max_change must be > 0")


@dataclass(frozen=True)
class BootstrapPolicy:
    """The paired bootstrap over test documents that gives the interval of the improvement."""

    resamples: int = 1000
    """Number of resamples of the test documents (the same resample scores both models)."""
    seed: int = 7
    """Seed of the resampling; the same seed and data always give the same interval."""
    confidence: float = 0.95
    """Two-sided confidence of the interval (percentile method)."""
    min_improvement: float = 0.0
    """Promotion needs the interval's lower bound of the primary metric's improvement above this."""

    def __post_init__(self) -> None:
        _need(self.resamples >= 100, f"resamples must be >= 100, got {self.resamples}")
        _need(0.5 < self.confidence < 1, f"confidence must be in (0.5, 1), got {self.confidence}")


@dataclass(frozen=True)
class SlicePolicy:
    """Per-slice no-regression against the champion."""

    dimensions: tuple[str, ...] = ("label", "script", "length", "source")
    """Slice the test split by: label, script (han/latin/mixed/other), length (bucket of characters) and
    source (a `source` column of the snapshot; its absence fails the gate when asked for)."""
    metric: str = "accuracy"
    """The metric compared per slice (accuracy: within a one-label slice macro-F1 is degenerate)."""
    min_size: int = 20
    """Slices with fewer test documents are reported but not gated: their metric is too noisy."""
    max_regression: float = 0.05
    """A slice may be at most this much worse than the champion's on the same slice."""
    length_edges: tuple[int, ...] = (20, 60)
    """Character-count edges of the length buckets: (20, 60) gives <20, 20-59 and >=60."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        object.__setattr__(self, "length_edges", tuple(int(e) for e in self.length_edges))
        for name in self.dimensions:
            _need(name in SLICE_DIMENSIONS, f"unknown slice dimension {name!r}; expected {', '.join(SLICE_DIMENSIONS)}")
        _need(self.metric in ("accuracy", "macro_f1"), f"slices.metric must be accuracy or macro_f1, got {self.metric!r}")
        _need(self.min_size >= 1, "slices.min_size must be >= 1")
        _need(self.max_regression >= 0, "slices.max_regression must be >= 0")
        _need(list(self.length_edges) == sorted(set(self.length_edges)) and all(e > 0 for e in self.length_edges),
              "slices.length_edges must be increasing positive integers")


@dataclass(frozen=True)
class BaselinePolicy:
    """Baselines scored on the same split, which the challenger's primary metric must beat."""

    majority_margin: float | None = 0.0
    """The challenger must exceed the majority-class baseline by more than this; None: not required."""
    tfidf_tolerance: float | None = 0.05
    """The challenger may be at most this much below TF-IDF + logistic regression; None: not required."""
    tfidf_ngram_max: int = 2
    """TF-IDF on character n-grams 1..this (works for Chinese and English alike, no word segmenter)."""
    tfidf_max_features: int = 200000
    """Vocabulary cap of the TF-IDF vectorizer."""
    tfidf_c: float = 10.0
    """Inverse regularisation strength of the logistic regression."""

    def __post_init__(self) -> None:
        _need(self.tfidf_ngram_max >= 1, "baselines.tfidf_ngram_max must be >= 1")
        _need(self.tfidf_c > 0, "baselines.tfidf_c must be > 0")


@dataclass(frozen=True)
class DataPolicy:
    """Coupling to the snapshot's validation report (reports/validate/summary.json)."""

    allow_failed_validation: bool = False
    """Promote even when validation had fail-severity findings (an explicit, recorded override)."""
    allow_drift: bool = False
    """Promote even when the summary's `drift` section reports drift over its budget."""


@dataclass(frozen=True)
class ServingPolicy:
    """The exported model is loaded in a fresh process and predicts a sample before it may be promoted."""

    sample_size: int = 32
    """Test documents predicted one at a time, as a server would."""
    max_latency_ms: float = 500.0
    """Budget for the 95th percentile of the per-document latency, after loading."""
    timeout_s: float = 300.0
    """The whole check (start, load, predict) must finish in this time or the model is refused."""

    def __post_init__(self) -> None:
        _need(self.sample_size >= 1, "serving.sample_size must be >= 1")
        _need(self.max_latency_ms > 0 and self.timeout_s > 0, "serving budgets must be > 0")


def _section(cls: type, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {value!r}")
    return cls(**value)


@dataclass(frozen=True)
class PromoteConfig:
    """The gate's whole policy and where the registry lives."""

    registry: str = "registry"
    """Directory of the model registry (versions, aliases, history), relative to the workspace."""
    primary_metric: str = "macro_f1"
    """The metric the bootstrap interval, the baselines and the slices' headline use."""
    metrics: dict[str, MetricPolicy] = field(default_factory=lambda: {
        "macro_f1": MetricPolicy(lower_bound=0.5, min_change=0.0, max_change=0.3),
        "accuracy": MetricPolicy(lower_bound=0.5, min_change=-0.01),
        "roc_auc": MetricPolicy(min_change=-0.01),
    })
    """Metric name → thresholds. A metric listed here but missing from the scores fails the gate."""
    bootstrap: BootstrapPolicy = field(default_factory=BootstrapPolicy)
    """The paired bootstrap of the primary metric's improvement over the champion."""
    slices: SlicePolicy = field(default_factory=SlicePolicy)
    """Per-slice no-regression rule."""
    baselines: BaselinePolicy = field(default_factory=BaselinePolicy)
    """Majority class and TF-IDF + logistic regression."""
    data: DataPolicy = field(default_factory=DataPolicy)
    """Refuse models trained on a snapshot whose validation failed or drifted."""
    serving: ServingPolicy = field(default_factory=ServingPolicy)
    """Load-and-predict check in a fresh process."""

    def __post_init__(self) -> None:
        _need(self.primary_metric in METRIC_NAMES,
              f"primary_metric: unknown metric {self.primary_metric!r}; expected one of {', '.join(METRIC_NAMES)}")
        metrics = {}
        for name, value in (self.metrics or {}).items():
            _need(name in METRIC_NAMES, f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}")
            try:
                metrics[name] = _section(MetricPolicy, value or {})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"metrics.{name}: {exc}") from None
        object.__setattr__(self, "metrics", metrics)
        for name, cls in (("bootstrap", BootstrapPolicy), ("slices", SlicePolicy), ("baselines", BaselinePolicy),
                          ("data", DataPolicy), ("serving", ServingPolicy)):
            try:
                object.__setattr__(self, name, _section(cls, getattr(self, name)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {exc}") from None

    def direction(self, metric: str) -> str:
        policy = self.metrics.get(metric)
        return policy.direction if policy else "higher"

    def digest(self) -> str:
        """A short hash of the policy (without the registry path): a verdict is reused only under the same one."""
        body = {k: v for k, v in asdict(self).items() if k != "registry"}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=list).encode()).hexdigest()[:12]
