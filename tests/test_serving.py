"""Serving: the fresh-process load-and-predict check and `doclife predict`, on a real (untrained, tiny) model.

Also the bootstrap scoring's agreement with the evaluate stage's metrics.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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


def _champion_workspace(root: Path, model_dir: Path) -> str:
    """A workspace at `root` (params.yaml and a registry) whose champion is `model_dir`; returns its version."""
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", root / "params.yaml")
    reg = Registry(root / "registry")
    version = reg.register(model_dir, {})["version"]
    reg.decide(version, True, "first model")
    return version


def _gbk_csv(path: Path) -> list[str]:
    texts = ["football match", "足球比赛今天很精彩", "新的软件和芯片"]
    pd.DataFrame({"id": [1, 2, 3], "text": texts}).to_csv(path, index=False, encoding="gbk")
    return texts


# Run in a fresh process: the test process has long imported torch.
ARGUMENT_ERRORS = """
import contextlib, io, json, sys
from flows.cli import main
answers = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        answers.append([main(["predict", *argv]), err.getvalue()])
print(json.dumps({"answers": answers, "loaded": [m for m in ("torch", "transformers") if m in sys.modules]}))
"""


def test_predict_answers_bad_arguments_in_one_line_without_loading_torch(model_dir, tmp_path):
    _champion_workspace(tmp_path, model_dir)
    pd.DataFrame({"text": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
    pd.DataFrame({"text": TEXTS}).to_parquet(tmp_path / "in.parquet")
    (tmp_path / "in.txt").write_text("text\nhello\n", encoding="utf-8")
    _gbk_csv(tmp_path / "gbk.csv")
    cases = {
        "missing.csv: no such file": ["--input", "missing.csv", "--output", "o.csv"],
        "in.txt: unsupported input format": ["--input", "in.txt", "--output", "o.csv"],
        "o.xlsx: unsupported output format": ["--input", "in.csv", "--output", "o.xlsx"],
        "no version 'v0099'": ["--model", "v0099", "--input", "in.csv", "--output", "o.csv"],
        "--encoding klingon: not a text encoding": ["--input", "in.csv", "--output", "o.csv", "--encoding", "klingon"],
        "in.parquet: --encoding applies to CSV": ["--input", "in.parquet", "--output", "o.csv", "--encoding", "gbk"],
        "in.csv: is the input file": ["--input", "in.csv", "--output", "in.csv"],
        "gbk.csv: not valid utf-8": ["--input", "gbk.csv", "--output", "o.csv"],
    }
    done = subprocess.run([sys.executable, "-c", ARGUMENT_ERRORS, json.dumps(list(cases.values()))], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for expected, (code, err) in zip(cases, result["answers"]):
        assert code == 2 and err.startswith("doclife predict: error: ") and err.count("\n") == 1, err
        assert expected in err, err
    assert result["loaded"] == []
    assert not (tmp_path / "o.csv").exists()


def test_predict_flags_empty_and_truncated_texts(model_dir, tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer

    from flows.cli import main

    _champion_workspace(tmp_path, model_dir)
    long = "software chip 网络 " * 40
    texts = ["football match 今天", "", "  \t ", long, "\u200b"]  # the zero-width space is dropped by the tokenizer
    pd.DataFrame({"id": range(5), "text": texts}).to_json(tmp_path / "in.jsonl", orient="records", lines=True,
                                                          force_ascii=False)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--input", "in.jsonl", "--output", "out.parquet"]) == 0
    assert json.loads(capsys.readouterr().out)["flagged"] == {"empty_text": 3, "truncated": 1}
    out = pd.read_parquet(tmp_path / "out.parquet")
    # Text tokens, without [CLS] and [SEP]: the model (max length 32) reads 30 of them.
    n_long = len(AutoTokenizer.from_pretrained(str(model_dir))(long)["input_ids"]) - 2
    assert n_long > 30
    assert list(out["flag"]) == ["", "empty text", "empty text", f"truncated: 30 of {n_long} tokens read", "empty text"]
    # A flagged row keeps the model's label and probabilities: the flag is the one place doubt is recorded.
    assert set(out["predicted"]) <= set(LABELS)
    assert np.allclose(out[[f"prob_{label}" for label in LABELS]].sum(axis=1), 1, atol=1e-5)


def test_a_gbk_csv_fails_as_utf8_naming_the_place_and_reads_with_its_encoding(model_dir, tmp_path, monkeypatch,
                                                                             capsys):
    from flows.cli import main

    _champion_workspace(tmp_path, model_dir)
    texts = _gbk_csv(tmp_path / "in.csv")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--input", "in.csv", "--output", "out.csv"]) == 2
    err = capsys.readouterr().err
    # Line 1 is the header, line 2 ASCII; the first GBK byte opens line 3 after "2,".
    assert "in.csv: not valid utf-8 at line 3, column 3" in err and "--encoding" in err and err.count("\n") == 1
    assert main(["predict", "--input", "in.csv", "--output", "out.csv", "--encoding", "gbk"]) == 0
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(out["text"]) == texts and list(out["flag"]) == ["", "", ""]
