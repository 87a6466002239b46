"""pretrain.init_from: continued pretraining and finetuning from a checkpoint a team already has, its tokenizer
(optionally extended), the champion as the start of weekly runs, lineage, the DVC stamp and bad input."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import lightning_modules.train as train_module
from conftest import save_checkpoint
from data_checks.io import DoclifeError
from flows.config import load_params, set_param
from flows.init_from import BASE_STAMP, resolve_init_from
from flows.layout import Layout
from flows.model_card import render_card
from flows.registry import Registry, model_digest
from flows.reproduce import lineage, pinned_params
from flows.workspace import write_code_stamps
from lightning_modules.checkpoint import BaseCheckpoint
from lightning_modules.config import FinetuneConfig, PretrainConfig, TokenizeConfig
from lightning_modules.modules import ClassifierModule
from lightning_modules.synthetic import LABELS, make_snapshot
from lightning_modules.tokenizer import train_tokenizer
from lightning_modules.train import finetune, pretrain

ROOT = Path(__file__).resolve().parents[1]
# The size fields say 64 wide: the checkpoint's 32 must win.
TINY = PretrainConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=64, max_length=32, batch_size=8,
                      max_steps=2, warmup_steps=1, checkpoint_every_n_steps=2, accelerator="cpu")
TINY_FT = FinetuneConfig(batch_size=16, max_epochs=1, learning_rate=2e-3, warmup_steps=2, accelerator="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A four-topic snapshot and a checkpoint whose tokenizer saw only two of the topics (so it lacks words)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("init_from")
    snapshot = make_snapshot(root / "snapshot", n_docs=200, seed=3)
    other = make_snapshot(root / "other", n_docs=200, seed=5, labels=["sports", "food"])
    checkpoint = save_checkpoint(root / "team-bert", pd.read_parquet(other / "corpus.parquet")["text"].tolist())
    return {"root": root, "snapshot": snapshot, "checkpoint": checkpoint}


def base_of(path: Path, origin: str | None = None) -> BaseCheckpoint:
    return BaseCheckpoint(path=path, origin=origin or str(path), sha256=model_digest(path))


def run_pretrain(cfg: PretrainConfig, corpus: dict[str, Path], tokenizer: Path, out: Path,
                 base: BaseCheckpoint | None) -> dict:
    return pretrain(cfg, corpus["snapshot"], tokenizer, out / "model", out / "ckpt", out / "metrics.json",
                    out / "curve.csv", base=base)


def run_finetune(cfg: FinetuneConfig, corpus: dict[str, Path], pretrained: Path, out: Path) -> dict:
    return finetune(cfg, corpus["snapshot"], pretrained, LABELS, out / "model", out / "ckpt", out / "metrics.json",
                    out / "curve.csv")


# ------------------------------------------------------------------------------------------ training
def test_pretraining_continues_from_a_checkpoint_and_the_finetuned_model_loads(
    corpus: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = resolve_init_from(str(corpus["checkpoint"]), tmp_path, tmp_path / "registry")
    measures = train_tokenizer(TokenizeConfig(), corpus["snapshot"], tmp_path / "tokenizer", base=base)
    checkpoint_tokens = AutoTokenizer.from_pretrained(str(corpus["checkpoint"]), local_files_only=True).get_vocab()
    # The checkpoint's tokenizer, as it is, and how much of the corpus it cannot spell.
    assert AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"), local_files_only=True).get_vocab() == checkpoint_tokens
    assert measures["vocab_size"] == measures["checkpoint_vocab_size"] == len(checkpoint_tokens)
    assert measures["added_tokens"] == 0 and measures["base_checkpoint"] == base.lineage()
    assert measures["checkpoint_unk_rate_cjk"] > 0 and measures["unk_rate_cjk"] == measures["checkpoint_unk_rate_cjk"]

    with caplog.at_level(logging.INFO):
        metrics = run_pretrain(replace(TINY, init_from=str(corpus["checkpoint"])), corpus, tmp_path / "tokenizer",
                               tmp_path / "pre", base)
    assert "the model's shape comes from the checkpoint (hidden 32, 2 layers" in caplog.text
    assert metrics["steps"] == 2 and metrics["base_checkpoint"] == {"origin": str(corpus["checkpoint"]), "sha256": base.sha256}
    assert json.loads((tmp_path / "pre" / "metrics.json").read_text())["base_checkpoint"] == base.lineage()
    # Training moved the checkpoint's weights.
    start, trained = load_file(corpus["checkpoint"] / "model.safetensors"), load_file(tmp_path / "pre" / "model" / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert trained[name].shape == start[name].shape == (32, 32) and not torch.equal(trained[name], start[name])

    ft = run_finetune(replace(TINY_FT, layer_decay=0.8, head_learning_rate=5e-3), corpus, tmp_path / "pre" / "model",
                      tmp_path / "ft")
    assert ft["epochs"] == 1
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "ft" / "model"), local_files_only=True)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2 and model.num_labels == len(LABELS)


def test_zero_steps_finetune_straight_from_the_checkpoint_s_encoder(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = base_of(corpus["checkpoint"])
    train_tokenizer(TokenizeConfig(), corpus["snapshot"], tmp_path / "tokenizer", base=base)
    metrics = run_pretrain(replace(TINY, init_from=str(base.path), max_steps=0), corpus, tmp_path / "tokenizer",
                           tmp_path / "pre", base)
    assert metrics["steps"] == 0 and metrics["base_checkpoint"] == base.lineage()

    initial: dict[str, torch.Tensor] = {}
    build = train_module.build_classifier

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        model = build(*args, **kwargs)
        initial.update({name: t.detach().clone() for name, t in model.state_dict().items()})
        return model

    monkeypatch.setattr(train_module, "build_classifier", recording)
    run_finetune(TINY_FT, corpus, tmp_path / "pre" / "model", tmp_path / "ft")
    checkpoint = load_file(corpus["checkpoint"] / "model.safetensors")
    encoder = [n for n in checkpoint if n.startswith(("bert.embeddings.", "bert.encoder."))]
    assert len(encoder) > 20
    for name in encoder:
        assert torch.equal(initial[name], checkpoint[name]), name


def test_layer_decay_and_head_rate_give_each_layer_its_learning_rate() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                                      num_attention_heads=2, intermediate_size=32, num_labels=2))

    def groups(**options: float | None) -> list[dict]:
        module = ClassifierModule(model, torch.ones(2), 1e-3, 0, 0.01, **options)
        module.trainer = SimpleNamespace(estimated_stepping_batches=10, precision_plugin=SimpleNamespace(scaler=None))
        return module.configure_optimizers()["optimizer"].param_groups

    names = {id(p): n for n, p in model.named_parameters()}
    expected = {"bert.encoder.layer.2.": 1e-3, "bert.encoder.layer.1.": 5e-4, "bert.encoder.layer.0.": 2.5e-4,
                "bert.embeddings.": 1.25e-4, "bert.pooler.": 0.02, "classifier.": 0.02}
    seen = set()
    for group in groups(layer_decay=0.5, head_learning_rate=0.02):
        for param in group["params"]:
            name = names[id(param)]
            prefix = next(p for p in expected if name.startswith(p))
            assert group["lr"] == pytest.approx(expected[prefix]), name
            assert group["weight_decay"] == (0.0 if param.ndim < 2 or "LayerNorm" in name else 0.01), name
            seen.add(name)
    assert seen == set(names.values())
    # Off (the defaults): the two groups as before, every parameter at learning_rate.
    plain = groups()
    assert len(plain) == 2 and {g["lr"] for g in plain} == {1e-3}
    assert [g["weight_decay"] for g in plain] == [0.01, 0.0]


def test_an_extended_vocabulary_starts_its_rows_at_the_mean(corpus: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    base = base_of(corpus["checkpoint"])
    measures = train_tokenizer(TokenizeConfig(extend_vocabulary=5), corpus["snapshot"], tmp_path / "tokenizer", base=base)
    before = AutoTokenizer.from_pretrained(str(base.path), local_files_only=True)
    after = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"), local_files_only=True)
    n = len(before)
    assert measures["added_tokens"] == 5 and measures["vocab_size"] == len(after) == n + 5
    # The checkpoint's ids stay; the words it could not spell are whole tokens now, at the end.
    vocabulary = after.get_vocab()
    assert all(vocabulary[token] == index for token, index in before.get_vocab().items())
    added = measures["added_examples"]
    assert sorted(vocabulary[word] for word in added) == list(range(n, n + 5))
    assert after.tokenize(added[0]) == [added[0]] and before.tokenize(added[0]) == [before.unk_token]
    assert measures["unk_rate_all"] < measures["checkpoint_unk_rate_all"]

    run_pretrain(replace(TINY, init_from=str(base.path), max_steps=0), corpus, tmp_path / "tokenizer", tmp_path / "pre", base)
    start, exported = load_file(base.path / "model.safetensors"), load_file(tmp_path / "pre" / "model" / "model.safetensors")
    rows = exported["bert.embeddings.word_embeddings.weight"]
    assert rows.shape[0] == n + 5 and torch.equal(rows[:n], start["bert.embeddings.word_embeddings.weight"])
    mean = start["bert.embeddings.word_embeddings.weight"].mean(dim=0)
    for row in rows[n:]:
        torch.testing.assert_close(row, mean, rtol=0, atol=0)
    bias = exported["cls.predictions.bias"]
    assert torch.equal(bias[:n], start["cls.predictions.bias"]) and torch.all(bias[n:] == start["cls.predictions.bias"].mean())


# ------------------------------------------------------------------------------------------ champion
def workspace(tmp_path: Path, init_from: str | None) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    set_param(ws / "params.yaml", "pretrain.init_from", init_from)
    return ws


def test_champion_is_the_registry_s_and_the_lineage_and_card_name_its_version(corpus: dict[str, Path], tmp_path: Path) -> None:
    ws = workspace(tmp_path, "champion")
    registry = Registry(ws / "registry")
    with pytest.raises(DoclifeError, match=r"registry\.json: pretrain\.init_from is champion, but there is no champion yet"):
        resolve_init_from("champion", ws, ws / "registry")
    # The stamp is written before every run: it marks what does not resolve (tokenize and pretrain refuse it).
    assert write_code_stamps(ws)["base"] is None
    assert json.loads((ws / BASE_STAMP).read_text()) == {"origin": "champion", "sha256": None}
    first = registry.register(corpus["checkpoint"], {"labels": LABELS})["version"]
    registry.decide(first, True, "first")

    base = resolve_init_from("champion", ws, ws / "registry")
    assert base.origin == f"champion {first}" and base.path == registry.model_path(first)
    assert base.sha256 == registry.version(first)["model_sha256"]
    # The stamp DVC watches names the champion; a new champion changes it (tokenize and pretrain re-run).
    assert write_code_stamps(ws)["base"] == base.sha256
    assert json.loads((ws / BASE_STAMP).read_text()) == {"origin": f"champion {first}", "sha256": base.sha256}
    at = Layout(ws)
    train_tokenizer(TokenizeConfig(), corpus["snapshot"], at.tokenizer, base=base)
    pretrain(replace(TINY, init_from="champion", max_steps=0), corpus["snapshot"], at.tokenizer, at.model("pretrain"),
             at.checkpoints("pretrain"), at.metrics("pretrain"), at.curve("pretrain"), base=base)

    record = lineage(at, load_params(ws / "params.yaml"))
    assert record["base_checkpoint"] == {"origin": f"champion {first}", "sha256": base.sha256}
    entry = {"version": "v0002", "model_sha256": "0" * 64, "lineage": record}
    card = render_card(entry, {"decision": "promoted", "reason": "better"})
    assert f"| base checkpoint | trained from champion {first} (sha256 `{base.sha256[:16]}…`) |" in card
    assert "none: pretrained from scratch" in render_card({**entry, "lineage": {"base_checkpoint": None}},
                                                          {"decision": "promoted", "reason": "r"})
    # Rebuilding that version starts from the same champion, even after the champion moved on.
    pinned = pinned_params(at, registry, "v0002", record)
    assert pinned["pretrain"]["init_from"] == str(registry.model_path(first))

    second_dir = save_checkpoint(tmp_path / "next", ["足球 比赛 football match"] * 4)
    second = registry.register(second_dir, {"labels": LABELS})["version"]
    registry.decide(second, True, "better")
    assert json.loads((ws / BASE_STAMP).read_text())["origin"] == f"champion {first}"  # until the stamps are written
    write_code_stamps(ws)
    assert json.loads((ws / BASE_STAMP).read_text()) == {"origin": f"champion {second}", "sha256": model_digest(second_dir)}


def test_without_init_from_the_stamp_says_so_and_the_lineage_has_no_base(tmp_path: Path) -> None:
    ws = workspace(tmp_path, None)
    assert write_code_stamps(ws)["base"] is None
    assert json.loads((ws / BASE_STAMP).read_text()) == {"origin": None}
    assert lineage(Layout(ws), load_params(ws / "params.yaml"))["base_checkpoint"] is None


# ------------------------------------------------------------------------------------------ bad input
def broken(case: str, good: Path, tmp_path: Path) -> Path:
    """A copy of the good checkpoint with one thing wrong."""
    path = tmp_path / f"bad-{case.replace(' ', '-')}"
    if case == "no directory":
        return path
    shutil.copytree(good, path)
    if case == "no config":
        (path / "config.json").unlink()
    elif case == "no weights":
        (path / "model.safetensors").unlink()
    elif case == "architecture":
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    elif case == "vocabulary":
        shutil.rmtree(path)
        save_checkpoint(path, ["足球 比赛 football match"] * 4 + ["电脑 软件 机场 酒店 noodles"] * 4, vocab_rows=20)
    elif case == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (path / name).unlink()
    elif case == "torn tokenizer":
        (path / "tokenizer.json").write_text('{"version": "1.0", "model": {')
    return path


@pytest.mark.parametrize(("case", "problem"), [
    ("no directory", "names no directory"),
    ("no config", "not a Hugging Face checkpoint (no config.json)"),
    ("no weights", "not a Hugging Face checkpoint (no weights"),
    ("architecture", "model_type 'gpt2' in config.json; doclife trains only bert"),
    ("vocabulary", "embedding matrix 20 rows (config.json vocab_size); weights and tokenizer do not belong together"),
    ("no tokenizer", "no tokenizer files (tokenizer.json or vocab.txt)"),
    ("torn tokenizer", "the tokenizer cannot be loaded offline"),
])
def test_a_bad_checkpoint_is_one_line_naming_it_before_any_training(
    corpus: dict[str, Path], tmp_path: Path, case: str, problem: str
) -> None:
    path = broken(case, corpus["checkpoint"], tmp_path)

    def one_line(call) -> None:  # noqa: ANN001
        with pytest.raises(DoclifeError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(str(path)) and problem in message, message

    # What the `code` stage, the tokenize stage and the pretrain stage each meet first.
    one_line(lambda: train_tokenizer(TokenizeConfig(), corpus["snapshot"], tmp_path / "tok",
                                     base=resolve_init_from(str(path), tmp_path, tmp_path / "registry")))
    assert not (tmp_path / "tok").exists()
    if path.is_dir() and (path / "config.json").is_file():
        good = tmp_path / "good-tokenizer"
        train_tokenizer(TokenizeConfig(), corpus["snapshot"], good, base=base_of(corpus["checkpoint"]))
        fake = BaseCheckpoint(path=path, origin=str(path), sha256="0" * 64)
        one_line(lambda: run_pretrain(replace(TINY, init_from=str(path)), corpus, good, tmp_path / "pre", fake))
        assert not (tmp_path / "pre" / "ckpt").exists()  # refused before any training step


def test_pretrain_refuses_a_tokenizer_not_the_checkpoint_s_and_rows_longer_than_its_positions(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    base = base_of(corpus["checkpoint"])
    train_tokenizer(TokenizeConfig(vocab_size=300), corpus["snapshot"], tmp_path / "own")  # init_from null's tokenizer
    with pytest.raises(DoclifeError, match=rf"^{tmp_path / 'own'}: not the tokenizer of {base.path} \(run the tokenize stage again\)$"):
        run_pretrain(replace(TINY, init_from=str(base.path)), corpus, tmp_path / "own", tmp_path / "a", base)
    train_tokenizer(TokenizeConfig(), corpus["snapshot"], tmp_path / "tok", base=base)
    with pytest.raises(DoclifeError, match=r"has 64 positions; pretrain.max_length 128 must not exceed them"):
        run_pretrain(replace(TINY, init_from=str(base.path), max_length=128), corpus, tmp_path / "tok", tmp_path / "b", base)
    assert not (tmp_path / "a" / "ckpt").exists() and not (tmp_path / "b" / "ckpt").exists()
    with pytest.raises(DoclifeError, match="no checkpoint was resolved"):
        run_pretrain(replace(TINY, init_from=str(base.path)), corpus, tmp_path / "tok", tmp_path / "c", None)
