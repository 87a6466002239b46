"""Serving: the fresh-process load-and-predict check and `doclife predict`, on a real (untrained, tiny) model.

Also the bootstrap scoring's agreement with the evaluate stage's metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.policy import ServingPolicy
from flows.registry import Registry
from flows.scoring import bootstrap, metric, paired_improvement, resample_weights
from flows.serving import check_serving
from lightning_modules.config import PretrainConfig, TokenizeConfig
from lightning_modules.evaluate import classification_metrics, predict_proba
from lightning_modules.model import build_classifier, build_mlm
from lightning_modules.synthetic import LABELS, make_snapshot
from lightning_modules.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An exported classifier as the finetune stage writes one: weights, config and tokenizer in one dir."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("serving")
    snapshot = make_snapshot(root / "snapshot", n_docs=120, seed=2)
    train_tokenizer(TokenizeConfig(vocab_size=300), snapshot, root / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    cfg = PretrainConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=32)
    build_mlm(cfg, len(tokenizer), tokenizer.pad_token_id).save_pretrained(str(root / "pretrained"))
    tokenizer.save_pretrained(str(root / "pretrained"))
    build_classifier(root / "pretrained", LABELS, 0.1).save_pretrained(str(root / "model"))
    tokenizer.save_pretrained(str(root / "model"))
    return root / "model"


TEXTS = ["football match 今天", "software chip 网络", "noodles 厨房 tea", "airport hotel 旅行"]


def test_a_model_that_loads_is_checked_in_a_fresh_process(model_dir):
    probs, labels = predict_proba(model_dir, TEXTS)
    expected = [labels[i] for i in probs.argmax(1)]
    result = check_serving(model_dir, TEXTS, expected, ServingPolicy(sample_size=4))
    assert result.loaded and result.error is None, result.error
    assert result.agreement == 1.0 and result.n == 4 and result.p95_latency_ms > 0


def test_a_model_that_cannot_load_is_reported_in_one_line(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    result = check_serving(broken, TEXTS, ["sports"] * 4, ServingPolicy())
    assert not result.loaded and result.error.startswith("fresh process failed") and "\n" not in result.error


def test_predict_with_the_champion_alias_writes_labels_and_probabilities(model_dir, tmp_path, monkeypatch, capsys):
    from flows.cli import main

    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    reg = Registry(tmp_path / "registry")
    version = reg.register(model_dir, {})["version"]
    reg.decide(version, True, "first model")
    pd.DataFrame({"id": [1, 2, 3, 4], "text": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", "champion", "--input", "in.csv", "--output", "out.jsonl"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == version
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert list(out["id"]) == [1, 2, 3, 4] and set(out["predicted"]) <= set(LABELS)
    assert np.allclose(out[[f"prob_{label}" for label in LABELS]].sum(axis=1), 1, atol=1e-5)
    assert main(["predict", "--model", "challenger", "--input", "in.csv", "--output", "o.csv"]) == 2
    assert "no challenger yet" in capsys.readouterr().err


def test_scores_match_the_evaluate_stage_and_the_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4), 300)
    probs[np.arange(150), target[:150]] += 1  # half the documents right for sure
    reference = classification_metrics(probs, target, LABELS)
    for name in ("accuracy", "macro_f1", "roc_auc"):
        assert metric(name, target, probs) == pytest.approx(reference[name], abs=1e-5)
    weights = resample_weights(300, 400, seed=3)
    first = bootstrap("macro_f1", target, probs, weights, 0.95)
    assert first == bootstrap("macro_f1", target, probs, resample_weights(300, 400, seed=3), 0.95)
    assert first.low < first.observed < first.high
    # Paired: a model compared with itself improves by exactly zero on every resample.
    same = paired_improvement("macro_f1", target, probs, probs, weights, 0.95)
    assert (same.observed, same.low, same.high) == (0, 0, 0)
