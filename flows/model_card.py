"""The model card: one Markdown page per registered version, written when the gate decides about it.

It says what a reviewer asks first: which data (snapshot hash), which code, parameters and starting
checkpoint, how good (metrics with bootstrap intervals, baselines, slices) and what the gate decided, check
by check.
"""

from __future__ import annotations

import json
from typing import Any


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _base_checkpoint(entry: dict[str, Any]) -> str:
    """Where pretraining started: the champion it continued (named by version) or the checkpoint directory."""
    lineage = entry.get("lineage") or {}
    if "base_checkpoint" not in lineage:
        return "–"  # registered before lineage recorded it
    base = lineage["base_checkpoint"]
    if not base:
        return "none: pretrained from scratch"
    origin = base["origin"]
    named = origin if origin.startswith("champion ") else f"`{origin}`"
    return f"trained from {named} (sha256 `{base['sha256'][:16]}…`)"


def render_card(entry: dict[str, Any], verdict: dict[str, Any]) -> str:
    """Markdown for the version `entry` (a registry record) and the gate's `verdict` about it."""
    intervals = verdict.get("intervals") or {}
    champion = verdict.get("champion_scores") or {}
    metrics = _table(["metric", "value", "interval", "champion", *verdict.get("baselines", {})], [
        [m, v, "–" if m not in intervals else f"[{intervals[m][0]:.4f}, {intervals[m][1]:.4f}]", champion.get(m),
         *(b.get(m) for b in verdict.get("baselines", {}).values())]
        for m, v in verdict.get("challenger", {}).items()])
    slices = _table(["slice", "n", "challenger", "champion"], [
        [f"{s['dimension']}={s['value']}", s["n"], s.get("challenger"), s.get("champion")]
        for s in verdict.get("slices", []) if not s.get("error")])
    checks = _table(["check", "passed", "threshold", "observed", "interval", "detail"], [
        [c["name"], "pass" if c["passed"] else "**FAIL**", c.get("threshold"), c.get("observed"),
         "–" if not c.get("interval") else f"[{c['interval'][0]:+.4f}, {c['interval'][1]:+.4f}]", c["detail"]]
        for c in verdict.get("checks", [])])
    improvement = verdict.get("improvement")
    params = json.dumps(entry.get("params") or {}, indent=2, ensure_ascii=False)
    return f"""# Model card: {entry['version']}

**Gate: {verdict['decision']}.** {verdict['reason']}

| | |
|---|---|
| version | `{entry['version']}` (immutable; model sha256 `{entry['model_sha256'][:16]}…`) |
| registered | {entry.get('registered_at')} |
| data snapshot | `{entry.get('data_snapshot')}` (content sha256 `{entry.get('content_sha256')}`) |
| base checkpoint | {_base_checkpoint(entry)} |
| code version | `{entry.get('code_version')}` |
| labels | {', '.join(entry.get('labels') or [])} |
| test documents | {verdict.get('n_test')} |
| champion before / after | {verdict.get('champion_before')} / {verdict.get('champion_after')} |
| champion re-scored on this snapshot | {verdict.get('champion_rescored')} |
| gate policy | `{verdict.get('policy')}` |
| decided by | {verdict.get('actor')} |

## Metrics (test split, {int(float(verdict.get('confidence', 0.95)) * 100)}% paired-bootstrap intervals)

{metrics}

{"Improvement of " + improvement['metric'] + f" over the champion: {improvement['observed']:+.4f}, interval "
 f"[{improvement['interval'][0]:+.4f}, {improvement['interval'][1]:+.4f}]." if improvement else "No champion to compare with: the first model meets the floors only."}

## Slices

{slices}

## Gate verdict

{checks}

## Parameters

```json
{params}
```
"""
