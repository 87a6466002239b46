"""Drift of a new corpus against the previous snapshot, checked as Great Expectations expectations.

Each snapshot stores a profile of its corpus (`data_checks.drift_profile`): label distribution, text lengths, the script
mix and the most frequent tokens. A new corpus is compared with the previous snapshot's profile
through four expectations parameterised from that profile. They read the new corpus's counts, not its
documents: `ProfileBuilder.count_frame` (a table of one row per distinct label, length, script and token,
with its `count`), so memory follows the distinct values and a corpus can be counted batch by batch.
Each expectation reads one column of it, weighting each of its non-null rows by `count`:

- label_drift (column `label`): PSI of the label distribution (missing labels count as their own category);
- length_drift (column `length`): two-sample Kolmogorov-Smirnov statistic of the text length in
  characters, computed exactly (both sides keep the count of every distinct length);
- script_drift (column `script`): PSI of the per-document script (han, latin, mixed, other);
- new_vocabulary (column `token`): share of the new corpus's tokens that are not in the stored
  vocabulary, beyond the share expected by chance: the tokens the stored vocabulary leaves out plus the
  Good-Turing estimate of unseen tokens (the reference's share of tokens seen exactly once; I. J. Good, 1953).
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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# Must be set before the first import of great_expectations, which reads it at import time.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.core.metric_domain_types import MetricDomainTypes  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import ColumnAggregateExpectation  # noqa: E402
from great_expectations.expectations.metrics.column_aggregate_metric_provider import (  # noqa: E402
    ColumnAggregateMetricProvider,
)
from great_expectations.expectations.metrics.metric_provider import metric_value  # noqa: E402
from great_expectations.expectations.metrics.util import get_dbms_compatible_metric_domain_kwargs  # noqa: E402
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent  # noqa: E402
from great_expectations.render.renderer.renderer import renderer  # noqa: E402
from great_expectations.render.renderer_configuration import RendererConfiguration, RendererValueType  # noqa: E402

from data_checks.drift_profile import (  # noqa: E402
    RULES,
    DriftConfig,
    ProfileBuilder,
    ks_statistic,
    new_token_share_of_counts,
    psi,
    shares,
)
from data_checks.expectations import context as gx_context, run_checkpoint  # noqa: E402
from data_checks.io import DoclifeError  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# Great Expectations metrics and expectations (registered with GX when their classes are created)


COUNT_COLUMN = "count"
"""Column of the count frame holding each row's weight (`ProfileBuilder.count_frame`)."""


def _weighted_column(execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict,
                     metrics: dict[str, Any]) -> tuple[pd.Series, pd.Series]:
    """The metric's column on the rows where it is not null, and those rows' `count` (the weights).

    What GX's column_aggregate_value does before calling its function, which passes only the column.
    """
    domain_kwargs = get_dbms_compatible_metric_domain_kwargs(
        metric_domain_kwargs=dict(metric_domain_kwargs), batch_columns_list=metrics["table.columns"])
    df, _, accessor = execution_engine.get_compute_domain(domain_kwargs=domain_kwargs,
                                                          domain_type=MetricDomainTypes.COLUMN)
    # In the count frame a null means "a row of another dimension", not a missing value.
    rows = df[df[accessor["column"]].notna()]
    return rows[accessor["column"]], rows[COUNT_COLUMN].astype(np.int64)


def _totals(values: pd.Series, weights: pd.Series) -> pd.Series:
    """Total weight per distinct value, in the order the values first occur."""
    return weights.groupby(values.to_numpy(), sort=False).sum()


class ColumnPsi(ColumnAggregateMetricProvider):
    """PSI of a categorical column's distribution (each row weighted by `count`) against reference shares."""

    metric_name = "column.doclife_psi"
    value_keys = ("reference_values", "reference_weights")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict, metric_value_kwargs: dict,
                metrics: dict[str, Any], runtime_configuration: dict | None = None) -> dict:
        totals = _totals(*_weighted_column(execution_engine, metric_domain_kwargs, metrics))
        # Most frequent first, as value_counts over the documents listed them; stable, so ties keep the
        # order in which the values were first counted.
        totals = totals[totals > 0].sort_values(ascending=False, kind="stable")
        observed = shares([str(v) for v in totals.index], totals.tolist())
        value, terms = psi(shares(metric_value_kwargs["reference_values"], metric_value_kwargs["reference_weights"]),
                           observed)
        return {"psi": value, "observed_shares": observed, "terms": terms}


