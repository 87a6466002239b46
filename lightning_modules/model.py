"""The networks: small BERT encoders built from a config (never downloaded), as plain transformers modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from lightning_modules.config import PretrainConfig


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading chatter (weight-loading progress bar, "newly initialized" notes)."""
    previous = hf_logging.get_verbosity()
    progress_bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if progress_bar:
            hf_logging.enable_progress_bar()


def build_mlm(cfg: PretrainConfig, vocab_size: int, pad_token_id: int) -> BertForMaskedLM:
    """A randomly initialised BERT with a masked-LM head, sized by `cfg`."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        # Positions beyond max_length never occur: the tokenizer truncates there.
        max_position_embeddings=cfg.max_length,
        type_vocab_size=2,
        pad_token_id=pad_token_id,
    )
    return BertForMaskedLM._from_config(config, attn_implementation="sdpa")


def build_classifier(pretrained_dir: Path, labels: list[str], dropout: float) -> BertForSequenceClassification:
    """BERT with a fresh classification head on top of the pretrained encoder saved in `pretrained_dir`."""
    # The "newly initialized classifier / unused MLM head weights" report is exactly what finetuning intends.
    with quiet_transformers():
        model = BertForSequenceClassification.from_pretrained(
            str(pretrained_dir),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            classifier_dropout=dropout,
            problem_type="single_label_classification",
            attn_implementation="sdpa",
            local_files_only=True,
        )
    # from_pretrained returns the model in eval mode, and Lightning keeps submodule modes as it finds them:
    # without this, dropout would stay off during finetuning.
    return model.train()
