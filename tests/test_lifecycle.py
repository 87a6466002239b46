"""The whole lifecycle, end to end, as a Prefect flow over a real DVC workspace (a copy of this repo)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from data_checks.io import read_json
from flows.config import set_param
from flows.dvc import StageFailed, run_dvc
from flows.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE_FILES = ["flows", "data_checks", "lightning_modules", "dvc.yaml", "params.yaml", ".dvc/config",
                   ".dvcignore", ".gitignore"]

# A corpus and models small enough for a test, large enough for validation's table rules to hold.
TINY = {
    "sample.n_docs": 360, "sample.defects_per_kind": 2,
    "tokenize.vocab_size": 800,
    "pretrain.hidden_size": 32, "pretrain.num_layers": 1, "pretrain.num_heads": 2,
    "pretrain.intermediate_size": 64, "pretrain.max_length": 32, "pretrain.max_steps": 12,
    "pretrain.checkpoint_every_n_steps": 6, "pretrain.warmup_steps": 2,
    "finetune.max_epochs": 2, "finetune.warmup_steps": 2,
    # A model this small is judged by the gate's mechanics, not its quality: no floors, no baselines.
    "promote.metrics": {"macro_f1": {"lower_bound": 0.0}},
    "promote.baselines": {"majority_margin": None, "tfidf_tolerance": None},
}


def git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=ws, check=True,
                   capture_output=True)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh clone-like workspace: the project's code, dvc.yaml and params.yaml (tiny), git and DVC."""
    ws = tmp_path / "ws"
    for name in WORKSPACE_FILES:
        src, dst = ROOT / name, ws / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    for key, value in TINY.items():
        set_param(ws / "params.yaml", key, value)
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "workspace")
    return ws


def stage_states(summary: dict) -> dict[str, str]:
    return summary["stages"]


@pytest.mark.slow
def test_lifecycle_end_to_end_then_nothing_then_only_what_changed(workspace, prefect_harness):
    from flows.lifecycle import lifecycle

    at = Layout(workspace)
    first = lifecycle(str(workspace))
    assert set(stage_states(first).values()) == {"ran"}

    # Every input row is accounted for: validated + quarantined = ingested, and the snapshot holds the validated.
    ingested = pd.read_parquet(at.ingested)
    validated, quarantined = pd.read_parquet(at.validated), pd.read_parquet(at.quarantine)
    assert len(validated) + len(quarantined) == len(ingested)
    assert set(validated.doc_id).isdisjoint(quarantined.doc_id)
    manifest = read_json(at.snapshot / "manifest.json")
    assert manifest["rows"] == len(validated) and manifest["snapshot"].startswith("snap-")

    # The first model passes the (zero) floors and becomes the champion, carrying the snapshot's name.
    status = first["champion"]
    assert status["version"] == "v0001" and status["data_snapshot"] == manifest["snapshot"]
    assert set(status["metrics"]) == {"accuracy", "macro_f1", "roc_auc"}
    assert Path(status["path"], "config.json").is_file()
    for report in first["reports"].values():
        assert Path(report).exists(), report

    # Nothing changed: every stage is skipped, and DVC agrees the pipeline is up to date.
    second = lifecycle(str(workspace))
    assert set(stage_states(second).values()) == {"skipped"}
    code, lines = run_dvc(workspace, ["status"], lambda line: None)
    assert code == 0 and any("up to date" in line for line in lines), lines

    # One finetuning parameter changed: only finetune, evaluate and promote run again.
    set_param(at.params, "finetune.learning_rate", 0.0003)
    third = lifecycle(str(workspace))
    ran = {name for name, state in stage_states(third).items() if state == "ran"}
    assert ran == {"finetune", "evaluate", "promote"}

    # The snapshot was pushed to the default (local) DVC remote.
    assert any((workspace / ".dvc-storage").rglob("*"))


@pytest.mark.slow
def test_a_corpus_without_its_text_column_stops_the_flow_with_one_line(workspace, prefect_harness):
    from flows.lifecycle import lifecycle

    bad = workspace / "corpus.csv"
    bad.write_text("body,label\nhello,sports\n", encoding="utf-8")
    set_param(workspace / "params.yaml", "ingest.source", "corpus.csv")
    with pytest.raises(StageFailed) as failure:
        lifecycle(str(workspace))
    message = str(failure.value)
    assert "\n" not in message and "corpus.csv" in message and "text" in message
    assert not (workspace / "data/snapshot").exists()
    assert bad.read_text(encoding="utf-8") == "body,label\nhello,sports\n"


def test_doclife_reports_bad_input_in_one_line_naming_the_file(workspace):
    (workspace / "empty.csv").write_bytes(b"")
    (workspace / "bytes.csv").write_bytes(b"text,label\n\xff\xfe\xfa broken,sports\n")
    for name in ("empty.csv", "bytes.csv"):
        set_param(workspace / "params.yaml", "ingest.source", name)
        done = subprocess.run([sys.executable, "-m", "flows.cli", "ingest"], cwd=workspace,
                              capture_output=True, text=True)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and lines[0].startswith("doclife ingest: error: "), done.stderr
    assert not (workspace / "data/ingested.parquet").exists()
