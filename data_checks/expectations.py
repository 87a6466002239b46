"""The data contract as Great Expectations expectations.

Row rules (data_checks/rulebook.py) become one `ExpectColumnValuesToBeBetween` each on their measure
column. Table rules (severity "fail") run on the rows that passed and stop the pipeline when the corpus
as a whole is unfit: too much rejected, a label or a split gone, classes out of balance, a wrong schema.
They run on small frames of counts (`table_frame`, `count_frame`), so their cost does not grow with the corpus.
Suites run through Checkpoints in an in-memory context whose one Data Docs site is the validation's.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Must be set before the first import of great_expectations, which reads it at import time.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.expectations import Expectation  # noqa: E402

from data_checks.config import SPLITS, ValidateConfig  # noqa: E402
from data_checks.rulebook import FAIL, RowRule  # noqa: E402

SITE_NAME = "doclife"
"""The one Data Docs site every checkpoint of a validation renders into."""

@dataclass(frozen=True)
class Rule:
    """One rule of the data contract and the Great Expectations expectation that checks it."""

    name: str
    """Stable name used in the quarantine table, summary.json and Data Docs."""
    severity: str
    """Always "fail" for table rules: the run stops."""
    description: str
    """What the rule demands, in words."""
    expectation: Expectation
    """The Great Expectations expectation that checks the rule."""


def _rule(name: str, severity: str, description: str, kind: type[Expectation], **kwargs: object) -> Rule:
    # The rule name and severity travel in `meta` so they show in Data Docs and come back in every result.
    expectation = kind(**kwargs, meta={"rule": name, "severity": severity}, description=f"{name}: {description}")
    return Rule(name, severity, description, expectation)


def row_expectation(rule: RowRule) -> Expectation:
    """The GX expectation that checks a row rule: its measure column lies within the rule's bounds."""
    kwargs = {k: v for k, v in zip(("min_value", "max_value"), rule.bounds, strict=True) if v is not None}
    return gx.expectations.ExpectColumnValuesToBeBetween(
        column=rule.column, **kwargs, meta={"rule": rule.name, "severity": rule.severity, "family": rule.family},
        description=f"{rule.name}: {rule.text}",
    )


def min_validated_rows(cfg: ValidateConfig, rows_in: int) -> int:
    """The fewest validated rows the table rules accept for `rows_in` input rows."""
    # The small epsilon keeps 0.8 * 10 from becoming 9 through floating-point error.
    return max(0, math.ceil((1.0 - cfg.max_rejected_fraction) * rows_in - 1e-9))


def table_rules(cfg: ValidateConfig, rows_in: int, labelled: bool) -> list[Rule]:
    """Rules on the validated rows as a whole (see table_frame); the label rules only for a labelled corpus."""
    E = gx.expectations
    min_rows = min_validated_rows(cfg, rows_in)
    rules = [
        _rule(
            "rejected_fraction",
            FAIL,
            f"at least {min_rows} of {rows_in} rows pass the row rules (max_rejected_fraction {cfg.max_rejected_fraction})",
            E.ExpectColumnValuesToBeBetween,
            column="validated_rows",
            min_value=min_rows,
        ),
    ]
    if labelled:
        rules.append(_rule(
            "label_set",
            FAIL,
            f"the validated labels are exactly {', '.join(cfg.labels)}",
            E.ExpectColumnDistinctValuesToEqualSet,
            column="label",
            value_set=list(cfg.labels),
        ))
    return rules


def count_rules(cfg: ValidateConfig, labelled: bool) -> list[Rule]:
    """Rules on per-split and per-label counts of the validated table (see count_frame)."""
    E = gx.expectations
    rules = [
        _rule(
            "split_min_rows",
            FAIL,
            f"every split ({', '.join(SPLITS)}) keeps at least {cfg.min_rows_per_split} validated rows",
            E.ExpectColumnValuesToBeBetween,
            column="split_rows",
            min_value=cfg.min_rows_per_split,
        )
    ]
    if labelled:
        rules.append(_rule(
            "label_balance",
            FAIL,
            f"every declared label holds {cfg.min_label_share:g} to {cfg.max_label_share:g} of the validated rows",
            E.ExpectColumnValuesToBeBetween,
            column="label_share",
            min_value=cfg.min_label_share,
            max_value=cfg.max_label_share,
        ))
    return rules


