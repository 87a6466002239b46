"""The lifecycle as a Prefect flow: each DVC stage of `dvc.yaml` is its own Prefect task.

A task runs `dvc repro --single-item STAGE`, so a Prefect run and a hand-run `dvc repro` share one DAG,
one cache and one `dvc.lock`, and a stage whose deps, params and code are unchanged is skipped on both
fronts. Training runs inside the stage's own process (started by DVC), so Lightning's ddp can relaunch it
freely. After each stage the task publishes that stage's outputs as Prefect artifacts with stable keys,
and the flow run is renamed after its data snapshot and what changed.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run

from data_checks.io import DoclifeError, read_json
from flows.cli import STAGES
from flows.config import load_params
from flows.dvc import StageRun, changed_paths, dvc_status, repro_stage, run_dvc, stage_error, workspace_lock
from flows.layout import Layout
from flows.promote import champion_status
from lightning_modules.progress import parse_progress

TRAINING_STAGES = ("pretrain", "finetune")


def best_effort(what: str, call: Callable[[], Any]) -> Any:
    """Run an API call the run can do without (an artifact, a new name): a server that is briefly away
    must not fail a stage that keeps working. Prefect's own state updates retry on their own."""
    try:
        return call()
    except httpx.HTTPError as exc:  # connection errors and Prefect's HTTP status errors alike
        get_run_logger().warning("could not %s (%s: %s); the run goes on", what, type(exc).__name__, exc)
        return None


# ------------------------------------------------------------------------------------------ artifacts
def _publish_validation(at: Layout) -> None:
    summary = read_json(at.validation_summary)
    rows = [{"rule": name, "severity": rule["severity"], "rows failed": rule["failed_rows"],
             "checks": rule["description"]} for name, rule in summary["row_rules"].items()]
    rows += [{"rule": name, "severity": rule["severity"], "rows failed": "-",
              "checks": f"{rule['description']}: {'pass' if rule['success'] else 'FAIL'}"}
             for name, rule in summary["table_rules"].items()]
    create_table_artifact(key=f"{at.name}-validation-summary", table=rows, description=(
        f"{summary['validated']} of {summary['rows_in']} rows validated, {summary['quarantined']} quarantined, "
        f"{summary.get('warnings', 0)} warnings. "
        f"Data Docs: file://{at.data_docs / 'index.html'}"))


def _publish_clean(at: Layout) -> None:
    summary = read_json(at.clean_summary)
    rows = [{"fix": name, "rows": count} for name, count in summary["fixes"].items()]
    create_table_artifact(key=f"{at.name}-clean-report", table=rows, description=(
        f"{summary['rows_fixed']} of {summary['rows']} rows repaired, {summary['duplicates_dropped']} exact "
        f"duplicates dropped (they point at the kept copy). Per row: file://{at.clean_report}"))


def _publish_snapshot(at: Layout) -> None:
    m = read_json(at.snapshot / "manifest.json")
    create_markdown_artifact(key=f"{at.name}-snapshot-manifest", markdown=(
        f"# Snapshot `{m['snapshot']}`\n\n| | |\n|---|---|\n| content sha256 | `{m['content_sha256']}` |\n"
        f"| rows in | {m.get('rows_in')} |\n| validated | {m['rows']} |\n| quarantined | {m.get('quarantined')} |\n"
        f"| splits | {m.get('splits')} |\n| labels | {m.get('labels')} |\n"))


