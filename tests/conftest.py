"""Shared fixtures: tiny configs, outputs in tmp_path, one Prefect test server for the whole session."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from data_checks.config import EngineConfig

ROOT = Path(__file__).resolve().parents[1]
# The demo workspace; its stages run the installed doclife (this checkout, installed editable).
WORKSPACE_FILES = ["dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]

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

# Tests never reach the network and never share the user's Prefect database.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def only_the_code_stage_always_changes(dvc_status_lines: list[str]) -> bool:
    """`dvc status` of a workspace whose every stage is up to date: DVC lists the `code` stage as always changed."""
    return [line.strip() for line in dvc_status_lines if line.strip()] == ["code:", "always changed"]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def git(workspace: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=doclife", "-c", "user.email=doclife@localhost", *args], cwd=workspace,
                   check=True, capture_output=True)


def make_workspace(ws: Path) -> Path:
    """A fresh clone of the demo workspace at `ws`: dvc.yaml, a tiny params.yaml, git and DVC."""
    from flows.config import set_param

    for entry in WORKSPACE_FILES:
        src, dst = ROOT / entry, ws / entry
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


@pytest.fixture
def tiny_workspace(tmp_path: Path) -> Callable[..., Path]:
    return lambda name="ws": make_workspace(tmp_path / name)


@pytest.fixture(scope="session")
def workspace_maker() -> Callable[[Path], Path]:
    """`make_workspace` for module-scoped fixtures, which cannot use the function-scoped `tmp_path`."""
    return make_workspace


def save_checkpoint(path: Path, texts: list[str], vocab_rows: int | None = None) -> Path:
    """A small BERT masked-LM with a WordPiece tokenizer trained on `texts`, as a team would hand it over."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from lightning_modules.config import TokenizeConfig
    from lightning_modules.tokenizer import build_tokenizer, to_hf

    tok = build_tokenizer(TokenizeConfig(vocab_size=200), texts)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_rows or tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(str(path))
    to_hf(tok).save_pretrained(str(path))
    return path


def sharded_corpus(directory: Path) -> Path:
    """The sample corpus with near copies and label flips planted across shards, as three gzip CSV files."""
    import gzip

    import pandas as pd

    from data_checks.config import SampleConfig
    from data_checks.sample_corpus import TOPICS, generate_sample_corpus

    frame = generate_sample_corpus(SampleConfig(n_docs=1500, seed=5, defects_per_kind=3))
    texts = frame["text"].dropna()
    near = pd.DataFrame({"text": texts.iloc[:30].to_numpy() + " indeed", "label": frame.loc[texts.index[:30], "label"]})
    flipped = frame.iloc[200:230].assign(label=lambda f: f["label"].map(dict(zip(TOPICS, TOPICS[1:] + TOPICS[:1]))))
    corpus = pd.concat([frame.drop(index=frame.index[200:230]), flipped, near], ignore_index=True)
    directory.mkdir()
    for k, lo in enumerate(range(0, len(corpus), -(-len(corpus) // 3))):
        with gzip.open(directory / f"part-{k}.csv.gz", "wt", encoding="utf-8") as f:
            corpus.iloc[lo:lo + -(-len(corpus) // 3)].to_csv(f, index=False)
    return directory


def data_stages(source: Path, out: Path, engine: EngineConfig) -> dict:
    """ingest → clean → validate → snapshot, each output read back."""
    import pandas as pd

    from data_checks.clean import CleanConfig, clean
    from data_checks.config import IngestConfig, ValidateConfig
    from data_checks.ingest import ingest
    from data_checks.snapshot import snapshot
    from data_checks.validate import validate

    out.mkdir()
    ingest(IngestConfig(), source, out / "ingested.parquet", engine)
    clean(CleanConfig(), out / "ingested.parquet", out / "cleaned.parquet", out / "fixes.parquet", out / "clean.json",
          engine)
    validate(ValidateConfig(rules={"label_noise": {"severity": "quarantine"}}), out / "cleaned.parquet",
             out / "validated.parquet", out / "quarantine.parquet", out / "findings.parquet", out / "summary.json",
             out / "docs", None, engine)
    manifest = snapshot(out / "validated.parquet", out / "summary.json", out / "snapshot", engine=engine)
    tables = {name: pd.read_parquet(out / f"{name}.parquet")
              for name in ("cleaned", "fixes", "validated", "quarantine", "findings")}
    return {"manifest": manifest, **tables}
