"""The promotion gate: a pure decision from the evidence gathered on one test snapshot.

Every rule becomes a `Check` with what it compared, so the verdict says exactly which metric, slice or
precondition decided. The first model (no champion) meets the floors only: value bounds, baselines,
data and serving; the change, bootstrap and slice rules need a champion to compare with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flows.policy import PromoteConfig
from flows.scoring import Interval
from flows.serving import ServingResult


@dataclass(frozen=True)
class Check:
    """One rule of the policy applied to the challenger."""

    kind: str
    """data | serving | bound | baseline | change | bootstrap | slice."""
    name: str
    """Which rule, e.g. `lower_bound:macro_f1` or `slice:script=han`."""
    passed: bool
    """False fails the gate."""
    detail: str
    """One line a person reads: what was compared and how it came out."""
    metric: str | None = None
    """The metric the rule is about, if any."""
    slice: str | None = None
    """`dimension=value` for slice rules."""
    threshold: float | None = None
    """The value the observed one was held against."""
    observed: float | None = None
    """The challenger's value (or its change against the champion); None when missing, which fails."""
    interval: list[float] | None = None
    """The bootstrap interval of `observed`, when one was computed."""


@dataclass(frozen=True)
class Evidence:
    """Everything the gate looks at; gathered by `flows.promote` on one test snapshot."""

    challenger: dict[str, float | None]
    """The challenger's metrics on the test documents."""
    champion: dict[str, float | None] | None
    """The champion's metrics on the same documents; None before the first promotion."""
    improvement: Interval | None = None
    """Paired bootstrap interval of the primary metric's improvement (positive: challenger better)."""
    slices: list[dict[str, Any]] = field(default_factory=list)
    """Rows of `flows.slices.slice_table`."""
    baselines: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Baseline name → metrics on the same documents."""
    validation: dict[str, Any] | None = None
    """The snapshot's validation summary (`success`, `table_rules`, an optional `drift` section)."""
    serving: ServingResult | None = None
    """The fresh-process load-and-predict result."""

    def __post_init__(self) -> None:
        if self.champion is not None and self.improvement is None:
            raise ValueError("a champion comparison needs the bootstrap interval of the improvement")


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and every check behind it."""

    promote: bool
    """True when every check passed."""
    reason: str
    """One line for the history: why the challenger was or was not promoted."""
    checks: list[Check] = field(default_factory=list)
    """Every rule applied, passed or not, in policy order."""

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def _data_checks(validation: dict[str, Any] | None, cfg: PromoteConfig) -> list[Check]:
    if validation is None:
        return [Check("data", "validation", False, "no validation summary for this snapshot")]
    failing = sorted(name for name, rule in validation.get("table_rules", {}).items()
                     if rule.get("severity") == "fail" and not rule.get("success", True))
    ok = bool(validation.get("success")) and not failing
    checks = [Check("data", "validation", ok or cfg.data.allow_failed_validation,
                    "validation passed" if ok else
                    f"validation failed ({', '.join(failing) or 'success is false'})"
                    + ("; overridden by promote.data.allow_failed_validation" if cfg.data.allow_failed_validation else ""))]
    drift = validation.get("drift")
    if drift is not None:  # the hook a drift stage fills in: {"score", "budget", optional "over_budget"}
        score, budget = drift.get("score"), drift.get("budget")
        over = bool(drift.get("over_budget", score is not None and budget is not None and score > budget))
        checks.append(Check("data", "drift", not over or cfg.data.allow_drift,
                            f"drift {_f(score)} {'over' if over else 'within'} budget {_f(budget)}"
                            + ("; overridden by promote.data.allow_drift" if over and cfg.data.allow_drift else ""),
                            threshold=budget, observed=score))
    return checks


def _serving_check(serving: ServingResult | None, cfg: PromoteConfig) -> Check:
    if serving is None or not serving.loaded:
        return Check("serving", "serving", False,
                     f"model does not serve: {serving.error if serving else 'not checked'}")
    budget = cfg.serving.max_latency_ms
    problems = []
    if serving.p95_latency_ms is not None and serving.p95_latency_ms > budget:
        problems.append(f"p95 latency {serving.p95_latency_ms:.1f} ms over {budget:g} ms")
    if serving.agreement is not None and serving.agreement < 1.0:
        problems.append(f"fresh process agrees with evaluation on only {serving.agreement:.1%} of the sample")
    return Check("serving", "serving", not problems,
                 "; ".join(problems) or f"loads in {serving.load_seconds:.1f} s, p95 {serving.p95_latency_ms:.1f} ms",
                 threshold=budget, observed=serving.p95_latency_ms)


def _metric_checks(ev: Evidence, cfg: PromoteConfig) -> list[Check]:
    checks = []
    for name, rule in cfg.metrics.items():
        value = ev.challenger.get(name)
        if rule.lower_bound is not None:
            checks.append(Check("bound", f"lower_bound:{name}", value is not None and value >= rule.lower_bound,
                                f"{name} {_f(value)} vs lower bound {rule.lower_bound:g}", name,
                                threshold=rule.lower_bound, observed=value))
        if rule.upper_bound is not None:
            checks.append(Check("bound", f"upper_bound:{name}", value is not None and value <= rule.upper_bound,
                                f"{name} {_f(value)} vs upper bound {rule.upper_bound:g}", name,
                                threshold=rule.upper_bound, observed=value))
        if ev.champion is None:
            continue
        old = ev.champion.get(name)
        change = None if value is None or old is None else (value - old) * (1 if rule.direction == "higher" else -1)
        change = None if change is None else round(change, 6)
        if rule.min_change is not None:
            checks.append(Check("change", f"min_change:{name}", change is not None and change >= rule.min_change,
                                f"{name} change {_f(change)} vs the champion's {_f(old)} (at least {rule.min_change:+g})",
                                name, threshold=rule.min_change, observed=change))
        if rule.min_relative_change is not None:
            rel = None if change is None or not old else round(change / abs(old), 6)
            checks.append(Check("change", f"min_relative_change:{name}", rel is not None and rel >= rule.min_relative_change,
                                f"{name} relative change {_f(rel)} (at least {rule.min_relative_change:+g})",
                                name, threshold=rule.min_relative_change, observed=rel))
        if rule.max_change is not None:
            checks.append(Check("change", f"max_change:{name}", change is not None and change <= rule.max_change,
                                f"{name} improved by {_f(change)}; more than {rule.max_change:g} suggests leakage"
                                if change is not None and change > rule.max_change else
                                f"{name} change {_f(change)} within the cap {rule.max_change:g}",
                                name, threshold=rule.max_change, observed=change))
    return checks


def _baseline_checks(ev: Evidence, cfg: PromoteConfig) -> list[Check]:
    primary, value = cfg.primary_metric, ev.challenger.get(cfg.primary_metric)
    checks = []
    for name, margin, beat in (("majority", cfg.baselines.majority_margin, True),
                               ("tfidf_lr", cfg.baselines.tfidf_tolerance, False)):
        if margin is None:
            continue
        base = ev.baselines.get(name, {}).get(primary)
        if base is None:
            checks.append(Check("baseline", f"baseline:{name}", False, f"baseline {name}: {primary} missing", primary))
            continue
        # Beat the majority by more than a margin; stay within a tolerance of TF-IDF + LR.
        threshold = round(base + margin if beat else base - margin, 6)
        ok = value is not None and (value > threshold if beat else value >= threshold)
        checks.append(Check("baseline", f"baseline:{name}", ok,
                            f"{primary} {_f(value)} vs {name} {base:.4f} ({'margin' if beat else 'tolerance'} {margin:g})",
                            primary, threshold=threshold, observed=value))
    return checks


def _bootstrap_check(ev: Evidence, cfg: PromoteConfig) -> Check:
    iv, floor, primary = ev.improvement, cfg.bootstrap.min_improvement, cfg.primary_metric
    ok = iv is not None and iv.low == iv.low and iv.low > floor  # NaN (undefined metric) fails
    level = f"{cfg.bootstrap.confidence:.0%}"
    return Check("bootstrap", f"bootstrap:{primary}", ok,
                 f"{primary} improvement {iv.observed:+.4f}, {level} interval [{iv.low:+.4f}, {iv.high:+.4f}]"
                 f"{' above' if ok else ' not above'} {floor:+g}"
                 + (" (within noise)" if not ok and iv.observed > floor else ""),
                 primary, threshold=floor, observed=iv.observed, interval=iv.as_list())


def _slice_checks(ev: Evidence, cfg: PromoteConfig) -> list[Check]:
    rule, checks = cfg.slices, []
    for row in ev.slices:
        name = f"{row['dimension']}={row['value']}"
        if row.get("error"):
            checks.append(Check("slice", f"slice:{row['dimension']}", False, row["error"], rule.metric, row["dimension"]))
            continue
        if ev.champion is None or row["n"] < rule.min_size:
            continue  # reported in the verdict's slice table, not gated
        new, old = row["challenger"], row["champion"]
        threshold = None if old is None else round(old - rule.max_regression, 6)
        ok = new is not None and threshold is not None and new >= threshold
        checks.append(Check("slice", f"slice:{name}", ok,
                            f"slice {name} (n={row['n']}): {rule.metric} {_f(new)} vs champion {_f(old)}"
                            f" (tolerated regression {rule.max_regression:g})", rule.metric, name,
                            threshold=threshold, observed=new))
    for dimension in rule.dimensions:
        rows = [r for r in ev.slices if r["dimension"] == dimension and not r.get("error")]
        if rows and not any(r["n"] >= rule.min_size for r in rows) and ev.champion is not None:
            checks.append(Check("slice", f"slice:{dimension}", True,
                                f"no {dimension} slice has {rule.min_size} documents; none gated", rule.metric, dimension))
    return checks


def decide(ev: Evidence, cfg: PromoteConfig, champion_version: str | None = None) -> Verdict:
    """Apply every rule of `cfg` to the evidence; promote only when all pass."""
    checks = [*_data_checks(ev.validation, cfg), _serving_check(ev.serving, cfg), *_metric_checks(ev, cfg),
              *_baseline_checks(ev, cfg)]
    if ev.champion is not None:
        checks.append(_bootstrap_check(ev, cfg))
    checks += _slice_checks(ev, cfg)
    failed = [c for c in checks if not c.passed]
    primary = cfg.primary_metric
    if failed:
        reason = "refused: " + "; ".join(c.detail for c in failed[:4]) + (
            f"; and {len(failed) - 4} more" if len(failed) > 4 else "")
    elif ev.champion is None:
        reason = f"first model: every floor met ({primary} {_f(ev.challenger.get(primary))})"
    else:
        iv = ev.improvement
        reason = (f"{primary} {_f(ev.challenger.get(primary))} beats champion {champion_version or ''}"
                  f" {_f(ev.champion.get(primary))}: improvement {iv.observed:+.4f},"
                  f" {cfg.bootstrap.confidence:.0%} interval [{iv.low:+.4f}, {iv.high:+.4f}]; no slice regressed").replace("  ", " ")
    return Verdict(promote=not failed, reason=reason, checks=checks)