def _publish_curve(at: Layout, stage: str) -> None:
    with at.curve(stage).open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    stride = max(1, len(rows) // 40)  # a readable table: about 40 points of the curve
    shown = rows[::stride] + ([rows[-1]] if rows and (len(rows) - 1) % stride else [])
    metrics = read_json(at.metrics(stage))
    create_table_artifact(key=f"{at.name}-{stage}-curve", table=shown, description=(
        f"{stage} loss curve ({len(rows)} points, every {stride}th shown); metrics: "
        + ", ".join(f"{k} {v}" for k, v in metrics.items() if isinstance(v, int | float))))


def _publish_evaluation(at: Layout) -> None:
    m = read_json(at.metrics("evaluate"))
    rows = [{"metric": name, "value": m[name]} for name in ("accuracy", "macro_f1", "roc_auc")]
    rows.append({"metric": "majority baseline macro_f1", "value": m["baselines"]["majority"]["macro_f1"]})
    rows += [{"metric": f"{label} precision / recall", "value": f"{c['precision']:.3f} / {c['recall']:.3f}"}
             for label, c in m["per_class"].items()]
    create_table_artifact(key=f"{at.name}-evaluation", table=rows, description=f"test split of snapshot {m['snapshot']}")


def _publish_verdict(at: Layout) -> None:
    v = read_json(at.verdict)

    def cell(value: Any) -> str:
        return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    checks = "\n".join(
        f"| {c['name']} | {cell(c.get('observed'))} | {cell(c.get('threshold'))} | "
        f"{'–' if not c.get('interval') else '[%+.4f, %+.4f]' % tuple(c['interval'])} | "
        f"{'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in v["checks"])
    create_markdown_artifact(key=f"{at.name}-gate-verdict", markdown=(
        f"# {v['version']}: {v.get('decision', 'promoted' if v['promoted'] else 'not promoted')}\n\n{v['reason']}\n\n"
        f"Snapshot `{v.get('data_snapshot')}`. Champion before: {v['champion_before']}, after: {v['champion_after']}\n\n"
        f"| check | observed | threshold | interval | result | detail |\n|---|---|---|---|---|---|\n{checks}\n"))
    card = at.model_card
    if card.is_file():
        create_markdown_artifact(key=f"{at.name}-model-card", markdown=card.read_text(encoding="utf-8"),
                                 description=f"model card of {v['version']}")


PUBLISHERS = {
    "clean": _publish_clean,
    "validate": _publish_validation,
    "snapshot": _publish_snapshot,
    "pretrain": lambda at: _publish_curve(at, "pretrain"),
    "finetune": lambda at: _publish_curve(at, "finetune"),
    "evaluate": _publish_evaluation,
    "promote": _publish_verdict,
}


# ------------------------------------------------------------------------------------------ tasks
class _ProgressArtifact:
    """Turns a training stage's progress lines into one Prefect progress artifact, updated as it runs."""

    def __init__(self, at: Layout, stage: str) -> None:
        self.key, self.stage, self.artifact_id, self.last = f"{at.name}-{stage}-progress", stage, None, 0.0

    def __call__(self, line: str) -> None:
        progress = parse_progress(line)
        if progress is None or progress.stage != self.stage:
            return
        text = f"{self.stage}: step {progress.step} of {progress.total}, loss {progress.loss}"
        if self.artifact_id is None:
            self.artifact_id = best_effort("create the progress artifact", lambda: create_progress_artifact(
                progress.percent, key=self.key, description=text))
        elif time.monotonic() - self.last > 2 or progress.percent >= 100:  # at most one update per 2 s
            best_effort("update the progress artifact", lambda: update_progress_artifact(
                self.artifact_id, progress.percent, description=text))
        self.last = time.monotonic()


@task(cache_policy=NO_CACHE)
def run_stage(workspace: str, stage: str, up_to_date: bool = False) -> dict[str, Any]:
    """Reproduce one DVC stage (or find it up to date) and publish its outputs."""
    log = get_run_logger()
    at = Layout(Path(workspace))
    if up_to_date:
        result = StageRun(stage=stage, ran=False, seconds=0.0)
    else:
        progress = _ProgressArtifact(at, stage) if stage in TRAINING_STAGES else None

        def on_line(line: str) -> None:
            log.info(line)
            if progress is not None:
                progress(line)

        result = repro_stage(at.root, stage, on_line)
    log.info("stage %s %s in %.1f s", stage, "ran" if result.ran else "was up to date, skipped", result.seconds)
    if stage in PUBLISHERS:
        best_effort(f"publish the {stage} artifacts", lambda: PUBLISHERS[stage](at))
    return asdict(result)


# A training stage that fails (a lost node, an OOM) is tried once more; it resumes from its last checkpoint.
run_training_stage = run_stage.with_options(retries=1, retry_delay_seconds=5)


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30], task_run_name="push-{stage}")
def push_outputs(workspace: str, remote: str | None, stage: str) -> None:
    """Push a stage's outputs to the DVC remote (None: the default one), where a teammate's clone and
    `doclife reproduce` find them; retried, since remotes are network I/O."""
    code, lines = run_dvc(Path(workspace), ["push", *(["--remote", remote] if remote else []), stage],
                          get_run_logger().info)
    if code != 0:
        raise DoclifeError(f"dvc push to remote {remote or '(default)'} failed: {stage_error(lines)}")


# ------------------------------------------------------------------------------------------ the flow
def _rename_run(at: Layout, name: str) -> None:
    """Name the run after its workspace, snapshot and outcome: `reviews · snap-… · new data`."""
    name = f"{at.name} · {name}"

    def rename() -> None:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run_id=flow_run.id, name=name)

    if flow_run.id:
        best_effort(f"rename the run to {name!r}", rename)


