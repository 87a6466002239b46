"""The WordPiece tokenizer: one token per Chinese character, subwords for Latin words, offline reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_checks.io import DoclifeError
from lightning_modules.config import TokenizeConfig
from lightning_modules.synthetic import make_snapshot
from lightning_modules.tokenizer import SPECIAL_TOKENS, train_tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tok")
    snapshot = make_snapshot(root / "snapshot", n_docs=200, seed=1)
    metrics = train_tokenizer(TokenizeConfig(vocab_size=400, min_frequency=2), snapshot, root / "tokenizer")
    return root / "tokenizer", metrics


def _load(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def test_chinese_is_one_token_per_character(trained: tuple[Path, dict]) -> None:
    tok = _load(trained[0])
    text = "足球比赛今天我们非常"
    assert tok.tokenize(text) == list(text)
    assert tok.unk_token_id not in tok(text)["input_ids"]


def test_unknown_chinese_character_is_a_single_unk(trained: tuple[Path, dict]) -> None:
    tok = _load(trained[0])
    # 鑫 never occurs in the corpus: only that character is unknown, its neighbours survive.
    assert tok.tokenize("足球鑫比赛") == ["足", "球", "[UNK]", "比", "赛"]


def test_latin_words_get_subwords_and_lowercase(trained: tuple[Path, dict]) -> None:
    tok = _load(trained[0])
    assert tok.tokenize("FOOTBALL") == ["football"]
    pieces = tok.tokenize("footballs")
    assert pieces[0] == "football" and all(p.startswith("##") for p in pieces[1:]) and len(pieces) >= 2
    assert "[UNK]" not in tok.tokenize("the robot team")


def test_special_tokens_and_template(trained: tuple[Path, dict]) -> None:
    tok = _load(trained[0])
    assert [tok.convert_ids_to_tokens(i) for i in range(5)] == SPECIAL_TOKENS
    ids = tok("足球 match")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.pad_token == "[PAD]" and tok.mask_token == "[MASK]"


def test_metrics_report_vocab_and_unk_rates(trained: tuple[Path, dict]) -> None:
    path, metrics = trained
    assert (path / "tokenizer.json").is_file()
    assert 5 < metrics["vocab_size"] <= 400
    assert metrics["unk_rate_cjk"] < 0.02 and metrics["unk_rate_latin"] < 0.02
    assert metrics["n_tokens_cjk"] > 0 and metrics["n_tokens_latin"] > 0
    assert metrics["snapshot"].startswith("snap-")


def test_trained_on_train_and_validation_only(tmp_path: Path) -> None:
    import pandas as pd

    snapshot = make_snapshot(tmp_path / "snapshot", n_docs=80, seed=2)
    frame = pd.read_parquet(snapshot / "corpus.parquet")
    # A word that exists only in the test split must not enter the vocabulary.
    frame.loc[frame["split"] == "test", "text"] = "zyxwvutsrq zyxwvutsrq zyxwvutsrq"
    frame.to_parquet(snapshot / "corpus.parquet", index=False)
    train_tokenizer(TokenizeConfig(vocab_size=400), snapshot, tmp_path / "tok")
    assert "zyxwvutsrq" not in _load(tmp_path / "tok").get_vocab()


def test_config_and_input_errors(tmp_path: Path) -> None:
    with pytest.raises(DoclifeError, match="vocab_size"):
        TokenizeConfig(vocab_size=10)
    with pytest.raises(DoclifeError, match="manifest"):
        train_tokenizer(TokenizeConfig(), tmp_path, tmp_path / "tok")


def test_the_same_text_trains_the_same_vocabulary_and_ids(trained: tuple[Path, dict], tmp_path: Path) -> None:
    import json

    snapshot = make_snapshot(tmp_path / "snapshot", n_docs=200, seed=1)  # the fixture's corpus
    vocabularies = []
    for run in range(3):
        train_tokenizer(TokenizeConfig(vocab_size=400, min_frequency=2), snapshot, tmp_path / f"tok{run}")
        vocabularies.append(json.loads((tmp_path / f"tok{run}" / "tokenizer.json").read_text())["model"]["vocab"])
    # The trainer's own order for continuation pieces follows a hash map: three runs disagreed without the fix.
    assert vocabularies[0] == vocabularies[1] == vocabularies[2]
    assert vocabularies[0] == json.loads((trained[0] / "tokenizer.json").read_text())["model"]["vocab"]
    # The pieces handed to the trainer first are ordinary vocabulary, not special tokens matched in raw text.
    tok = _load(trained[0])
    assert sorted(tok.all_special_tokens) == sorted(SPECIAL_TOKENS)
    assert "##s" in tok.get_vocab() and "##s" not in tok.tokenize("foot##s")  # '#' is punctuation: split off
