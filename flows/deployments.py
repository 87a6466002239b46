"""Deployments served by `doclife serve` (`make schedule`): the lifecycle on a cron schedule, and a watcher
that starts the lifecycle as soon as the source corpus's content changes.

Both run in the serving process against a Prefect server (`make ui`); each flow run is its own process.
To run them under a work pool instead, see the README ("Scheduling").
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, serve
from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval

from flows.config import load_params
from flows.dvc import StageFailed, run_dvc, stage_error
from flows.layout import Layout
from flows.lifecycle import lifecycle

LIFECYCLE_DEPLOYMENT = "doclife-lifecycle/scheduled"


def source_changed(workspace: Path) -> bool:
    """Whether the source file differs from the one recorded in dvc.lock, or was never ingested."""
    at = Layout(workspace)
    if not at.ingested.exists():
        return True
    source = load_params(at.params).ingest.source
    code, lines = run_dvc(at.root, ["status", "--json", "ingest"], lambda line: None)
    if code != 0:
        raise StageFailed(f"dvc status failed: {stage_error(lines)}")
    # e.g. {"ingest": [{"changed deps": {"data/raw/sample.csv": "modified"}}]}
    entries = json.loads("\n".join(lines) or "{}").get("ingest", [])
    return any(isinstance(entry, dict) and source in entry.get("changed deps", {}) for entry in entries)


@flow(name="doclife-watch-source")
def watch_source(workspace: str = ".") -> str:
    """Start the lifecycle deployment when the source corpus changed; otherwise do nothing."""
    log = get_run_logger()
    if not source_changed(Path(workspace)):
        log.info("source corpus unchanged")
        return "unchanged"
    run = run_deployment(LIFECYCLE_DEPLOYMENT, parameters={"workspace": workspace}, timeout=0)
    log.info("source corpus changed: started lifecycle run %s", run.name)
    return f"started {run.name}"


def build_deployments(workspace: Path) -> list[RunnerDeployment]:
    """The scheduled lifecycle and the source watcher, with their schedules from params.yaml."""
    at = Layout(workspace)
    schedule = load_params(at.params).schedule
    parameters = {"workspace": str(at.root)}
    return [
        lifecycle.to_deployment(name="scheduled", parameters=parameters,
                                schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
                                description="The whole lifecycle; stages with unchanged inputs are skipped."),
        watch_source.to_deployment(name="on-new-data", parameters=parameters,
                                   schedules=[Interval(schedule.watch_every_seconds)],
                                   description="Starts the lifecycle when the source corpus changes."),
    ]


def serve_deployments(workspace: Path) -> None:
    """Serve both deployments until interrupted (needs PREFECT_API_URL pointing at a running server)."""
    serve(*build_deployments(workspace))
