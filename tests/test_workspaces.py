"""Workspaces: `doclife init` makes one per corpus; it moves, is cloned and shares its registry, and any
registered version is rebuilt from its record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY, git, save_checkpoint
from data_checks.config import SampleConfig
from data_checks.sample_corpus import write_sample_corpus
from flows.config import load_params, set_param
from flows.deployments import source_changed, source_fingerprint
from flows.dvc import dvc_env, dvc_status
from flows.layout import Layout
from flows.registry import Registry


def doclife(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def dvc(cwd: Path, *args: str) -> None:
    # dvc_env: this interpreter's bin directory first, where `doclife` is installed.
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=dvc_env())
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def corpus(path: Path, n_docs: int = 360, seed: int = 7) -> Path:
    """A labelled CSV corpus with the demo's planted defects (two of them rare junk labels)."""
    write_sample_corpus(SampleConfig(n_docs=n_docs, seed=seed, defects_per_kind=2), path)
    return path


def tiny(ws: Path) -> Path:
    for key, value in TINY.items():
        if not key.startswith("sample."):
            set_param(ws / "params.yaml", key, value)
    git(ws, "commit", "-qam", "tiny models")
    return ws


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------ init
def test_init_makes_a_committed_git_and_dvc_workspace_for_the_corpus(tmp_path):
    source = corpus(tmp_path / "reviews.csv")
    made = json.loads(doclife(tmp_path, "init", "ws", "--source", "reviews.csv", "--text-column", "text",
                              "--label-column", "label").stdout)
    ws = tmp_path / "ws"
    assert sorted(made["labels"]) == ["food", "sports", "technology", "travel"]
    assert sorted(made["rare_values_left_out"]) == ["misc", "other"]  # rows to quarantine, not labels to declare
    params = load_params(ws / "params.yaml")
    assert Path(params.ingest.source) == source and params.ingest.text_column == "text"
    assert sorted(params.validate.labels) == sorted(made["labels"])
    assert params.promote.registry == ".dvc-storage/registry"
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    assert "sample" not in stages and "code" in stages
    assert "sample" not in yaml.safe_load((ws / "params.yaml").read_text())
    assert (ws / ".dvc/config").read_text().count("url = ../.dvc-storage") == 1  # relative: moves with it
    assert all((ws / ".doclife/code" / f"{stage}.json").is_file() for stage in stages if stage != "code")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ws, capture_output=True, text=True).stdout
    assert status == ""  # everything committed
    ignored = subprocess.run(["git", "check-ignore", "dvc.lock"], cwd=ws, capture_output=True)
    assert ignored.returncode == 1  # dvc.lock is committed with each snapshot
    assert "reviews.csv" in (ws / "README.md").read_text()


@pytest.mark.parametrize("case", ["existing workspace", "missing source", "missing column", "not utf-8", "bad label"])
def test_init_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, case):
    good = corpus(tmp_path / "reviews.csv")
    target = tmp_path / "ws"
    args = ["--source", str(good), "--text-column", "text", "--label-column", "label"]
    if case == "existing workspace":
        doclife(tmp_path, "init", "ws", *args)
        before = sorted(p.relative_to(target) for p in target.rglob("*"))
        one_line_error(doclife(tmp_path, "init", "ws", *args, check=False), str(target), "already holds a workspace")
        assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
        return
    if case == "missing source":
        args[1], needle = str(tmp_path / "nope.csv"), "nope.csv: file or directory not found"
    elif case == "missing column":
        args[3], needle = "body", "no text column 'body'"
    elif case == "not utf-8":
        (tmp_path / "gbk.csv").write_bytes("text,label\n".encode() + "很好吃,pos\n".encode("gbk"))
        args[1], needle = str(tmp_path / "gbk.csv"), "not valid UTF-8"
    else:
        args[5], needle = "labels", "no label column 'labels'"
    one_line_error(doclife(tmp_path, "init", "ws", *args, check=False), needle)
    assert not target.exists() and not list(tmp_path.glob(".ws*"))


# ------------------------------------------------------------------------------------------ lifecycle
def registry_of(ws: Path) -> Registry:
    return Registry(ws / load_params(ws / "params.yaml").promote.registry)


