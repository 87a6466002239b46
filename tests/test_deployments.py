"""The served deployments: the lifecycle on the cron schedule of params.yaml, the watcher on its interval."""

from flows.config import set_param
from flows.deployments import build_deployments


def test_schedules_and_parameters_come_from_the_workspace(tmp_path, tiny_workspace):
    workspace = tiny_workspace()
    set_param(workspace / "params.yaml", "schedule.cron", "30 5 * * 1")
    set_param(workspace / "params.yaml", "schedule.watch_every_seconds", 60)
    nightly, watcher = build_deployments(workspace)
    assert (nightly.flow_name, nightly.name) == ("doclife-lifecycle", "scheduled")
    assert nightly.schedules[0].schedule.cron == "30 5 * * 1"
    assert watcher.schedules[0].schedule.interval.total_seconds() == 60
    assert nightly.parameters == watcher.parameters == {"workspace": str(workspace.resolve())}
