"""Scheduled runs as a user meets them: a real Prefect server (`make ui`) and `doclife serve` (`make schedule`)
in a fresh workspace, with a schedule of every minute and a watcher on its source."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flows.config import set_param
from flows.server import local_server

BIN = Path(sys.executable).parent
# Deployments are named after the workspace ("ws").
LIFECYCLE, WATCHER = "doclife-lifecycle/ws-scheduled", "doclife-watch-source/ws-on-new-data"


def wait_for(what: str, condition: Callable[[], object], timeout: float, every: float = 2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


class Server:
    """Reads what a person would see in the UI: the runs of each deployment, their names and states."""

    def __init__(self, url: str) -> None:
        self.api = f"{url}/api"

    def runs(self, deployment: str) -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api}), get_client(sync_client=True) as client:
            return client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[deployment.split("/")[1]])))


def serve(workspace: Path, api: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with log.open("a") as out:
        return subprocess.Popen([str(BIN / "doclife"), "serve"], cwd=workspace, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    proc.send_signal(sig)  # Ctrl-C in the terminal of `make schedule`
    proc.wait(timeout=120)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, workspace_maker) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("served")
    workspace = workspace_maker(root / "ws")
    # A team's own corpus (not the generated demo sample): the built-in sample, copied out of data/.
    subprocess.run([str(BIN / "doclife"), "sample"], cwd=workspace, check=True, capture_output=True)
    (workspace / "corpus").mkdir()
    shutil.copy(workspace / "data/raw/sample.csv", workspace / "corpus/reviews.csv")
    shutil.rmtree(workspace / "data")
    # Pretraining skipped (max_steps 0) and one finetuning epoch: the runs' scheduling is under test here.
    for key, value in {"ingest.source": "corpus/reviews.csv", "schedule.cron": "* * * * *",
                       "schedule.watch_every_seconds": 10, "pretrain.max_steps": 0, "finetune.max_epochs": 1}.items():
        set_param(workspace / "params.yaml", key, value)
    with local_server(root / "prefect-home") as url:
        server, log = Server(url), root / "serve.log"
        proc = serve(workspace, server.api, log)
        try:
            yield {"workspace": workspace, "server": server, "proc": proc, "log": log, "root": root}
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_schedule_fires_and_the_run_completes_on_a_fresh_install(served):
    server = served["server"]
    done = wait_for("a scheduled lifecycle run completes", lambda: [
        run for run in server.runs(LIFECYCLE) if run.state and run.state.is_completed()], timeout=240)
    assert done[0].name.endswith("· new data"), done[0].name
    # The scheduler service of the server works: no scheduler error in its log.
    assert "InvalidRequestError" not in (served["root"] / "prefect-home/server.log").read_text()


@pytest.mark.slow
def test_one_change_of_the_source_starts_exactly_one_run(served):
    server, workspace = served["server"], served["workspace"]
    # Let the scheduled runs settle first: none under way.
    wait_for("no lifecycle run under way", lambda: not [
        run for run in server.runs(LIFECYCLE) if run.state and run.state.type.value in ("PENDING", "RUNNING")],
        timeout=240)
    # Runs that ended before the change; a cron run due now may be the one that picks the change up.
    before = {run.id for run in server.runs(LIFECYCLE) if run.state.is_final()}
    append_rows(workspace, "足球")
    new_data = wait_for("a run named '· new data' completes", lambda: [
        run for run in server.runs(LIFECYCLE) if run.id not in before and run.state.is_completed()
        and run.name.endswith("· new data")], timeout=300)
    # Several watcher checks later, still one run for the change (others, if any, found nothing changed).
    time.sleep(20)
    for_the_change = [run for run in server.runs(LIFECYCLE) if run.id not in before
                      and run.name.endswith("· new data")]
    assert len(for_the_change) == 1, [run.name for run in for_the_change]
    assert new_data[0].id == for_the_change[0].id


def under_way(server: Server) -> list:
    return [run for deployment in (LIFECYCLE, WATCHER) for run in server.runs(deployment)
            if run.state.type.value in ("PENDING", "RUNNING", "CANCELLING")]


def append_rows(workspace: Path, topic: str) -> None:
    with (workspace / "corpus/reviews.csv").open("a", encoding="utf-8") as fh:
        fh.write("\n".join(f"新到的第{i}条{topic}新闻，内容很精彩,sports" for i in range(20)) + "\n")


@pytest.mark.slow
def test_a_restart_after_serve_was_killed_runs_at_most_one_missed_run(served):
    server, workspace = served["server"], served["workspace"]
    os.killpg(served["proc"].pid, signal.SIGKILL)  # no clean shutdown: the schedules stay active
    # Down for over a minute: at least one cron run and about six watcher checks fall due unserved.
    time.sleep(65)
    restarted = time.time()
    served["proc"] = serve(workspace, server.api, served["log"])
    # Runs that fell due unserved were either cancelled by the server at once (a killed run still held the
    # deployment's slot) or skipped by serve at its start; the killed runs were marked Crashed.
    started = wait_for("the restarted serve reports its start", lambda: [
        json.loads(line) for line in served["log"].read_text().splitlines() if line.startswith('{"serving"')][1:],
        timeout=180)
    assert len(started) == 1 and {"orphaned_runs_crashed", "missed_runs_skipped"} <= set(started[-1])
    for deployment in (LIFECYCLE, WATCHER):
        def due_before(deployment: str = deployment) -> list:
            return [run for run in server.runs(deployment) if run.expected_start_time.timestamp() < restarted - 5]

        # Of the runs that fell due while nobody served, none is left waiting (the catch-up may still be on its
        # way to its process), at most one (the catch-up) ran after the restart, and the others are gone or
        # were cancelled before their process started.
        wait_for(f"no run of {deployment} that fell due unserved is still waiting", lambda: not [
            run for run in due_before() if run.state.type.value in ("SCHEDULED", "PENDING")], timeout=180)
        ran = [run for run in due_before() if run.start_time and run.start_time.timestamp() >= restarted - 5
               and run.state.type.value in ("RUNNING", "COMPLETED", "FAILED")]  # not cancelled nor crashed
        assert len(ran) <= 1, (deployment, restarted, [(run.name, run.expected_start_time, run.state) for run in ran])
    # And the schedules go on: the watcher checks again.
    wait_for("a watcher check after the restart completes", lambda: [
        run for run in server.runs(WATCHER) if run.expected_start_time.timestamp() > restarted
        and run.state.is_completed()], timeout=180)


@pytest.mark.slow
def test_stopping_serve_during_a_run_leaves_nothing_running(served):
    import psutil

    server, workspace = served["server"], served["workspace"]
    append_rows(workspace, "体育")
    running = wait_for("a lifecycle run is running", lambda: [
        run for run in server.runs(LIFECYCLE) if run.state.type.value == "RUNNING"], timeout=120, every=1)
    stop(served["proc"])  # Ctrl-C in the terminal of `make schedule`
    assert under_way(server) == []
    ended = next(run for run in server.runs(LIFECYCLE) if run.id == running[0].id)
    assert ended.state.type.value in ("CANCELLED", "CRASHED"), ended.state
    # No stage or flow-run process of the workspace survives serve.
    left = [proc.info["cmdline"] for proc in psutil.process_iter(["cwd", "cmdline"])
            if proc.info["cwd"] and Path(proc.info["cwd"]) == workspace]
    assert left == []