@pytest.mark.slow
def test_a_workspace_moves_runs_again_and_rebuilds_its_first_version(tmp_path, prefect_harness):
    source = corpus(tmp_path / "corpus.csv")
    doclife(tmp_path, "init", "w", "--source", str(source), "--text-column", "text", "--label-column", "label")
    ws = tiny(tmp_path / "w")
    dvc(ws, "repro")
    dvc(ws, "push")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "first snapshot")

    moved = tmp_path / "w2"
    shutil.move(ws, moved)
    status = json.loads(doclife(moved, "status", "--json").stdout)["champion"]
    assert status["version"] == "v0001" and Path(status["path"]).is_relative_to(moved)
    assert json.loads(doclife(moved, "history", "--json").stdout)[0]["version"] == "v0001"
    pd.DataFrame({"text": ["a match tonight", "a new phone"]}).to_csv(tmp_path / "new.csv", index=False)
    doclife(moved, "predict", "--model", "champion", "--input", str(tmp_path / "new.csv"), "--output",
            str(tmp_path / "scored.csv"))
    assert len(pd.read_csv(tmp_path / "scored.csv")) == 2
    # Nothing the tool reads back names the old place.
    for path in [*moved.glob("reports/*/*.json"), *moved.glob("reports/promote/*.md"),
                 *moved.glob(".dvc-storage/registry/**/*.json"), *moved.glob(".dvc-storage/registry/cards/*.md")]:
        assert str(ws) + "/" not in path.read_text(encoding="utf-8"), path

    # The corpus grows; a second run from the moved workspace registers a second version.
    corpus(source, n_docs=420, seed=8)
    from flows.lifecycle import lifecycle

    summary = lifecycle(str(moved))
    assert summary["stages"]["ingest"] == "ran"
    assert [v["version"] for v in registry_of(moved).state()["versions"]] == ["v0001", "v0002"]

    # v0001's snapshot is no longer in the workspace, nor in its cache: reproduce fetches it from the remote.
    shutil.rmtree(moved / ".dvc/cache")
    rebuilt = json.loads(doclife(moved, "reproduce", "v0001", "--json").stdout)
    assert rebuilt["version"] == "v0001" and rebuilt["identical"] is True
    assert rebuilt["metrics"] == rebuilt["registered_metrics"]
    record = registry_of(moved).version("v0001")["lineage"]
    assert set(record["params"]) >= {"ingest", "clean", "validate", "tokenize", "pretrain", "finetune"}
    assert record["software"]["torch"] and record["snapshot_md5"].endswith(".dir")