class ColumnKsStatistic(ColumnAggregateMetricProvider):
    """Two-sample KS statistic of a numeric column (each row weighted by `count`) against a reference given as
    distinct values and counts."""

    metric_name = "column.doclife_ks_statistic"
    value_keys = ("reference_values", "reference_counts")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict, metric_value_kwargs: dict,
                metrics: dict[str, Any], runtime_configuration: dict | None = None) -> float:
        values, weights = _weighted_column(execution_engine, metric_domain_kwargs, metrics)
        return ks_statistic(values.to_numpy(dtype=np.float64), metric_value_kwargs["reference_values"],
                            metric_value_kwargs["reference_counts"], weights=weights.to_numpy())


class ColumnNewTokenShare(ColumnAggregateMetricProvider):
    """Share of the tokens (a column of distinct tokens, each row weighted by `count`) that are not in a
    reference vocabulary (tokens joined by newlines)."""

    metric_name = "column.doclife_new_token_share"
    value_keys = ("vocabulary",)

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine: PandasExecutionEngine, metric_domain_kwargs: dict, metric_value_kwargs: dict,
                metrics: dict[str, Any], runtime_configuration: dict | None = None) -> dict:
        totals = _totals(*_weighted_column(execution_engine, metric_domain_kwargs, metrics))
        counts = dict(zip(totals.index.tolist(), totals.tolist(), strict=True))
        share, top, total = new_token_share_of_counts(counts, metric_value_kwargs["vocabulary"].split("\n"))
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
            "token",
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


def _counted(corpus: pd.DataFrame | ProfileBuilder, cfg: DriftConfig) -> ProfileBuilder:
    """The corpus as counts: a builder as is, a table counted in one batch."""
    if isinstance(corpus, ProfileBuilder):
        return corpus
    if not isinstance(corpus, pd.DataFrame):
        raise TypeError(f"check_drift needs a DataFrame or a ProfileBuilder, got {type(corpus).__name__}")
    missing = [c for c in ("text", "label") if c not in corpus.columns]
    if missing:
        raise DoclifeError(f"<frame>: cannot check drift of a table without columns {', '.join(missing)}")
    return ProfileBuilder(cfg).add(corpus)


def _no_reference() -> dict:
    return {"reference": None, "message": "no previous snapshot: nothing to compare with", "rules": {},
            "score": 0.0, "budget": 1.0, "over_budget": False, "success": True, "failures": []}


def _run(context: Any, frame: pd.DataFrame, rules: list[DriftRule], build_docs: bool) -> dict[str, Any]:
    """Run the drift rules as one suite through a Checkpoint on a count frame; {rule name: GX result}."""
    # One context may run the drift suite more than once (e.g. several corpora); GX names must be unique.
    taken = {c.name for c in context.checkpoints.all()}
    name = next(n for n in ("drift", *(f"drift_{k}" for k in range(2, 10**6))) if n not in taken)
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


def check_drift(corpus: pd.DataFrame | ProfileBuilder, reference: dict | None, cfg: DriftConfig, context: Any = None,
                data_docs_dir: Path | None = None) -> dict:
    """Compare a corpus with the previous snapshot's profile through GX; a JSON-serialisable section.

    `corpus` is a table (columns text and label) or a ProfileBuilder fed with the corpus's batches; a table
    is counted into a builder first, and the expectations run on the builder's count frame (`rows` is the
    builder's). Per rule: severity, description, success, observed, threshold and details. `score` is the
    largest observed/threshold ratio (above `budget` = 1.0 means some rule is over its threshold, `over_budget`);
    `success` is False only when severity is fail and the drift is over budget. With no reference (the
    first snapshot) the section says so and passes. `context` is a GX context to run in (an ephemeral
    one when None, with a Data Docs site in `data_docs_dir` when given); a given context builds Data Docs
    into its "doclife" site when `data_docs_dir` is given.
    """
    if reference is None or not reference.get("rows"):
        # An empty previous snapshot has no distribution to compare with: the same as none.
        return _no_reference()
    counted = _counted(corpus, cfg)
    rules = drift_rules(reference, cfg)
    section: dict[str, Any] = {"reference": {"rows": reference.get("rows"), "version": reference.get("version")},
                               "rows": int(counted.rows), "rules": {}}
    if rules:
        if context is None:
            context = gx_context(data_docs_dir)
        results = _run(context, counted.count_frame(), rules, data_docs_dir is not None)
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
