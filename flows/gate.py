"""The promotion gate: a pure decision from the challenger's and the champion's scores on one test snapshot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flows.config import PromoteConfig


@dataclass(frozen=True)
class Check:
    name: str
    """What was checked, e.g. `floor:macro_f1` or `beats_champion:macro_f1`."""
    observed: float | None
    """The challenger's value (None when the metric is missing, which fails the check)."""
    threshold: float
    passed: bool


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    """One line a person reads in the history: why the challenger was or was not promoted."""
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(challenger: dict[str, float], champion: dict[str, float] | None, cfg: PromoteConfig) -> Verdict:
    """Promote when every floor holds and, if there is a champion, the primary metric beats it by the margin.

    Both metric dicts must come from the same test snapshot; the caller re-scores the champion when not.
    """
    checks = [_at_least(f"floor:{name}", challenger.get(name), floor) for name, floor in cfg.floors.items()]
    primary = cfg.primary_metric
    if champion is not None:
        threshold = champion[primary] + cfg.min_improvement
        checks.append(_at_least(f"beats_champion:{primary}", challenger.get(primary), threshold))

    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(_describe(c) for c in failed)
    elif champion is None:
        reason = f"first model: every floor met ({primary} {challenger[primary]:.4f})"
    else:
        reason = (f"{primary} {challenger[primary]:.4f} beats the champion's {champion[primary]:.4f} "
                  f"by more than {cfg.min_improvement}")
    return Verdict(promote=not failed, reason=reason, checks=checks)


def _at_least(name: str, observed: float | None, threshold: float) -> Check:
    passed = observed is not None and observed >= threshold
    return Check(name=name, observed=observed, threshold=round(threshold, 6), passed=passed)


def _describe(check: Check) -> str:
    if check.observed is None:
        return f"{check.name}: metric missing"
    return f"{check.name}: {check.observed:.4f} < {check.threshold:.4f}"
