"""The served deployments: the lifecycle on the cron schedule of params.yaml, the watcher on its interval."""

import os
import subprocess
import sys
from pathlib import Path

from flows.config import set_param
from flows.deployments import build_deployments


def test_schedules_and_parameters_come_from_the_workspace(tmp_path, tiny_workspace):
    workspace = tiny_workspace()
    set_param(workspace / "params.yaml", "schedule.cron", "30 5 * * 1")
    set_param(workspace / "params.yaml", "schedule.watch_every_seconds", 60)
    nightly, watcher = build_deployments(workspace)
    # Named after the workspace ("ws"): several workspaces can be served against one server.
    assert (nightly.flow_name, nightly.name) == ("doclife-lifecycle", "ws-scheduled")
    assert (watcher.flow_name, watcher.name) == ("doclife-watch-source", "ws-on-new-data")
    assert nightly.schedules[0].schedule.cron == "30 5 * * 1"
    assert watcher.schedules[0].schedule.interval.total_seconds() == 60
    assert nightly.parameters == watcher.parameters == {"workspace": str(workspace.resolve())}
    # One run of each at a time: an overlapping one is cancelled before its process starts, not queued.
    for deployment in (nightly, watcher):
        assert deployment.concurrency_limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"


def test_serve_without_a_server_is_one_line(tiny_workspace):
    workspace = tiny_workspace()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([str(Path(sys.executable).parent / "doclife"), "serve"], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "make ui" in done.stderr, done.stderr
