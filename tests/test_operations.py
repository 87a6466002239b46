"""Operations against a real Prefect server: runs that collide, what the API and the UI show afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import only_the_code_stage_always_changes
from flows.cli import STAGES
from flows.dvc import run_dvc
from flows.server import local_server

BIN = Path(sys.executable).parent
# Keyed by the workspace's name ("ws"): several workspaces can report to one server.
ARTIFACT_KEYS = {f"ws-{key}" for key in ("validation-summary", "snapshot-manifest", "pretrain-curve", "finetune-curve",
                                         "pretrain-progress", "finetune-progress", "evaluation", "gate-verdict",
                                         "model-card", "run-summary")}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_FOR_README = Path(__file__).resolve().parents[1] / "docs" / "prefect-flow-run.png"


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (SQLite) on a free localhost port, started the way `make ui` starts one."""
    with local_server(tmp_path_factory.mktemp("prefect-home")) as url:
        yield url


def doclife_run(workspace: Path, api_url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": f"{api_url}/api", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    # Output goes to files, not pipes: a run blocked on a full pipe while holding the workspace lock would
    # keep the other run (and this test) waiting for ever.
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen([str(BIN / "doclife"), "run"], cwd=workspace, env=env, stdout=out, stderr=err, text=True)


@pytest.fixture(scope="module")
def collided(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, workspace_maker) -> dict:
    """Two lifecycle runs started at once in one fresh workspace, against the server."""
    root = tmp_path_factory.mktemp("collide")
    workspace = workspace_maker(root / "ws")
    logs = [root / f"run{i}" for i in range(2)]
    procs = [doclife_run(workspace, prefect_server, log) for log in logs]
    results = []
    for proc, log in zip(procs, logs, strict=True):
        proc.wait(timeout=600)
        assert proc.returncode == 0, log.with_suffix(".err").read_text()[-3000:]
        results.append(json.loads(log.with_suffix(".out").read_text()))
    return {"workspace": workspace, "runs": results, "server": prefect_server}


@pytest.mark.slow
def test_two_runs_at_once_both_end_well_and_leave_the_workspace_consistent(collided):
    workspace, runs = collided["workspace"], collided["runs"]
    states = sorted(" ".join(sorted(set(run["stages"].values()))) for run in runs)
    # One did the work; the other waited for the workspace and then found nothing to do.
    assert states == ["ran", "skipped"]
    code, lines = run_dvc(workspace, ["status"], lambda line: None)
    assert code == 0 and only_the_code_stage_always_changes(lines), lines
    status = subprocess.run([str(BIN / "doclife"), "status", "--json"], cwd=workspace, capture_output=True,
                            text=True, check=True)
    assert json.loads(status.stdout)["champion"]["version"] == "v0001"
    history = json.loads(subprocess.run([str(BIN / "doclife"), "history", "--json"], cwd=workspace,
                                        capture_output=True, text=True, check=True).stdout)
    assert [event["decision"] for event in history] == ["promoted"]


def working_run(collided: dict) -> dict:
    return next(run for run in collided["runs"] if set(run["stages"].values()) == {"ran"})


@pytest.mark.slow
def test_the_server_holds_the_run_its_stages_and_artifacts(collided):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    run = working_run(collided)
    with temporary_settings(updates={PREFECT_API_URL: f"{collided['server']}/api"}):
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(run["flow_run_id"])
            only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            task_runs = client.read_task_runs(flow_run_filter=only_this_run)
            artifacts = client.read_artifacts(flow_run_filter=only_this_run)

    assert flow_run.state.is_completed()
    assert flow_run.name == f"ws · {run['snapshot']} · new data"
    assert set(STAGES) <= {t.name for t in task_runs}
    assert all(t.state.is_completed() for t in task_runs)
    assert ARTIFACT_KEYS <= {a.key for a in artifacts}
    verdict = next(a for a in artifacts if a.key == "ws-gate-verdict")
    assert "promoted" in verdict.data


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install Debian's `chromium` package "
                    "(apt-get install chromium) to run the browser test")
def test_the_prefect_ui_shows_the_stages_and_the_gate_verdict(collided, tmp_path):
    from playwright.sync_api import sync_playwright

    run = working_run(collided)
    page_url = f"{collided['server']}/runs/flow-run/{run['flow_run_id']}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(page_url, wait_until="networkidle")
        page.get_by_text(run["snapshot"]).first.wait_for(timeout=60_000)
        tabs, panel = page.get_by_role("tablist"), page.get_by_role("tabpanel")
        tabs.get_by_text("Task Runs", exact=True).click()
        for stage in STAGES:
            panel.get_by_text(stage, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "flow-run.png"), full_page=True)
        tabs.get_by_text("Artifacts", exact=True).click()
        panel.get_by_text("ws-gate-verdict").first.wait_for(timeout=30_000)
        browser.close()
    assert (tmp_path / "flow-run.png").stat().st_size > 10_000
    if os.environ.get("DOCLIFE_README_SCREENSHOT"):
        SCREENSHOT_FOR_README.parent.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "flow-run.png", SCREENSHOT_FOR_README)