def table_frame(validated_rows: int, labels: list[object]) -> pd.DataFrame:
    """The validated rows as the table rules see them: one row per distinct validated label (one null row when
    there is none), each with the number of validated rows. It is as small as the label set at any scale."""
    return pd.DataFrame({"label": pd.Series(labels or [None], dtype=object), "validated_rows": float(validated_rows)})


def count_frame(splits: Mapping[str, int], label_counts: Mapping[object, int], validated_rows: int,
                labels: list[str] | None) -> pd.DataFrame:
    """One row per split (split_rows) and one per declared label (label_share) of the validated rows, from their
    counts; absent ones count 0."""
    rows = [{"key": f"split={s}", "split_rows": float(splits.get(s, 0)), "label_share": None} for s in SPLITS]
    if labels is not None:
        total = max(validated_rows, 1)
        rows += [{"key": f"label={name}", "split_rows": None, "label_share": label_counts.get(name, 0) / total}
                 for name in labels]
    return pd.DataFrame(rows).astype({"split_rows": "float64", "label_share": "float64"})


# ----------------------------------------------------------------------------------------------------------
# Running suites: an in-memory context, checkpoints, results by rule


def _quiet_gx() -> None:
    # GX logs configuration chatter at INFO/WARNING for every ephemeral context; users only need errors.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)


def context(docs_dir: Path | None) -> Any:
    """An in-memory GX context whose only Data Docs site (if any) is `docs_dir`."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in list(context.get_config().data_docs_sites or {}):
        context.delete_data_docs_site(site)
    if docs_dir is not None:
        context.add_data_docs_site(
            SITE_NAME,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def add_checkpoint(context: Any, name: str, expectations: list[Any], build_docs: bool,
                   result_format: dict[str, Any] | str = "SUMMARY") -> Any:
    """Suite `name` of `expectations` on a dataframe asset, as a Checkpoint that `run_on` can run many times."""
    source = context.data_sources.add_or_update_pandas("doclife")
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    # The action renders this checkpoint's suite and results into the site and refreshes its index.
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])] if build_docs else []
    return context.checkpoints.add(
        gx.Checkpoint(name=name, validation_definitions=[definition], actions=actions, result_format=result_format)
    )


def run_on(checkpoint: Any, frame: pd.DataFrame, run_name: str | None = None) -> dict[str, Any]:
    """Run `checkpoint` on `frame`; return {rule name: GX result}. Every run's results are kept in the context
    (a run name tells one batch's from another's in Data Docs)."""
    from great_expectations.core.run_identifier import RunIdentifier

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")
        outcome = checkpoint.run(batch_parameters={"dataframe": frame},
                                 run_id=RunIdentifier(run_name=run_name) if run_name else None)
    results: dict[str, Any] = {}
    for run in outcome.run_results.values():
        for result in run.results:
            rule = result.expectation_config.meta["rule"]
            info = result.exception_info or {}
            if info.get("raised_exception"):
                # A crashed expectation is a defect of the suite, not of the user's data.
                raise RuntimeError(f"expectation for rule {rule} crashed: {info.get('exception_message')}")
            results[rule] = result
    return results


def run_checkpoint(
    context: Any, name: str, frame: pd.DataFrame, expectations: list[Any], build_docs: bool,
    result_format: dict[str, Any] | str = "SUMMARY",
) -> dict[str, Any]:
    """Run `expectations` as suite `name` on `frame` through a Checkpoint; return {rule name: GX result}."""
    return run_on(add_checkpoint(context, name, expectations, build_docs, result_format), frame)