@pytest.mark.slow
def test_two_clones_promoting_at_once_end_with_one_champion_and_both_decisions(tmp_path):
    source = corpus(tmp_path / "corpus.csv")
    shared = tmp_path / "team-storage"
    doclife(tmp_path, "init", "a", "--source", str(source), "--text-column", "text", "--label-column", "label",
            "--remote", str(shared))
    a = tiny(tmp_path / "a")
    dvc(a, "repro", "evaluate")
    dvc(a, "push")
    git(a, "add", "-A")
    git(a, "commit", "-qm", "evaluated")
    git(tmp_path, "clone", "-q", str(a), "b")
    b = tmp_path / "b"
    dvc(b, "pull", "-q")
    set_param(b / "params.yaml", "finetune.seed", 8)  # another model on the same snapshot
    dvc(b, "repro", "evaluate")

    # Both promote at the same moment, each against the registry they share.
    procs = [subprocess.Popen([sys.executable, "-m", "flows.cli", "promote"], cwd=ws, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for ws in (a, b)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]

    registry = registry_of(a)
    assert registry.root == registry_of(b).root == (shared / "registry").resolve()
    history = list(reversed(registry.history()))
    assert sorted(e["version"] for e in history) == ["v0001", "v0002"]
    # Serialised: the second decision was judged against the outcome of the first.
    assert history[1]["champion_before"] == history[0]["champion_after"]
    assert registry.state()["aliases"]["champion"] == history[1]["champion_after"]
    assert json.loads(doclife(b, "status", "--json").stdout)["champion"]["version"] == history[1]["champion_after"]


@pytest.mark.slow
def test_a_workspace_continues_from_a_team_checkpoint_then_from_its_champion(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = corpus(tmp_path / "corpus.csv")
    checkpoint = save_checkpoint(tmp_path / "team-bert", pd.read_csv(source)["text"].dropna().tolist())
    doclife(tmp_path, "init", "w", "--source", str(source), "--text-column", "text", "--label-column", "label")
    ws = tiny(tmp_path / "w")
    set_param(ws / "params.yaml", "pretrain.init_from", str(checkpoint))
    dvc(ws, "repro")
    registry = registry_of(ws)
    first = registry.champion()["version"]
    model = registry.model_path(first)
    loaded = AutoModelForSequenceClassification.from_pretrained(str(model), local_files_only=True)
    # The checkpoint's shape (2 layers, 32 wide) and its tokenizer, not the size fields or a new vocabulary.
    assert loaded.config.num_hidden_layers == 2 and loaded.config.hidden_size == 32
    assert (AutoTokenizer.from_pretrained(str(model), local_files_only=True).get_vocab()
            == AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True).get_vocab())
    assert f"| base checkpoint | trained from `{checkpoint}`" in registry.card_path(first).read_text()

    # Next week: continue from the champion; tokenize and pretrain re-run because their base changed.
    set_param(ws / "params.yaml", "pretrain.init_from", "champion")
    git(ws, "commit", "-qam", "continue from the champion")
    dvc(ws, "repro")
    assert load_file(ws / "models/pretrain/model/model.safetensors")["bert.embeddings.word_embeddings.weight"].shape[1] == 32
    second = registry.state()["versions"][-1]
    assert second["version"] != first  # registered whatever the gate decided
    assert second["lineage"]["base_checkpoint"]["origin"] == f"champion {first}"
    assert f"| base checkpoint | trained from champion {first}" in registry.card_path(second["version"]).read_text()


@pytest.mark.slow
def test_a_workspace_on_a_directory_of_compressed_shards_runs_and_a_corrupt_shard_stops_ingest(tmp_path):
    frame = pd.read_csv(corpus(tmp_path / "corpus.csv"), dtype=str, keep_default_na=False, na_values=[""])
    shards = tmp_path / "shards"
    (shards / "week-1").mkdir(parents=True)
    third = len(frame) // 3
    frame.iloc[:third].to_csv(shards / "week-1" / "part-0.csv.gz", index=False)
    frame.iloc[third:2 * third].to_json(shards / "week-1" / "part-1.jsonl.gz", orient="records", lines=True)
    frame.iloc[2 * third:].to_csv(shards / "part-2.tsv", sep="\t", index=False)
    doclife(tmp_path, "init", "w", "--source", str(shards), "--text-column", "text", "--label-column", "label")
    ws = tiny(tmp_path / "w")
    assert Path(load_params(ws / "params.yaml").ingest.source) == shards
    dvc(ws, "repro")
    ingested = pd.read_parquet(ws / "data/ingested.parquet")
    names = ["part-2.tsv", "week-1/part-0.csv.gz", "week-1/part-1.jsonl.gz"]  # each file in path order
    assert ingested["source"].drop_duplicates().tolist() == names and len(ingested) == len(frame)
    in_path_order = pd.concat([frame.iloc[2 * third:], frame.iloc[:2 * third]])["text"]
    assert ingested["text"].fillna("<null>").tolist() == in_path_order.fillna("<null>").tolist()
    cleaned = json.loads((ws / "reports/clean/summary.json").read_text())
    validated = json.loads((ws / "reports/validate/summary.json").read_text())
    assert validated["validated"] + validated["quarantined"] + cleaned["duplicates_dropped"] == len(frame)
    assert set(pd.read_parquet(ws / "data/snapshot/corpus.parquet")["source"]) == set(names)
    assert json.loads(doclife(ws, "status", "--json").stdout)["champion"]["version"] == "v0001"

    # The watcher sees a week's new shard land in the directory (as a change of DVC's dependency and of its
    # own fingerprint), and nothing before it.
    at, seen = Layout(ws), source_fingerprint(shards)
    assert not source_changed(at, dvc_status(ws, ["ingest"]))
    (shards / "week-2").mkdir()
    frame.iloc[:20].assign(text=lambda f: f["text"] + " (week 2)").to_csv(shards / "week-2" / "part-3.csv.gz", index=False)
    assert source_changed(at, dvc_status(ws, ["ingest"])) and source_fingerprint(shards) != seen
    (shards / "week-2" / "part-3.csv.gz").unlink()

    # A shard cut short in transfer lands beside the others: ingest stops on it, the snapshot stays as it was.
    def snapshot_files() -> dict[str, bytes]:
        return {p.relative_to(ws).as_posix(): p.read_bytes() for p in sorted((ws / "data/snapshot").rglob("*"))
                if p.is_file()}

    before = snapshot_files()
    whole = (shards / "week-1" / "part-1.jsonl.gz").read_bytes()
    (shards / "week-2" / "part-3.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    error = one_line_error(doclife(ws, "ingest", check=False), "part-3.jsonl.gz", "cannot decompress as gzip")
    assert str(shards / "week-2" / "part-3.jsonl.gz") in error
    assert snapshot_files() == before and any(name.startswith("data/snapshot/corpus.parquet/part-") for name in before)


@pytest.mark.slow
def test_a_failed_run_on_a_new_source_is_one_line_and_leaves_params_as_they_were(tmp_path):
    source = corpus(tmp_path / "corpus.csv")
    doclife(tmp_path, "init", "w", "--source", str(source), "--text-column", "text", "--label-column", "label")
    ws = tmp_path / "w"
    before = (ws / "params.yaml").read_text()
    (tmp_path / "bad.csv").write_text("body,label\nhello,sports\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own temporary server
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--source", str(tmp_path / "bad.csv")], cwd=ws,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("doclife run: error: ")]
    assert len(errors) == 1 and "stage 'ingest' failed" in errors[0] and "bad.csv: no text column 'text'" in errors[0]
    assert (ws / "params.yaml").read_text() == before
    log = ws / errors[0].rsplit("(log: ", 1)[1].rstrip(")")
    assert "Traceback" in log.read_text(encoding="utf-8")  # kept for whoever debugs it, off the screen
