"""The lifecycle as a Prefect flow: each DVC stage of `dvc.yaml` is its own Prefect task.

A task runs `dvc repro --single-item STAGE`, so a Prefect run and a hand-run `dvc repro` share one DAG,
one cache and one `dvc.lock`, and a stage whose deps, params and code are unchanged is skipped on both
fronts. Training runs inside the stage's own process (started by DVC), so Lightning's ddp can relaunch it
freely. After each stage the task publishes that stage's outputs as Prefect artifacts with stable keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from data_checks.io import DoclifeError, read_json
from flows.cli import STAGES
from flows.config import load_params
from flows.dvc import repro_stage, run_dvc, stage_error
from flows.layout import Layout
from flows.promote import champion_status


def _publish_validation(at: Layout) -> None:
    summary = read_json(at.validation_summary)
    rows = [{"rule": name, "severity": rule["severity"], "rows failed": rule["failed_rows"],
             "checks": rule["description"]} for name, rule in summary["row_rules"].items()]
    rows += [{"rule": name, "severity": rule["severity"], "rows failed": "-",
              "checks": f"{rule['description']}: {'pass' if rule['success'] else 'FAIL'}"}
             for name, rule in summary["table_rules"].items()]
    create_table_artifact(key="validation-summary", table=rows, description=(
        f"{summary['validated']} of {summary['rows_in']} rows validated, {summary['quarantined']} quarantined. "
        f"Data Docs: file://{at.data_docs / 'index.html'}"))


def _publish_snapshot(at: Layout) -> None:
    m = read_json(at.snapshot / "manifest.json")
    create_markdown_artifact(key="snapshot-manifest", markdown=(
        f"# Snapshot `{m['snapshot']}`\n\n| | |\n|---|---|\n| content sha256 | `{m['content_sha256']}` |\n"
        f"| rows in | {m.get('rows_in')} |\n| validated | {m['rows']} |\n| quarantined | {m.get('quarantined')} |\n"
        f"| splits | {m.get('splits')} |\n| labels | {m.get('labels')} |\n"))


def _publish_evaluation(at: Layout) -> None:
    m = read_json(at.metrics("evaluate"))
    rows = [{"metric": name, "value": round(m[name], 4)} for name in ("accuracy", "macro_f1", "roc_auc")]
    rows.append({"metric": "majority baseline macro_f1", "value": round(m["baselines"]["majority"]["macro_f1"], 4)})
    create_table_artifact(key="evaluation", table=rows, description=f"test split of snapshot {m['snapshot']}")


def _publish_verdict(at: Layout) -> None:
    v = read_json(at.verdict)

    def cell(value: Any) -> str:
        return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    checks = "\n".join(
        f"| {c['name']} | {cell(c.get('observed'))} | {cell(c.get('threshold'))} | "
        f"{'–' if not c.get('interval') else '[%+.4f, %+.4f]' % tuple(c['interval'])} | "
        f"{'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in v["checks"])
    create_markdown_artifact(key="gate-verdict", markdown=(
        f"# {v['version']}: {v.get('decision', 'promoted' if v['promoted'] else 'not promoted')}\n\n{v['reason']}\n\n"
        f"Snapshot `{v.get('data_snapshot')}`. Champion before: {v['champion_before']}, after: {v['champion_after']}\n\n"
        f"| check | observed | threshold | interval | result | detail |\n|---|---|---|---|---|---|\n{checks}\n"))
    card = at.verdict.with_name("model_card.md")
    if card.is_file():
        create_markdown_artifact(key="model-card", markdown=card.read_text(encoding="utf-8"),
                                 description=f"model card of {v['version']}")


PUBLISHERS: dict[str, Callable[[Layout], None]] = {
    "validate": _publish_validation, "snapshot": _publish_snapshot,
    "evaluate": _publish_evaluation, "promote": _publish_verdict,
}


@task(cache_policy=NO_CACHE)
def run_stage(workspace: str, stage: str) -> dict[str, Any]:
    """Reproduce one DVC stage (or find it up to date) and publish its outputs."""
    log = get_run_logger()
    at = Layout(Path(workspace))
    result = repro_stage(at.root, stage, log.info)
    log.info("stage %s %s in %.1f s", stage, "ran" if result.ran else "was up to date, skipped", result.seconds)
    if stage in PUBLISHERS:
        PUBLISHERS[stage](at)
    return asdict(result)


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def push_snapshot(workspace: str, remote: str) -> None:
    """Push the snapshot's data to the DVC remote; retried, since remotes are network I/O."""
    code, lines = run_dvc(Path(workspace), ["push", "--remote", remote, "snapshot"], get_run_logger().info)
    if code != 0:
        raise DoclifeError(f"dvc push to remote {remote!r} failed: {stage_error(lines)}")


@flow(name="doclife-lifecycle")
def lifecycle(workspace: str = ".") -> dict[str, Any]:
    """ingest → validate → snapshot → tokenize → pretrain → finetune → evaluate → promote."""
    at = Layout(Path(workspace))
    params = load_params(at.params)
    # The built-in sample corpus is generated by its own stage only when it is the source.
    uses_sample = (at.root / params.ingest.source).resolve() == at.sample_corpus
    stages = STAGES if uses_sample else STAGES[1:]
    runs = {}
    for stage in stages:
        runs[stage] = run_stage.with_options(name=stage, task_run_name=stage)(str(at.root), stage)
        if stage == "snapshot":
            push_snapshot(str(at.root), params.snapshot.remote)
    return {
        "stages": {name: "ran" if r["ran"] else "skipped" for name, r in runs.items()},
        "verdict": read_json(at.verdict)["reason"],
        **champion_status(at.registry(params.promote.registry)),
        "reports": {"validation": str(at.validation_summary), "data_docs": str(at.data_docs / "index.html"),
                    "quarantine": str(at.quarantine), "evaluation": str(at.metrics("evaluate")),
                    "confusion_matrix": str(at.confusion_png), "verdict": str(at.verdict)},
    }
