"""The data contract as Great Expectations expectations.

Row rules (data_checks/rulebook.py) become one `ExpectColumnValuesToBeBetween` each on their measure
column. Table rules (severity "fail") run on the rows that passed and stop the pipeline when the corpus
as a whole is unfit: too much rejected, a label or a split gone, classes out of balance, a wrong schema.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# Must be set before the first import of great_expectations, which reads it at import time.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.expectations import Expectation  # noqa: E402

from data_checks.config import SPLITS, ValidateConfig  # noqa: E402
from data_checks.rulebook import FAIL, RowRule  # noqa: E402

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
    """Rules on the validated rows as a whole; the label rules only for a labelled corpus."""
    E = gx.expectations
    min_rows = min_validated_rows(cfg, rows_in)
    rules = [
        _rule(
            "rejected_fraction",
            FAIL,
            f"at least {min_rows} of {rows_in} rows pass the row rules (max_rejected_fraction {cfg.max_rejected_fraction})",
            E.ExpectTableRowCountToBeBetween,
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


def count_frame(validated: pd.DataFrame, labels: list[str] | None) -> pd.DataFrame:
    """One row per split (split_rows) and one per declared label (label_share); absent ones count 0."""
    splits = validated["split"].value_counts()
    rows = [{"key": f"split={s}", "split_rows": float(splits.get(s, 0)), "label_share": None} for s in SPLITS]
    if labels is not None:
        counts = validated["label"].value_counts()
        total = max(len(validated), 1)
        rows += [{"key": f"label={name}", "split_rows": None, "label_share": counts.get(name, 0) / total} for name in labels]
    return pd.DataFrame(rows).astype({"split_rows": "float64", "label_share": "float64"})
