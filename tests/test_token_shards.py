"""Token shards: the snapshot encoded once beside the tokenizer, read back exactly, and refused in one line
when a shard is truncated, comes from another tokenizer or encodes another snapshot."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from data_checks.io import DoclifeError
from lightning_modules.config import PretrainConfig, TokenizeConfig
from lightning_modules.synthetic import make_snapshot
from lightning_modules.token_shards import INDEX_FILE, SHARDS_DIR, TokenShards
from lightning_modules.tokenizer import train_tokenizer, training_sample
from lightning_modules.train import pretrain

TINY = PretrainConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=32, batch_size=4,
                      max_steps=2, warmup_steps=1, checkpoint_every_n_steps=2, accelerator="cpu")


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    snapshot = make_snapshot(root / "snapshot", n_docs=300, seed=2)
    # Small shards: the train split spans several files.
    measures = train_tokenizer(TokenizeConfig(vocab_size=400, shard_tokens=1000), snapshot, root / "tokenizer")
    return {"root": root, "snapshot": snapshot, "tokenizer": root / "tokenizer", "measures": measures}


def test_shards_hold_every_document_as_the_tokenizer_encodes_it(encoded: dict) -> None:
    tok = AutoTokenizer.from_pretrained(str(encoded["tokenizer"]))
    corpus = pd.read_parquet(encoded["snapshot"] / "corpus.parquet")
    index = json.loads((encoded["tokenizer"] / SHARDS_DIR / INDEX_FILE).read_text())
    assert index["dtype"] == "uint16" and len(index["splits"]["train"]["shards"]) > 2
    for split in ("train", "validation"):
        texts = corpus.loc[corpus["split"] == split, "text"].tolist()
        expected = [t for ids in tok(texts, add_special_tokens=True, truncation=False)["input_ids"] for t in ids]
        shards = TokenShards.open(encoded["tokenizer"], split)
        assert np.concatenate(shards.streams).tolist() == expected
        assert index["splits"][split]["documents"] == len(texts)
        assert encoded["measures"][f"{split}_tokens"] == len(expected)
    assert "test" not in index["splits"]  # finetuning and evaluation read the test split from the snapshot


def test_rows_travel_to_a_worker_process_as_file_references(encoded: dict) -> None:
    import pickle

    rows = TokenShards.open(encoded["tokenizer"], "train").packed_rows(16)
    sent = pickle.dumps(rows)
    assert len(sent) < 2000, "the shards' data must not be pickled, only where they are"
    back = pickle.loads(sent)
    picked = np.array([len(rows) - 1, 0, 7])
    assert len(back) == len(rows) and back[picked].tolist() == rows[picked].tolist()


def test_the_tokenizer_learns_from_a_fixed_bounded_sample(encoded: dict, tmp_path: Path) -> None:
    splits = pd.read_parquet(encoded["snapshot"] / "corpus.parquet")["split"]
    n_train, n_learnable = int((splits == "train").sum()), int(splits.isin(["train", "validation"]).sum())
    sample, total = training_sample(encoded["snapshot"], 50)
    assert total == n_learnable and len(sample) == 50
    assert sample["doc_id"].tolist() == sorted(sample["doc_id"]) and sample.equals(training_sample(encoded["snapshot"], 50)[0])
    whole, _ = training_sample(encoded["snapshot"], 10_000)
    assert set(sample["doc_id"]) < set(whole["doc_id"]) and len(whole) == n_learnable
    # A bigger sample keeps every document of a smaller one (the lowest hashes): a growing corpus shifts it little.
    assert set(sample["doc_id"]) <= set(training_sample(encoded["snapshot"], 120)[0]["doc_id"])
    vocabularies = []
    for run in range(2):
        measures = train_tokenizer(TokenizeConfig(vocab_size=300, sample_docs=50), encoded["snapshot"], tmp_path / f"t{run}")
        assert measures["n_texts"] == 50 and measures["n_corpus_texts"] == n_learnable
        vocabularies.append(json.loads((tmp_path / f"t{run}" / "tokenizer.json").read_text())["model"]["vocab"])
    assert vocabularies[0] == vocabularies[1]
    # The sample only trains the vocabulary: every document is still encoded.
    assert TokenShards.open(tmp_path / "t0", "train").n_tokens > 0
    assert json.loads((tmp_path / "t0" / SHARDS_DIR / INDEX_FILE).read_text())["splits"]["train"]["documents"] == n_train


def _one_line_naming(call, name: str) -> str:
    with pytest.raises(DoclifeError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and name in message, message
    return message


def _pretrain(encoded: dict, tokenizer: Path, out: Path) -> dict:
    return pretrain(TINY, encoded["snapshot"], tokenizer, out / "model", out / "ckpt", out / "metrics.json",
                    out / "curve.csv")


def test_a_bad_shard_stops_pretraining_before_any_step(encoded: dict, tmp_path: Path) -> None:
    assert _pretrain(encoded, encoded["tokenizer"], tmp_path / "good")["steps"] == 2

    def broken(name: str, damage) -> Path:
        copy = tmp_path / name
        shutil.copytree(encoded["tokenizer"], copy)
        damage(copy / SHARDS_DIR)
        return copy

    def truncate(shards: Path) -> None:
        path = shards / "train-00001.bin"
        path.write_bytes(path.read_bytes()[:-6])

    # A shard of another tokenizer (another vocabulary) in place of this one's.
    other = train_tokenizer(TokenizeConfig(vocab_size=200, shard_tokens=1000), encoded["snapshot"], tmp_path / "other")
    assert other["vocab_size"] != encoded["measures"]["vocab_size"]

    def foreign(shards: Path) -> None:
        shutil.copy(tmp_path / "other" / SHARDS_DIR / "train-00000.bin", shards / "train-00000.bin")

    def not_a_shard(shards: Path) -> None:
        (shards / "validation-00000.bin").write_bytes(b"PAR1 something else entirely" * 10)

    cases = {"truncated": (truncate, "train-00001.bin", "truncated"),
             "foreign": (foreign, "train-00000.bin", "another tokenizer"),
             "garbage": (not_a_shard, "validation-00000.bin", "not a doclife token shard"),
             "missing": (lambda shards: (shards / "train-00002.bin").unlink(), "train-00002.bin", "missing")}
    for name, (damage, file, problem) in cases.items():
        message = _one_line_naming(lambda: _pretrain(encoded, broken(name, damage), tmp_path / name / "run"), file)
        assert problem in message, message
        assert not list((tmp_path / name / "run").rglob("*.ckpt")) and not (tmp_path / name / "run" / "metrics.json").exists()


def test_shards_of_another_snapshot_are_refused(encoded: dict, tmp_path: Path) -> None:
    other = make_snapshot(tmp_path / "other", n_docs=200, seed=9)
    message = _one_line_naming(lambda: pretrain(TINY, other, encoded["tokenizer"], tmp_path / "m", tmp_path / "c",
                                                tmp_path / "p.json", tmp_path / "c.csv"), INDEX_FILE)
    assert "another snapshot" in message
    # Rows too long for the corpus: no packed row at all is one line too.
    small = make_snapshot(tmp_path / "small", n_docs=10, seed=1)
    train_tokenizer(TokenizeConfig(vocab_size=200), small, tmp_path / "small_tok")
    _one_line_naming(lambda: pretrain(replace(TINY, max_length=4096), small, tmp_path / "small_tok", tmp_path / "m2",
                                      tmp_path / "c2", tmp_path / "p2.json", tmp_path / "c2.csv"), SHARDS_DIR)
