"""Schedules, pretraining (with resume) and finetuning on a tiny CPU configuration."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from data_checks.io import DoclifeError
from lightning_modules.config import FinetuneConfig, PretrainConfig, TokenizeConfig
from lightning_modules.data import IGNORE_INDEX, ClassificationDataModule, LengthGroupedBatches, MaskedLMDataModule, mask_tokens
from lightning_modules.evaluate import predict_proba
from lightning_modules.modules import warmup_then_linear_decay
from lightning_modules.synthetic import LABELS, make_snapshot
from lightning_modules.tokenizer import train_tokenizer
from lightning_modules.train import finetune, pretrain

TINY = PretrainConfig(
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    max_length=32,
    batch_size=16,
    max_steps=10,
    warmup_steps=2,
    checkpoint_every_n_steps=5,
    accelerator="cpu",
)
TINY_FT = FinetuneConfig(batch_size=16, max_epochs=2, learning_rate=2e-3, warmup_steps=2, accelerator="cpu")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A snapshot, its tokenizer and a pretrained tiny model, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("train")
    snapshot = make_snapshot(root / "snapshot", n_docs=200, seed=3)
    train_tokenizer(TokenizeConfig(vocab_size=400), snapshot, root / "tokenizer")
    paths = {"root": root, "snapshot": snapshot, "tokenizer": root / "tokenizer", "pretrained": root / "pretrained"}
    metrics = pretrain(
        TINY, snapshot, paths["tokenizer"], paths["pretrained"], root / "ckpt_pre", root / "pre.json", root / "pre.csv"
    )
    paths["pretrain_metrics"] = root / "pre.json"
    assert metrics["steps"] == TINY.max_steps
    return paths


# ---------------------------------------------------------------------------------------------- data


def test_datamodule_packs_without_padding(workspace: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(workspace["tokenizer"]))
    data = MaskedLMDataModule(workspace["tokenizer"], tok, max_length=32, batch_size=4, mask_probability=0.15, seed=0)
    data.setup("fit")
    rows = data.train_rows.in_memory()
    assert rows.shape[1] == 32 and len(rows) > 0
    assert not (rows == tok.pad_token_id).any(), "packed rows hold no padding"
    # Every training document is in there: one [CLS] per document, counting a possibly dropped tail.
    n_train_docs = int((pd.read_parquet(workspace["snapshot"] / "corpus.parquet")["split"] == "train").sum())
    n_cls = int((rows == tok.cls_token_id).sum())
    assert n_train_docs - 2 <= n_cls <= n_train_docs
    # The fixed validation mask is reproducible.
    again = MaskedLMDataModule(workspace["tokenizer"], tok, max_length=32, batch_size=4, mask_probability=0.15, seed=0)
    again.setup("fit")
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(again.val_batches, data.val_batches))


def test_warmup_then_linear_decay() -> None:
    f = warmup_then_linear_decay(warmup_steps=4, total_steps=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(8) == pytest.approx(0.5) and f(12) == 0.0 and f(20) == 0.0


def test_config_checks() -> None:
    with pytest.raises(DoclifeError, match="divisible"):
        PretrainConfig(hidden_size=30, num_heads=4)
    with pytest.raises(DoclifeError, match="max_steps must be >= 0"):
        PretrainConfig(max_steps=-1)
    with pytest.raises(DoclifeError, match="mask_probability"):
        PretrainConfig(mask_probability=1.5)
    with pytest.raises(DoclifeError, match="precision"):
        FinetuneConfig(precision="fp32")
    with pytest.raises(DoclifeError, match="dropout"):
        FinetuneConfig(dropout=1.0)
    with pytest.raises(DoclifeError, match="fsdp needs accelerator gpu"):
        PretrainConfig(strategy="fsdp", accelerator="cpu")
    with pytest.raises(DoclifeError, match="balance"):
        FinetuneConfig(balance="oversample")


def test_gpus_this_machine_lacks_are_refused_before_any_work(tmp_path: Path, workspace: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # params.yaml copied from a GPU host onto a laptop: one line naming the setting, not a CUDA traceback.
    def run(cfg: PretrainConfig) -> None:
        pretrain(cfg, workspace["snapshot"], workspace["tokenizer"], tmp_path / "m", tmp_path / "c", tmp_path / "p.json",
                 tmp_path / "p.csv")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(DoclifeError, match=r"pretrain\.accelerator is 'gpu', but .*set it to auto"):
        run(replace(TINY, accelerator="gpu"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DoclifeError, match=r"pretrain\.devices is 4, but this machine has 2 CUDA devices"):
        run(replace(TINY, accelerator="gpu", devices=4))
    assert not (tmp_path / "c").exists()  # refused before the checkpoint directory was touched
    with pytest.raises(DoclifeError, match=r"finetune: Lightning refuses these settings: .*invalid strategy name"):
        finetune(replace(TINY_FT, strategy="no-such-strategy"), workspace["snapshot"], workspace["pretrained"], LABELS,
                 tmp_path / "f", tmp_path / "fc", tmp_path / "f.json", tmp_path / "f.csv")


# ---------------------------------------------------------------------------------------------- pretrain


def test_pretrain_writes_model_metrics_and_curve(workspace: dict[str, Path]) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    metrics = json.loads(workspace["pretrain_metrics"].read_text())
    assert metrics["steps"] == 10 and metrics["resumed_from_step"] is None
    assert metrics["tokens_per_second"] > 0 and metrics["snapshot"].startswith("snap-")
    # Packed rows: every token the model sees is a real one.
    assert metrics["nonpad_tokens_per_second"] == metrics["tokens_per_second"]
    assert metrics["mfu"] is None  # no known peak FLOP/s on a CPU
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["val_loss"])
    curve = pd.read_csv(workspace["root"] / "pre.csv")
    assert list(curve.columns) == ["step", "train_loss", "val_loss", "tokens_per_s", "nonpad_tokens_per_s", "mfu"]
    assert (curve["tokens_per_s"] > 0).all()
    assert curve["step"].tolist() == list(range(1, 11))
    assert curve["val_loss"].notna().sum() == 2  # at steps 5 and 10
    model = AutoModelForMaskedLM.from_pretrained(str(workspace["pretrained"]), local_files_only=True)
    assert model.config.hidden_size == 32 and model.config.max_position_embeddings == 32
    assert AutoTokenizer.from_pretrained(str(workspace["pretrained"])).model_max_length == 32


def test_export_of_a_gathered_state_dict_writes_tied_weights_once(workspace: dict[str, Path], tmp_path: Path) -> None:
    # fsdp gathers the full weights as separate tensors, so the tied MLM decoder no longer shares the word
    # embeddings' storage: the export must still hold exactly what an unsharded export holds.
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    from lightning_modules.train import _export, _load_tokenizer

    model = AutoModelForMaskedLM.from_pretrained(str(workspace["pretrained"]), local_files_only=True)
    tokenizer = _load_tokenizer(workspace["pretrained"])
    gathered = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert len(gathered) > len(dict(model.named_parameters()))  # the tied decoder weight is a key of its own
    _export(model, tokenizer, tmp_path / "plain")
    _export(model, tokenizer, tmp_path / "gathered", gathered)
    plain, from_gathered = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "gathered" / "model.safetensors")
    assert plain.keys() == from_gathered.keys()
    for name in plain:
        torch.testing.assert_close(from_gathered[name], plain[name], rtol=0, atol=0, msg=name)


def test_pretrain_without_validation_rows(workspace: dict[str, Path], tmp_path: Path) -> None:
    # A corpus may hold no validation split: pretraining still trains, with no validation loss to report.
    frame = pd.read_parquet(workspace["snapshot"] / "corpus.parquet")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    frame[frame["split"] != "validation"].to_parquet(snapshot / "corpus.parquet", index=False)
    (snapshot / "manifest.json").write_text((workspace["snapshot"] / "manifest.json").read_text())
    train_tokenizer(TokenizeConfig(vocab_size=400), snapshot, tmp_path / "tokenizer")  # its shards: no validation
    cfg = replace(TINY, max_steps=4, checkpoint_every_n_steps=2)
    metrics = pretrain(cfg, snapshot, tmp_path / "tokenizer", tmp_path / "model", tmp_path / "ckpt",
                       tmp_path / "metrics.json", tmp_path / "curve.csv")
    assert metrics["steps"] == 4 and np.isfinite(metrics["train_loss"]) and metrics["val_loss"] is None
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_pretrain_resumes_and_restarts_on_changed_fingerprint(
    workspace: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def run(cfg: PretrainConfig) -> dict:
        return pretrain(
            cfg, workspace["snapshot"], workspace["tokenizer"], tmp_path / "model", tmp_path / "ckpt",
            tmp_path / "m.json", tmp_path / "c.csv",
        )

    cfg = replace(TINY, max_steps=4, checkpoint_every_n_steps=3)
    first = run(cfg)
    assert first["steps"] == 4 and first["resumed_from_step"] is None
    caplog.clear()

    with caplog.at_level(logging.INFO):
        second = run(replace(cfg, max_steps=8))
    assert "resuming from step 4" in caplog.text
    assert second["resumed_from_step"] == 4 and second["steps"] == 8 and second["steps_this_run"] == 4
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["resumed_from_step"] == 4 and written["steps"] == 8
    # The curve survives the resume: one row per step of both runs.
    assert pd.read_csv(tmp_path / "c.csv")["step"].tolist() == list(range(1, 9))

    third = run(replace(cfg, max_steps=8, learning_rate=5e-4))
    assert third["resumed_from_step"] is None and third["steps_this_run"] == 8


def test_lowering_max_steps_below_the_checkpoint_starts_fresh(
    workspace: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def run(cfg: PretrainConfig, out: str) -> dict:
        return pretrain(cfg, workspace["snapshot"], workspace["tokenizer"], tmp_path / out / "model",
                        tmp_path / out / "ckpt", tmp_path / out / "m.json", tmp_path / out / "c.csv")

    cfg = replace(TINY, max_steps=6, checkpoint_every_n_steps=3)
    assert run(cfg, "a")["steps"] == 6
    with caplog.at_level(logging.INFO):
        lowered = run(replace(cfg, max_steps=4), "a")
    assert "doclife: starting fresh: the checkpoint has trained 6 steps, past pretrain.max_steps=4" in caplog.text
    assert lowered["resumed_from_step"] is None and lowered["steps"] == lowered["steps_this_run"] == 4
    # The export is what 4 steps give, not the 6-step checkpoint handed on.
    straight = run(replace(cfg, max_steps=4), "straight")
    assert (lowered["train_loss"], lowered["val_loss"]) == (straight["train_loss"], straight["val_loss"])
    reference, weights = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("straight", "a"))
    assert weights.keys() == reference.keys() and all(torch.equal(weights[k], t) for k, t in reference.items())


def test_zero_pretraining_steps_export_the_encoder_a_run_starts_from(workspace: dict[str, Path], tmp_path: Path) -> None:
    def run(cfg: PretrainConfig, out: str, ckpt: str = "ckpt") -> dict:
        return pretrain(cfg, workspace["snapshot"], workspace["tokenizer"], tmp_path / out, tmp_path / ckpt,
                        tmp_path / f"{out}.json", tmp_path / f"{out}.csv")

    trained = run(replace(TINY, max_steps=4, checkpoint_every_n_steps=2), "trained")
    none = run(replace(TINY, max_steps=0), "none")
    assert none["steps"] == 0 and none["train_loss"] is None and none["parameters"] == trained["parameters"]
    assert json.loads((tmp_path / "none.json").read_text())["steps"] == 0
    assert pd.read_csv(tmp_path / "none.csv").empty  # the curve's header, no steps
    # The weights a pretraining run starts from: one step at a vanishing rate leaves them where they began.
    run(replace(TINY, max_steps=1, learning_rate=1e-12), "one_still_step", ckpt="ckpt_still")
    start, still = (load_file(tmp_path / d / "model.safetensors") for d in ("none", "one_still_step"))
    assert start.keys() == still.keys() and all(torch.allclose(start[k], still[k], atol=1e-6) for k in start)
    assert not torch.allclose(start["bert.embeddings.word_embeddings.weight"],
                              load_file(tmp_path / "trained" / "model.safetensors")["bert.embeddings.word_embeddings.weight"])
    # The earlier run's checkpoints stay: pretraining again resumes from them.
    assert run(replace(TINY, max_steps=6, checkpoint_every_n_steps=2), "resumed")["resumed_from_step"] == 4
    # Finetuning starts from the untrained encoder like from a pretrained one.
    assert finetune(TINY_FT, workspace["snapshot"], tmp_path / "none", LABELS, tmp_path / "ft", tmp_path / "ft_ckpt",
                    tmp_path / "ft.json", tmp_path / "ft.csv")["epochs"] == TINY_FT.max_epochs


# ---------------------------------------------------------------------------------------------- finetune


def _finetune(workspace: dict[str, Path], out: Path, labels: list[str] = LABELS, cfg: FinetuneConfig = TINY_FT) -> dict:
    return finetune(
        cfg, workspace["snapshot"], workspace["pretrained"], labels, out / "model", out / "ckpt",
        out / "metrics.json", out / "curve.csv",
    )


def _stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("seconds")}


@pytest.mark.parametrize("torn", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_torn_file_in_the_pretrained_model_is_one_line_naming_its_directory(
    workspace: dict[str, Path], tmp_path: Path, torn: str
) -> None:
    # A copy cut short (a full disk, a killed rsync): each file half its length, as a crash would leave it.
    pretrained = tmp_path / "pretrained"
    shutil.copytree(workspace["pretrained"], pretrained)
    data = (pretrained / torn).read_bytes()
    (pretrained / torn).write_bytes(data[: len(data) // 2])
    with pytest.raises(DoclifeError, match=rf"^{re.escape(str(pretrained))}: cannot load the model files \(.+\)$"):
        finetune(TINY_FT, workspace["snapshot"], pretrained, LABELS, tmp_path / "m", tmp_path / "c", tmp_path / "f.json",
                 tmp_path / "f.csv")
    with pytest.raises(DoclifeError, match="cannot load the model files"):
        predict_proba(pretrained, ["x"])


def test_finetune_exports_best_model_loadable_offline(workspace: dict[str, Path], tmp_path: Path) -> None:
    metrics = _finetune(workspace, tmp_path)
    assert metrics["epochs"] == 2 and 0.0 <= metrics["best_val_macro_f1"] <= 1.0
    assert metrics["best_epoch"] in (0, 1)
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve["epoch"].tolist() == [0, 1]
    assert curve["val_macro_f1"].max() == pytest.approx(metrics["best_val_macro_f1"], abs=1e-6)

    texts = pd.read_parquet(workspace["snapshot"] / "corpus.parquet")["text"].head(12).tolist()
    probs, labels = predict_proba(tmp_path / "model", texts, batch_size=5)
    assert probs.shape == (12, 4) and labels == LABELS
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Batches are formed by length, yet each row is its own text's, in the input order.
    one_by_one = np.concatenate([predict_proba(tmp_path / "model", [text])[0] for text in texts])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)

    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "d, texts = sys.argv[1], json.loads(sys.argv[2])\n"
        "tok = AutoTokenizer.from_pretrained(d)\n"
        "model = AutoModelForSequenceClassification.from_pretrained(d).eval()\n"
        "batch = tok(texts, padding=True, truncation=True, max_length=model.config.max_position_embeddings, return_tensors='pt')\n"
        "with torch.no_grad():\n"
        "    logits = model(input_ids=batch['input_ids'], attention_mask=batch['attention_mask']).logits\n"
        "print(json.dumps({'pred': logits.argmax(-1).tolist(), 'labels': [model.config.id2label[i] for i in range(4)]}))\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model"), json.dumps(texts)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh["labels"] == LABELS
    assert fresh["pred"] == probs.argmax(axis=1).tolist()


def test_finetune_is_reproducible_and_resumes(workspace: dict[str, Path], tmp_path: Path) -> None:
    a = _finetune(workspace, tmp_path / "a")
    b = _finetune(workspace, tmp_path / "b")
    assert _stable(a) == _stable(b)
    assert (tmp_path / "a" / "curve.csv").read_text() == (tmp_path / "b" / "curve.csv").read_text()
    # Raising max_epochs continues from the last epoch instead of starting over.
    c = _finetune(workspace, tmp_path / "a", cfg=replace(TINY_FT, max_epochs=3))
    assert c["resumed_from_step"] == a["steps"] and c["epochs"] == 3
    assert pd.read_csv(tmp_path / "a" / "curve.csv")["epoch"].tolist() == [0, 1, 2]


def test_lowering_max_epochs_below_the_checkpoint_starts_fresh(
    workspace: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def lowered_to(epochs: int, trained: int) -> None:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            metrics = _finetune(workspace, tmp_path / "a", cfg=replace(TINY_FT, max_epochs=epochs))
        note = f"doclife: starting fresh: the checkpoint has trained {trained} epochs, past finetune.max_epochs={epochs}"
        assert note in caplog.text
        assert metrics["resumed_from_step"] is None and metrics["epochs"] == epochs
        assert pd.read_csv(tmp_path / "a" / "curve.csv")["epoch"].tolist() == list(range(epochs))
        straight = _finetune(workspace, tmp_path / f"straight{epochs}", cfg=replace(TINY_FT, max_epochs=epochs))
        assert _stable(metrics) == _stable(straight)

    _finetune(workspace, tmp_path / "a", cfg=replace(TINY_FT, max_epochs=3))
    # 3 -> 1: Lightning would refuse the checkpoint (current_epoch=2 > max_epochs=1), for good.
    lowered_to(1, trained=3)
    # Raising the length still resumes.
    raised = _finetune(workspace, tmp_path / "a", cfg=replace(TINY_FT, max_epochs=3))
    assert raised["resumed_from_step"] is not None and raised["epochs"] == 3
    # 3 -> 2: Lightning would resume (current_epoch=2 is not > 2) and stop at once, one epoch over.
    lowered_to(2, trained=3)


def test_balanced_sampler_draws_labels_equally(workspace: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(workspace["tokenizer"]))

    def label_counts(balanced: bool, seed: int = 0) -> list[int]:
        data = ClassificationDataModule(workspace["snapshot"], tok, LABELS, 32, 16, balanced_sampling=balanced, seed=seed)
        data.setup("fit")
        # Make the corpus imbalanced: keep every "sports" document, one in four of the others.
        labels = data.train_items.labels
        data.train_items = data.train_items.take(np.flatnonzero((labels == 0) | (np.arange(len(labels)) % 4 == 0)))
        data.class_counts = np.bincount(data.train_items.labels, minlength=len(LABELS)).tolist()
        loader = data.train_dataloader()
        drawn = []
        for epoch in range(20):
            if balanced:
                loader.sampler.set_epoch(epoch)  # as Lightning does before each epoch
            drawn += [batch["labels"] for batch in loader]
        drawn = torch.cat(drawn)
        return torch.bincount(drawn, minlength=len(LABELS)).tolist()

    natural, balanced = label_counts(False), label_counts(True)
    assert natural[0] > 2.5 * min(natural[1:])  # the imbalance is real
    shares = torch.tensor(balanced, dtype=torch.float) / sum(balanced)
    assert (shares - 0.25).abs().max() < 0.03, shares  # each label about a quarter of the draws
    assert label_counts(True) == balanced and label_counts(True, seed=1) != balanced  # seeded, not fixed


def test_length_grouped_batches_cover_every_item_once_with_little_padding() -> None:
    lengths = np.random.default_rng(0).integers(1, 129, size=1000).tolist()
    batches = LengthGroupedBatches(lengths, batch_size=16, seed=3)

    def epoch(e: int) -> list[list[int]]:
        batches.set_epoch(e)
        return list(batches)

    first = epoch(0)
    assert len(first) == len(batches) == 63 and sorted(i for b in first for i in b) == list(range(1000))
    assert epoch(0) == first and epoch(1) != first  # epoch e is drawn from (seed, e): the same after a resume
    epoch(0)
    assert list(batches) == epoch(1)  # a pass without set_epoch is the next epoch (ddp, where set_epoch misses it)

    def token_share(batch_list: list[list[int]]) -> float:  # the share of padded positions that hold a token
        return sum(lengths[i] for b in batch_list for i in b) / sum(len(b) * max(lengths[i] for i in b) for b in batch_list)

    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    assert token_share(first) > 0.9 and token_share([shuffled[i : i + 16] for i in range(0, 1000, 16)]) < 0.6
    # The batches come in shuffled order, not longest first.
    longest = [max(lengths[i] for i in b) for b in first]
    assert longest != sorted(longest, reverse=True)


def test_a_resumed_finetuning_draws_the_batches_of_its_epoch(workspace: dict[str, Path]) -> None:
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    data = ClassificationDataModule(workspace["snapshot"], AutoTokenizer.from_pretrained(str(workspace["tokenizer"])),
                                    LABELS, 32, 16, seed=5)
    data.setup("fit")
    fresh = data.train_dataloader().sampler
    fresh.set_epoch(2)
    # The loader of a run resumed at epoch 2 draws epoch 2's batches even before anyone calls set_epoch.
    data.trainer = SimpleNamespace(current_epoch=2)
    assert list(data.train_dataloader().sampler) == list(fresh)


def test_finetune_with_balanced_sampler_uses_an_unweighted_loss(workspace: dict[str, Path], tmp_path: Path) -> None:
    metrics = _finetune(workspace, tmp_path, cfg=replace(TINY_FT, balance="sampler", max_epochs=1))
    assert metrics["balance"] == "sampler" and set(metrics["class_weights"].values()) == {1.0}
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_finetune_ignores_rows_with_unlisted_labels(workspace: dict[str, Path], tmp_path: Path) -> None:
    metrics = _finetune(workspace, tmp_path, labels=["sports", "technology", "food"], cfg=replace(TINY_FT, max_epochs=1))
    frame = pd.read_parquet(workspace["snapshot"] / "corpus.parquet")
    fit_rows = frame[frame["split"].isin(["train", "validation"])]
    assert metrics["n_ignored_rows"] == int((fit_rows["label"] == "travel").sum()) > 0
    assert metrics["n_train"] + metrics["n_validation"] + metrics["n_ignored_rows"] == len(fit_rows)
    _, labels = predict_proba(tmp_path / "model", ["足球"])
    assert labels == ["sports", "technology", "food"]


def test_pretrain_saves_on_exception_and_resumes_from_there(
    workspace: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_modules.train as train_module
    from lightning_modules.modules import MaskedLMModule

    class Crashing(MaskedLMModule):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            if self.trainer.global_step == 3:
                raise RuntimeError("simulated crash")
            return super().training_step(batch, batch_idx)

    def run() -> dict:
        return pretrain(
            replace(TINY, max_steps=6, checkpoint_every_n_steps=100), workspace["snapshot"], workspace["tokenizer"],
            tmp_path / "model", tmp_path / "ckpt", tmp_path / "m.json", tmp_path / "c.csv",
        )

    monkeypatch.setattr(train_module, "MaskedLMModule", Crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run()
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 3
    monkeypatch.setattr(train_module, "MaskedLMModule", MaskedLMModule)
    metrics = run()
    assert metrics["resumed_from_step"] == 3 and metrics["steps"] == 6


def test_mlm_loss_at_given_target_positions_equals_the_boolean_index() -> None:
    from lightning_modules.data import mlm_batch
    from lightning_modules.model import build_mlm
    from lightning_modules.modules import masked_lm_loss_sum

    torch.manual_seed(0)
    model = build_mlm(replace(TINY, dropout=0.0), vocab_size=60, pad_token_id=0).eval()
    ids, labels = mask_tokens(torch.randint(5, 60, (4, 32)), [0, 1, 2, 3, 4], 4, 60, 0.15, torch.Generator().manual_seed(1))
    batch = mlm_batch(ids, labels)
    assert int(batch["n_targets"]) == int((labels != IGNORE_INDEX).sum())
    assert batch["target_positions"].tolist() == (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1).tolist()
    given = masked_lm_loss_sum(model, ids, labels, batch["target_positions"])
    hidden = model.bert(input_ids=ids).last_hidden_state
    reference = torch.nn.functional.cross_entropy(model.cls(hidden[labels != IGNORE_INDEX]), labels[labels != IGNORE_INDEX], reduction="sum")
    assert torch.allclose(given, reference) and torch.allclose(masked_lm_loss_sum(model, ids, labels), reference)


def test_layer_norm_keeps_the_residual_stream_in_the_autocast_dtype() -> None:
    from lightning_modules.model import AutocastLayerNorm, build_mlm

    model = build_mlm(TINY, vocab_size=64, pad_token_id=0)
    norms = [m for m in model.bert.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 + 2 * TINY.num_layers and all(type(m) is AutocastLayerNorm for m in norms)
    norm = norms[-1]
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    hidden = 3.0 * torch.randn(4, 8, TINY.hidden_size) + 1.0
    # Without autocast: nn.LayerNorm, bit for bit.
    assert torch.equal(norm(hidden), torch.nn.functional.layer_norm(hidden, (TINY.hidden_size,), norm.weight, norm.bias, norm.eps))
    # Under autocast: normalised in float32 from a bf16 input, handed on in bf16.
    low = hidden.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(low)
    expected = torch.nn.functional.layer_norm(low.float(), (TINY.hidden_size,), norm.weight, norm.bias, norm.eps).bfloat16()
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
    # With bf16 parameters (fsdp's bf16-mixed casts them so), still normalised in float32.
    norm.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(low)
    expected = torch.nn.functional.layer_norm(low.float(), (TINY.hidden_size,), norm.weight.float(), norm.bias.float(), norm.eps)
    assert torch.equal(out, expected.bfloat16())


def test_finetuning_keeps_pretraining_s_residual_stream(workspace: dict[str, Path]) -> None:
    from lightning_modules.model import AutocastLayerNorm, build_classifier

    model = build_classifier(workspace["pretrained"], LABELS, dropout=0.1)
    norms = [m for m in model.bert.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 + 2 * TINY.num_layers and all(type(m) is AutocastLayerNorm for m in norms)
    assert model.training  # dropout on while finetuning


@pytest.mark.slow
def test_compiled_pretraining_trains_and_checkpoints_the_plain_module_s_names(workspace: dict[str, Path], tmp_path: Path) -> None:
    # pretrain()'s GPU setting, with Inductor's CPU code here: the layers compile with the product's Inductor
    # options, train, and leave checkpoints (and so resume and export) that name the parameters as before.
    from lightning_modules.model import build_mlm

    cfg = replace(TINY, max_steps=3, checkpoint_every_n_steps=3, compile=True)
    metrics = pretrain(cfg, workspace["snapshot"], workspace["tokenizer"], tmp_path / "model", tmp_path / "ckpt",
                       tmp_path / "m.json", tmp_path / "c.csv")
    assert metrics["steps"] == 3 and np.isfinite(metrics["train_loss"])
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    plain = build_mlm(TINY, vocab_size=64, pad_token_id=0)
    assert set(state) == {f"model.{name}" for name in plain.state_dict()}


def test_norm_clipping_with_a_fused_optimizer_under_bf16(tmp_path: Path) -> None:
    """Lightning refuses to clip for an optimizer that unscales by itself; bf16 has nothing to unscale."""
    import pytorch_lightning as L

    from lightning_modules.modules import ClippedModule

    class Steep(ClippedModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 1)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return 1000.0 * self.layer(batch).float().pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            # Plain SGD with lr 1: the step is minus the (clipped) gradient.
            return torch.optim.SGD(self.parameters(), lr=1.0, fused=True)

    module = Steep()
    before = torch.cat([p.detach().flatten().clone() for p in module.parameters()])
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=1, gradient_clip_val=0.01,
                        gradient_clip_algorithm="norm", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, torch.utils.data.DataLoader(torch.ones(4, 8), batch_size=4))
    after = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert torch.linalg.vector_norm(after - before).item() == pytest.approx(0.01, rel=1e-3)


def test_progress_bar_reads_the_logged_metrics_every_n_steps_while_training(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import RichProgressBar

    from lightning_modules.progress import SparseRichProgressBar

    reads: list[int] = []
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, trainer, module: reads.append(trainer.global_step) or {"loss": trainer.global_step})
    bar = SparseRichProgressBar(metrics_every=20)
    shown = [bar.get_metrics(SimpleNamespace(global_step=step, training=True), None)["loss"] for step in range(45)]
    assert reads == [0, 20, 40]
    assert shown[19] == 0 and shown[20] == 20 and shown[44] == 40  # the last read is shown until the next
    bar.get_metrics(SimpleNamespace(global_step=44, training=False), None)  # validation: always a fresh read
    assert reads[-1] == 44


@pytest.mark.parametrize(("device", "scaler", "fused"), [("cuda:0", None, True), ("cuda:0", "fp16", False), ("cpu", None, False)])
def test_adamw_is_fused_on_cuda_unless_fp16_scales_the_loss(device: str, scaler: str | None, fused: bool) -> None:
    from types import SimpleNamespace

    from lightning_modules.modules import ClippedModule

    module = ClippedModule()
    module._device = torch.device(device)
    module.trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler))
    assert module.fused_optimizer() is fused