def _what_changed(ran: list[str]) -> str:
    if not ran:
        return "nothing changed"
    if "ingest" in ran or "sample" in ran:
        return "new data"
    return f"re-ran {', '.join(ran)}"


def edited_sample(at: Layout, status: dict[str, list]) -> str | None:
    """Why a run must not start when the built-in sample, an output of the `sample` stage, was edited by hand:
    the stage would regenerate it and silently drop the edits. None when it was not edited."""
    how = changed_paths(status, "sample", "changed outs").get(str(at.sample_corpus.relative_to(at.root)))
    if how != "modified":
        return None
    return (f"{at.sample_corpus}: the built-in sample is generated by the `sample` stage and was edited by hand; "
            f"a run would regenerate it and drop the edits. Copy it and run on the copy: cp {at.sample_corpus} "
            f"data/raw/mine.csv && doclife run --source data/raw/mine.csv")


def uses_sample(at: Layout, source: str) -> bool:
    """Whether the source is the built-in sample corpus, which only then is generated by its own stage."""
    return (at.root / source).resolve() == at.sample_corpus


@flow(name="doclife-lifecycle")
def lifecycle(workspace: str = ".") -> dict[str, Any]:
    """ingest → validate → snapshot → tokenize → pretrain → finetune → evaluate → promote."""
    log = get_run_logger()
    at = Layout(Path(workspace))
    started = time.perf_counter()
    snapshot_id, stage = "no snapshot", "start"
    with workspace_lock(at.root, log.info):
        try:
            params = load_params(at.params)
            stages = list(STAGES if uses_sample(at, params.ingest.source) else STAGES[1:])
            # The `code` stage, always run (that is how an upgrade is noticed): each stage's stamp of the
            # installed code it runs, recorded in dvc.lock like any output.
            repro_stage(at.root, "code", lambda line: None)
            # One `dvc status` up front: when nothing changed, no stage needs a DVC call of its own.
            status = dvc_status(at.root, stages)
            if "sample" in stages and (refusal := edited_sample(at, status)):
                raise DoclifeError(refusal)
            runs: dict[str, dict[str, Any]] = {}
            for stage in stages:
                task_fn = run_training_stage if stage in TRAINING_STAGES else run_stage
                runs[stage] = task_fn.with_options(name=stage, task_run_name=stage)(
                    str(at.root), stage, up_to_date=not status)
                if stage in ("snapshot", "tokenize") and runs[stage]["ran"]:
                    push_outputs(str(at.root), params.snapshot.remote, stage)
                if stage == "snapshot":
                    snapshot_id = read_json(at.snapshot / "manifest.json")["snapshot"]
                    _rename_run(at, f"{snapshot_id} · running")
        except (KeyboardInterrupt, SystemExit, TerminationSignal):
            _rename_run(at, f"{snapshot_id} · stopped at {stage}")  # Ctrl-C, or `doclife serve` stopping
            raise
        except BaseException as exc:
            # The run's name says it failed, where and why, whatever ended it (a stage, the API, a bug).
            cause = (str(exc).splitlines() or [type(exc).__name__])[0].removeprefix(f"stage {stage!r} failed: ")
            _rename_run(at, f"{snapshot_id} · failed at {stage}: {cause}")
            raise
        ran = [name for name, r in runs.items() if r["ran"]]
        _rename_run(at, f"{snapshot_id} · {_what_changed(ran)}")

    seconds = round(time.perf_counter() - started, 1)
    stage_seconds = round(sum(r["seconds"] for r in runs.values()), 1)
    verdict = read_json(at.verdict)
    best_effort("publish the run summary", lambda: create_markdown_artifact(key=f"{at.name}-run-summary", markdown=(
        f"# {snapshot_id}: {_what_changed(ran)}\n\n"
        + "\n".join(f"- **{name}**: {'ran' if r['ran'] else 'unchanged'} ({r['seconds']} s)" for name, r in runs.items())
        + f"\n\nGate: {verdict['reason']}\n\nFlow {seconds} s, of which stages {stage_seconds} s.\n")))
    return {
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "snapshot": snapshot_id,
        "stages": {name: "ran" if r["ran"] else "skipped" for name, r in runs.items()},
        "seconds": {"flow": seconds, "stages": stage_seconds,
                    "by_stage": {name: r["seconds"] for name, r in runs.items()}},
        "verdict": verdict["reason"],
        **champion_status(at.registry(params.promote.registry)),
        "reports": {"validation": str(at.validation_summary), "data_docs": str(at.data_docs / "index.html"),
                    "quarantine": str(at.quarantine), "evaluation": str(at.metrics("evaluate")),
                    "confusion_matrix": str(at.confusion_png), "verdict": str(at.verdict)},
    }
