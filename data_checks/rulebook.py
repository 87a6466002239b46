"""The shape every row rule shares: a bound on one measured column, with a severity.

Rule modules (text quality, duplicates, label noise, ...) compute numeric measure columns per row
(null where the rule does not apply) and declare RowRules over them; validation turns each RowRule into
a Great Expectations `ExpectColumnValuesToBeBetween` on that column, so every rule shows in Data Docs.
Keeping measures free of thresholds means a threshold change in params.yaml never re-measures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from data_checks.io import DoclifeError

FAIL = "fail"
QUARANTINE = "quarantine"
WARN = "warn"
OFF = "off"
SEVERITIES = (FAIL, QUARANTINE, WARN, OFF)
"""fail: any violating row stops the run; quarantine: violating rows are set aside with the rule's name;
warn: violations are reported only; off: the rule is not checked."""


@dataclass(frozen=True)
class RowRule:
    """One row rule: the values of `column` must lie within [min_value, max_value] (null = not applicable)."""

    name: str
    """Stable name used in params.yaml, the quarantine reasons, report.parquet and Data Docs."""
    column: str
    """The measure column the rule reads."""
    description: str
    """What the rule demands, in words; `{min_value}` and `{max_value}` are filled in from the bounds."""
    min_value: float | None = None
    """Smallest accepted value (inclusive); None for no lower bound."""
    max_value: float | None = None
    """Largest accepted value (inclusive); None for no upper bound."""
    severity: str = QUARANTINE
    """One of SEVERITIES."""
    family: str = ""
    """The group the rule belongs to in reports: missing, inconsistency, noise, label_noise, ..."""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise DoclifeError(f"params.yaml: validate.rules.{self.name}: severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        if self.min_value is None and self.max_value is None:
            raise DoclifeError(f"params.yaml: validate.rules.{self.name}: needs min_value or max_value")

    @property
    def text(self) -> str:
        """The description with its bounds filled in."""
        return self.description.format(min_value=_fmt(self.min_value), max_value=_fmt(self.max_value))

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """(min, max) as float32 values: measures are float32, so a ratio of exactly 0.8 meets "at most 0.8"."""
        return tuple(None if v is None else float(np.float32(v)) for v in (self.min_value, self.max_value))

    def violations(self, measures: pd.DataFrame) -> pd.Series:
        """Boolean mask of rows whose (non-null) value lies outside the bounds; the same test GX applies."""
        values = pd.to_numeric(measures[self.column], errors="coerce").astype("float64")
        low, high = self.bounds
        bad = pd.Series(False, index=measures.index)
        if low is not None:
            bad |= values < low
        if high is not None:
            bad |= values > high
        return bad.fillna(False).astype(bool)

    def configured(self, overrides: dict[str, Any] | None) -> RowRule:
        """This rule with params.yaml's `validate.rules.<name>` overrides (severity, min_value, max_value)."""
        if not overrides:
            return self
        unknown = set(overrides) - {"severity", "min_value", "max_value"}
        if unknown:
            raise DoclifeError(f"params.yaml: validate.rules.{self.name}: unknown key(s) {', '.join(sorted(unknown))} "
                               "(expected severity, min_value, max_value)")
        return replace(self, **overrides)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
