"""The whole lifecycle, end to end, as a Prefect flow over a real DVC workspace (a copy of this repo)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from conftest import only_the_code_stage_always_changes
from data_checks.io import DoclifeError, read_json
from flows.config import set_param
from flows.dvc import StageFailed, repro_stage, run_dvc
from flows.layout import Layout


def stage_states(summary: dict) -> dict[str, str]:
    return summary["stages"]


@pytest.mark.slow
def test_lifecycle_end_to_end_then_nothing_then_only_what_changed(tiny_workspace, prefect_harness):
    workspace = tiny_workspace()
    from flows.lifecycle import lifecycle

    at = Layout(workspace)
    first = lifecycle(str(workspace))
    assert set(stage_states(first).values()) == {"ran"}
    by_stage = first["seconds"]["by_stage"]
    assert set(by_stage) == set(stage_states(first)) and all(seconds > 0 for seconds in by_stage.values())
    assert sum(by_stage.values()) == pytest.approx(first["seconds"]["stages"], abs=0.1)

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

    # Nothing changed: every stage is skipped, and DVC agrees: only the `code`
    # stage, which always runs to notice an upgrade, is listed.
    second = lifecycle(str(workspace))
    assert set(stage_states(second).values()) == {"skipped"}
    code, lines = run_dvc(workspace, ["status"], lambda line: None)
    assert code == 0 and only_the_code_stage_always_changes(lines), lines

    # The watcher deployment starts a run only when the source corpus's content changed.
    from flows.deployments import source_changed, watch_source
    from flows.dvc import dvc_status
    from flows.lifecycle import edited_sample

    source = workspace / "data/raw/sample.csv"
    original = source.read_bytes()
    assert not source_changed(at, dvc_status(workspace, ["ingest"]))
    source.write_bytes(original + "新的一条体育新闻,sports\n".encode())
    status = dvc_status(workspace, ["sample", "ingest"])
    assert source_changed(at, status)
    # The built-in sample is an output of its own stage: a run would regenerate it, so an edit is refused.
    refusal = edited_sample(at, status)
    assert refusal and "sample.csv" in refusal and "--source" in refusal and "\n" not in refusal
    with pytest.raises(DoclifeError, match="edited by hand"):
        lifecycle(str(workspace))
    assert watch_source(str(workspace)) == "refused: the built-in sample was edited"
    assert source.read_bytes().endswith("新的一条体育新闻,sports\n".encode())  # the edit is still there
    source.write_bytes(original)
    assert not source_changed(at, dvc_status(workspace, ["ingest"]))

    # One finetuning parameter changed: only finetune, evaluate and promote run again.
    set_param(at.params, "finetune.learning_rate", 0.0003)
    third = lifecycle(str(workspace))
    ran = {name for name, state in stage_states(third).items() if state == "ran"}
    assert ran == {"finetune", "evaluate", "promote"}

    # The snapshot was pushed to the default (local) DVC remote.
    assert any((workspace / ".dvc-storage").rglob("*"))

    # Pretraining on two ddp processes through the product's own path: flow task → dvc repro → doclife pretrain,
    # which Lightning relaunches once per device.
    for key, value in {"pretrain.accelerator": "cpu", "pretrain.devices": 2, "pretrain.strategy": "ddp"}.items():
        set_param(at.params, key, value)
    fourth = lifecycle(str(workspace))
    assert stage_states(fourth)["pretrain"] == "ran"
    assert read_json(at.metrics("pretrain"))["world_size"] == 2

    # Experiments run over the same stages, list their metrics, and the plots render.
    code, lines = run_dvc(workspace, ["exp", "run", "-S", "finetune.learning_rate=0.0002"], lambda line: None)
    assert code == 0, lines[-5:]
    code, lines = run_dvc(workspace, ["exp", "show", "--no-pager", "--md"], lambda line: None)
    assert code == 0 and "macro_f1" in "\n".join(lines) and "0.0002" in "\n".join(lines)
    code, lines = run_dvc(workspace, ["plots", "show", "-o", "plots"], lambda line: None)
    page = (workspace / "plots/index.html").read_text(encoding="utf-8")
    assert code == 0 and "confusion.csv" in page and "curve.csv" in page


def test_a_stage_logs_its_own_output_without_dvcs_shell_advice(tmp_path):
    # A real git + DVC repository with a one-line stage: DVC ends its repro with git and push advice.
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hello from the stage > out.txt"
                                       " && echo done\n    outs: [out.txt]\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    code, lines = run_dvc(tmp_path, ["init", "-q"], lambda line: None)
    assert code == 0, lines
    logged: list[str] = []
    result = repro_stage(tmp_path, "hello", logged.append)
    assert result.ran and (tmp_path / "out.txt").read_text().strip() == "hello from the stage"
    assert logged[0] == "Running stage 'hello':" and "done" in logged, logged
    assert not any(line.strip() == "" or "git add" in line or "autostage" in line or "dvc push" in line
                   for line in logged), logged


@pytest.mark.slow
def test_a_corpus_without_its_text_column_stops_the_flow_with_one_line(tiny_workspace, prefect_harness):
    workspace = tiny_workspace()
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


def test_doclife_reports_bad_input_in_one_line_naming_the_file(tiny_workspace):
    workspace = tiny_workspace()
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


def _one_stage_repo(root: Path, cmd: str) -> Path:
    """A real git + DVC repository whose only stage runs `cmd`."""
    (root / "dvc.yaml").write_text(f"stages:\n  only:\n    cmd: {cmd}\n    outs: [out.txt]\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert run_dvc(root, ["init", "-q"], lambda line: None)[0] == 0
    return root


def test_a_stage_that_crashes_names_its_exception_not_the_exit_code(tmp_path):
    repo = _one_stage_repo(tmp_path, f"{sys.executable} -c \"raise ValueError('the checkpoint is past max_epochs')\"")
    with pytest.raises(StageFailed) as failure:
        repro_stage(repo, "only", lambda line: None)
    assert str(failure.value) == "stage 'only' failed: ValueError: the checkpoint is past max_epochs"


def test_an_interrupted_stage_takes_its_processes_with_it(tmp_path):
    # The stage prints, then sleeps in a child process; the caller is interrupted at the first line (as a
    # task is when its run is stopped). The stage's whole process group must be gone when the error leaves.
    marker = tmp_path / "pid.txt"
    repo = _one_stage_repo(tmp_path, f"echo started && sh -c 'echo $$ > {marker}; sleep 300' && touch out.txt")

    def interrupt(line: str) -> None:
        if line.startswith("started"):
            deadline = time.monotonic() + 30
            while not marker.is_file() and time.monotonic() < deadline:
                time.sleep(0.1)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_dvc(repo, ["repro"], interrupt)
    sleeper = int(marker.read_text())
    # Gone, or a zombie its new parent has not reaped yet: either way no longer running.
    assert not psutil.pid_exists(sleeper) or psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE
