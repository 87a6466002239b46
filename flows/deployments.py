"""Deployments served by `doclife serve` (`make schedule`): the lifecycle on a cron schedule, and a watcher
that starts the lifecycle once for each change of the source corpus.

Both run in the serving process against a Prefect server (`make ui`); each flow run is its own process.
What keeps scheduled runs sane over a server's and the serving process's life:

- one run of each deployment at a time: a run that would overlap is cancelled before its process starts
  (a deployment concurrency limit with the CANCEL_NEW strategy);
- runs missed while `serve` was down are not back-filled: at start, the newest missed run of each deployment
  is kept as the catch-up and the older ones are deleted, and runs a killed `serve` left under way with no
  process are marked Crashed (they would hold the deployment's slot);
- a run whose process dies without a word (kill -9, a lost machine) is marked Crashed when its heartbeats
  stop (a server automation), and stopping `serve` stops its runs and marks them Cancelled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
from pathlib import Path
from uuid import UUID

import httpx
import psutil
from prefect import flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterExpectedStartTime,
                                            FlowRunFilterState, FlowRunFilterStateType)
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy, FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval
from prefect.settings import PREFECT_API_URL

from data_checks.io import DoclifeError, read_json, write_json
from data_checks.sources import fingerprint as source_fingerprint
from flows.config import load_params
from flows.dvc import changed_paths, dvc_status
from flows.layout import Layout
from flows.lifecycle import edited_sample, lifecycle, uses_sample

ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
# A run in one of these states has a process (or is about to); with SCHEDULED, it holds or is about to take
# its deployment's single slot.
IN_A_PROCESS = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
UNDER_WAY = [StateType.SCHEDULED, *IN_A_PROCESS]
ENDED_FOR_GOOD = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED}
CRASH_AUTOMATION = "doclife: mark runs whose heartbeats stopped as Crashed"


# ------------------------------------------------------------------------------------------ the watcher
def source_changed(at: Layout, status: dict[str, list]) -> bool:
    """Whether the source (a file, or any file in its directory) differs from dvc.lock, or was never ingested."""
    if not at.ingested.exists():
        return True
    # DVC names a directory without its trailing slash: compare normalised paths.
    changed = {os.path.normpath(path) for path in changed_paths(status, "ingest", "changed deps")}
    return os.path.normpath(load_params(at.params).ingest.source) in changed


def deployment_runs(client: SyncPrefectClient, deployment_ids: list[UUID], states: list[StateType],
                    due_within: dt.timedelta | None = None, sort: FlowRunSort | None = None) -> list[FlowRun]:
    """The runs of the deployments in one of `states`; with `due_within`, only those due by now + it."""
    due = None if due_within is None else FlowRunFilterExpectedStartTime(
        before_=dt.datetime.now(dt.timezone.utc) + due_within)
    return client.read_flow_runs(sort=sort, flow_run_filter=FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)), expected_start_time=due))


@flow(name="doclife-watch-source")
def watch_source(workspace: str = ".") -> str:
    """Start the lifecycle deployment once for each change of the source corpus; otherwise do nothing."""
    log = get_run_logger()
    at = Layout(Path(workspace))
    source = at.root / load_params(at.params).ingest.source
    sample = uses_sample(at, str(source))
    # `dvc status ingest` leaves the upstream `sample` stage out: name it to see an edit of its output.
    status = dvc_status(at.root, ["sample", "ingest"] if sample else ["ingest"])
    if sample and (refusal := edited_sample(at, status)):
        log.warning(refusal)
        return "refused: the built-in sample was edited"
    if not source.exists() and not sample:  # the built-in sample is made by the run itself
        log.warning("%s: no such file (ingest.source in params.yaml); not starting a run", source)
        return "no source"
    if not source_changed(at, status):
        log.info("source corpus unchanged")
        return "unchanged"
    record_path = at.root / ".dvc/tmp/doclife-watch.json"
    fingerprint = source_fingerprint(source) if source.exists() else "not made yet"
    record = read_json(record_path) if record_path.is_file() else {}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(lifecycle_deployment(at))
        # Running, or due now: a run just created waits for the runner's next poll.
        if under_way := deployment_runs(client, [deployment.id], UNDER_WAY, due_within=dt.timedelta(seconds=30)):
            # That run reads the source when its ingest runs; if it started before the change, the next
            # check after it ends still sees the source differ from dvc.lock and starts one.
            log.info("source corpus changed; lifecycle run %s is under way, checking again after it", under_way[0].name)
            return "waiting"
        if record.get("fingerprint") == fingerprint:
            last = client.read_flow_run(UUID(record["flow_run_id"]))
            if last.state_type in ENDED_FOR_GOOD:
                log.warning("the lifecycle run %s for this version of %s ended %s; not starting another until the "
                            "source changes again", last.name, source.name, last.state_name)
                return f"not retried: {last.state_name}"
    run = run_deployment(lifecycle_deployment(at), parameters={"workspace": str(at.root)}, timeout=0)
    write_json(record_path, {"fingerprint": fingerprint, "flow_run_id": str(run.id)})
    log.info("source corpus changed: started lifecycle run %s", run.name)
    return f"started {run.name}"


# ------------------------------------------------------------------------------------------ serving
def lifecycle_deployment(at: Layout) -> str:
    return f"{lifecycle.name}/{at.name}-scheduled"


def build_deployments(workspace: Path) -> list[RunnerDeployment]:
    """The scheduled lifecycle and the source watcher, with their schedules from params.yaml, named after the
    workspace: several workspaces can be served against one Prefect server."""
    at = Layout(workspace)
    schedule = load_params(at.params).schedule
    parameters = {"workspace": str(at.root)}
    return [
        lifecycle.to_deployment(name=f"{at.name}-scheduled", parameters=parameters, concurrency_limit=ONE_AT_A_TIME,
                                schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
                                description="The whole lifecycle; stages with unchanged inputs are skipped."),
        watch_source.to_deployment(name=f"{at.name}-on-new-data", parameters=parameters, concurrency_limit=ONE_AT_A_TIME,
                                   schedules=[Interval(schedule.watch_every_seconds)],
                                   description="Starts the lifecycle once for each change of the source corpus."),
    ]


def skip_missed_runs(client: SyncPrefectClient, deployment_id: UUID) -> int:
    """Delete the runs that fell due while nobody served the deployment, but the newest (the catch-up run)."""
    missed = deployment_runs(client, [deployment_id], [StateType.SCHEDULED], due_within=dt.timedelta(0),
                             sort=FlowRunSort.EXPECTED_START_TIME_DESC)
    for run in missed[1:]:
        client.delete_flow_run(run.id)
    return max(0, len(missed) - 1)


def crash_orphaned_runs(client: SyncPrefectClient, deployment_ids: list[UUID]) -> int:
    """Mark Crashed the runs of the deployments left Pending or Running by a `serve` that was killed and
    that no process on this machine runs any more: each would hold its deployment's only slot."""
    from prefect.states import Crashed

    alive = set()
    for proc in psutil.process_iter(["environ"]):
        # The runner starts each flow run's process with the run's id in its environment.
        alive.add((proc.info["environ"] or {}).get("PREFECT__FLOW_RUN_ID"))
    orphans = [run for run in deployment_runs(client, deployment_ids, IN_A_PROCESS) if str(run.id) not in alive]
    for run in orphans:
        client.set_flow_run_state(run.id, Crashed(message="left under way by a doclife serve that was killed; "
                                                          "no process runs it"), force=True)
    return len(orphans)


