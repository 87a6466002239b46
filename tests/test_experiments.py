"""`dvc exp run` experiments compare in `dvc exp show`, `dvc metrics diff` and `dvc plots diff`, and lowering the
training length in params.yaml does not stop `dvc repro`: real DVC commands in one tiny workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.config import set_param

BIN = Path(sys.executable).parent
METRICS = "reports/evaluate/metrics.json"
# The cache: false metrics and plots of dvc.yaml: the files of reports/ that .gitignore leaves to git.
FOR_GIT = {"reports/clean/summary.json", "reports/validate/summary.json", "reports/pretrain/metrics.json",
           "reports/pretrain/curve.csv", "reports/finetune/metrics.json", "reports/finetune/curve.csv", METRICS,
           "reports/evaluate/confusion.csv", "reports/promote/verdict.json", "reports/promote/model_card.md"}


def dvc(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`dvc ARGS` in `workspace`, the stages' `doclife` found on PATH; a failure shows the output's tail."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{(done.stdout + done.stderr)[-4000:]}"
    return done


def git(workspace: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=doclife", "-c", "user.email=doclife@localhost", *args],
                          cwd=workspace, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, workspace_maker: Callable[[Path], Path]) -> Path:
    """A workspace reproduced once and committed the way the README says: dvc.lock and the metrics and plots."""
    workspace = workspace_maker(tmp_path_factory.mktemp("experiments") / "ws")
    dvc(workspace, "repro")
    # `git add reports` adds only the files .gitignore leaves to git (FOR_GIT).
    git(workspace, "add", "dvc.lock", "reports")
    git(workspace, "commit", "-qm", "baseline")
    return workspace


def _rows(show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` rows: "workspace", "baseline" (the commit) and each experiment by its name."""
    workspace, commit = show  # one baseline commit: HEAD
    rows = {"workspace": workspace, "baseline": commit}
    for experiment in commit.get("experiments") or []:
        for rev in experiment["revs"]:
            rows[rev["name"]] = rev
    return rows


def _metric(row: dict[str, Any], path: str, key: str) -> Any:
    return row["data"]["metrics"].get(path, {}).get("data", {}).get(key)


@pytest.mark.slow
def test_two_experiments_compare_in_exp_show_metrics_diff_and_plots_diff(baseline: Path) -> None:
    assert set(git(baseline, "show", "--name-only", "--format=", "HEAD").split()) == FOR_GIT | {"dvc.lock"}
    names = {rate: f"lr-{rate}" for rate in (0.0003, 0.001)}
    for rate, name in names.items():
        dvc(baseline, "exp", "run", "-n", name, "-S", f"finetune.learning_rate={rate}")

    rows = _rows(json.loads(dvc(baseline, "exp", "show", "--json").stdout))
    for name in ("workspace", "baseline", *names.values()):
        assert isinstance(_metric(rows[name], METRICS, "macro_f1"), float), (name, rows[name]["data"]["metrics"])
    for rate, name in names.items():
        assert rows[name]["data"]["params"]["params.yaml"]["data"]["finetune"]["learning_rate"] == rate
    # An experiment commit holds the metrics and plots, never the big cache: false data or the checkpoints.
    tree = git(baseline, "ls-tree", "-r", "--name-only", rows[names[0.001]]["rev"]).split()
    assert FOR_GIT <= set(tree)
    assert not [path for path in tree if path.startswith(("data/", "models/", "registry/"))]

    diff = dvc(baseline, "metrics", "diff", "--all", "--json", "--targets", METRICS, "--", *names.values())
    diff = json.loads(diff.stdout)
    assert all(isinstance(diff[METRICS]["macro_f1"][side], float) for side in ("old", "new"))

    plots = json.loads(dvc(baseline, "plots", "diff", "--json", *names.values()).stdout)["data"]
    for curve in ("reports/pretrain/curve.csv", "reports/finetune/curve.csv", "reports/evaluate/confusion.csv"):
        drawn = {value["rev"] for value in plots[curve][0]["content"]["data"]["values"]}
        assert drawn == set(names.values()), curve

    # The workspace holds the last experiment's results: params, lock, metrics changed; nothing new untracked
    # but the test workspace's own .dvc/.gitignore (a clone has it committed).
    status = git(baseline, "status", "--porcelain").splitlines()
    assert {line[3:] for line in status if line.startswith("??")} <= {".dvc/.gitignore"}, status
    assert {"params.yaml", "dvc.lock", METRICS} <= {line[3:] for line in status if line.startswith(" M")}


@pytest.mark.slow
def test_lowering_max_epochs_below_the_checkpoint_still_reproduces(baseline: Path) -> None:
    params = baseline / "params.yaml"
    set_param(params, "finetune.max_epochs", 3)
    dvc(baseline, "repro", "finetune")  # resumes the 2-epoch checkpoint: raising the length continues it
    assert json.loads((baseline / "reports/finetune/metrics.json").read_text())["epochs"] == 3
    # Lightning refuses that checkpoint under max_epochs=1 (its current_epoch 2 > 1), run after run.
    set_param(params, "finetune.max_epochs", 1)
    done = dvc(baseline, "repro")
    output = done.stdout + done.stderr
    assert "doclife: starting fresh: the checkpoint has trained 3 epochs, past finetune.max_epochs=1" in output
    metrics = json.loads((baseline / "reports/finetune/metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["resumed_from_step"] is None
    assert "Running stage 'promote'" in output