def ensure_crash_automation(heartbeat_seconds: int) -> None:
    """A server automation that marks a flow run Crashed when it misses three heartbeats in a row
    (the recipe of Prefect's docs, "How to detect and respond to zombie flows")."""
    from prefect.automations import Automation
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=CRASH_AUTOMATION)
        return
    except ValueError:
        pass
    Automation(
        name=CRASH_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=dt.timedelta(seconds=3 * heartbeat_seconds)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=(
            f"no heartbeat for {3 * heartbeat_seconds} s: the process running this flow run died"))],
    ).create()


def end_unfinished_runs(deployment_ids: list[UUID]) -> int:
    """Stop this process's flow-run processes (each stops its stage's process group on SIGTERM), then mark
    every run of the deployments still Pending or Running as Cancelled: none stays "Running" for good."""
    from prefect.states import Cancelled

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=60)
    for child in alive:
        child.kill()
    with get_client(sync_client=True) as client:
        unfinished = deployment_runs(client, deployment_ids, IN_A_PROCESS)
        for run in unfinished:
            client.set_flow_run_state(run.id, Cancelled(message="doclife serve stopped while this run was under way"),
                                      force=True)
    return len(unfinished)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_deployments(workspace: Path) -> None:
    """Serve both deployments until interrupted (needs PREFECT_API_URL pointing at a running server)."""
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    if not PREFECT_API_URL.value():
        raise DoclifeError("serve needs a Prefect server: start one with `make ui`, then run `make schedule` "
                           "(or set PREFECT_API_URL=http://127.0.0.1:4200/api)")
    at = Layout(workspace)
    schedule = load_params(at.params).schedule
    # A run is taken up only when it falls due (the default takes it 10 s early): taken early, the next
    # watcher check collides with the one still running and is cancelled by the deployment's limit.
    runner = Runner(name=f"doclife-{at.root.name}", heartbeat_seconds=schedule.heartbeat_seconds,
                    prefetch_seconds=1)
    deployment_ids = [runner.add_deployment(deployment) for deployment in build_deployments(at.root)]
    with get_client(sync_client=True) as client:
        crashed = crash_orphaned_runs(client, deployment_ids)
        skipped = sum(skip_missed_runs(client, deployment_id) for deployment_id in deployment_ids)
    ensure_crash_automation(schedule.heartbeat_seconds)
    # Closing the terminal (SIGHUP) stops serving like Ctrl-C does, not half way with runs left "Running".
    # Ctrl-C raises at once too: asyncio.run's own handler only cancels the runner's main task, and a
    # cancellation that lands in one of Prefect's shielded sections is lost (serve went on serving).
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupt)
    print(json.dumps({"serving": [lifecycle_deployment(at), f"{watch_source.name}/{at.name}-on-new-data"],
                      "api": PREFECT_API_URL.value(), "orphaned_runs_crashed": crashed,
                      "missed_runs_skipped": skipped}), flush=True)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass
    finally:
        try:
            ended = end_unfinished_runs(deployment_ids)
        except httpx.HTTPError as exc:
            raise DoclifeError(f"stopped, but could not mark unfinished runs Cancelled: the server at "
                               f"{PREFECT_API_URL.value()} did not answer ({type(exc).__name__})") from None
        print(json.dumps({"stopped": True, "runs_cancelled": ended}), flush=True)
