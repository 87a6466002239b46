"""Starting from a checkpoint a team already has (`pretrain.init_from`): check it, load its tokenizer and its
encoder, and grow its embedding matrix for tokens the tokenize stage added.

A checkpoint is a local Hugging Face directory: config.json (model_type bert), the weights (model.safetensors
or pytorch_model.bin, or their sharded index) and the tokenizer's files (tokenizer.json or vocab.txt). Nothing
is ever downloaded (local_files_only everywhere). Every problem is one line naming the directory, raised
before any training step.

torch and transformers are imported inside the functions that need them: `flows.init_from` builds a
`BaseCheckpoint` for the `code` stage, which runs on every `dvc repro` and must not pay for importing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_checks.io import DoclifeError

CHAMPION = "champion"
TRAINABLE_MODEL_TYPES = ("bert",)  # what build_mlm / build_classifier train: BertForMaskedLM, BertForSequenceClassification
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# The tokens masked-LM pretraining and classification need the tokenizer to name.
REQUIRED_SPECIAL_TOKENS = ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token")


@dataclass(frozen=True)
class BaseCheckpoint:
    """The checkpoint `pretrain.init_from` resolves to (flows/init_from.py resolves it)."""

    path: Path
    """The checkpoint directory on this machine."""
    origin: str
    """What it is to a reader: the directory as params.yaml gives it, or `champion vNNNN`."""
    sha256: str
    """sha256 over the directory's file names and bytes (flows.registry.model_digest): its identity."""

    def lineage(self) -> dict[str, str]:
        """What the pretrain metrics, the registry record and the model card keep of it."""
        return {"origin": self.origin, "sha256": self.sha256}


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    """config.json of the checkpoint at `path`, once its files are there and its architecture is one doclife trains."""
    path = Path(path)
    if not path.is_dir():
        raise DoclifeError(f"{path}: pretrain.init_from names no directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DoclifeError(f"{path}: not a Hugging Face checkpoint (no config.json)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise DoclifeError(f"{path}: not a Hugging Face checkpoint (no weights: {' or '.join(WEIGHT_FILES[:2])})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DoclifeError(f"{config_file}: not valid JSON ({exc})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in TRAINABLE_MODEL_TYPES:
        raise DoclifeError(f"{path}: model_type {model_type!r} in config.json; doclife trains only "
                           f"{', '.join(TRAINABLE_MODEL_TYPES)} (BERT-family) encoders")
    return config


def load_checkpoint_tokenizer(path: Path, config: dict[str, Any]) -> Any:
    """The checkpoint's fast tokenizer, loaded offline, checked against the embedding matrix of `config`."""
    from transformers import AutoTokenizer

    from lightning_modules.model import quiet_transformers

    path = Path(path)
    # Without tokenizer files AutoTokenizer quietly builds an empty BERT tokenizer from config.json alone.
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise DoclifeError(f"{path}: no tokenizer files ({' or '.join(TOKENIZER_FILES)})")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # any loader's failure (missing class, sentencepiece, remote code): one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DoclifeError(f"{path}: the tokenizer cannot be loaded offline ({first})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise DoclifeError(f"{path}: the tokenizer loads only as a slow (Python) tokenizer; doclife needs a fast one "
                           "(tokenizer.json, or vocab.txt for BERT)")
    missing = [name for name in REQUIRED_SPECIAL_TOKENS
               if getattr(tokenizer, name) is None or tokenizer.convert_tokens_to_ids(getattr(tokenizer, name)) is None]
    if missing:
        raise DoclifeError(f"{path}: the tokenizer has no {', '.join(missing)} (masked-LM training needs all of "
                           f"{', '.join(REQUIRED_SPECIAL_TOKENS)})")
    rows = int(config.get("vocab_size") or 0)
    if len(tokenizer) > rows:
        raise DoclifeError(f"{path}: the tokenizer has {len(tokenizer)} tokens, the embedding matrix {rows} rows "
                           "(config.json vocab_size); weights and tokenizer do not belong together")
    return tokenizer


def require_trainable(base: BaseCheckpoint, tokenizer: Any, tokenizer_dir: Path, max_length: int) -> int:
    """The checkpoint's vocabulary size, once pretraining can start from it: rows of `max_length` tokens fit
    its positions, and `tokenizer` (the tokenize stage's) is the checkpoint's own, possibly extended (every
    token of the checkpoint's at its id, any added token after them)."""
    config = read_checkpoint_config(base.path)
    positions = int(config.get("max_position_embeddings", 512))  # BertConfig's default
    if max_length > positions:
        raise DoclifeError(f"{base.path}: the checkpoint has {positions} positions; pretrain.max_length "
                           f"{max_length} must not exceed them")
    own = load_checkpoint_tokenizer(base.path, config)
    vocabulary = tokenizer.get_vocab()
    if any(vocabulary.get(token) != index for token, index in own.get_vocab().items()):
        raise DoclifeError(f"{tokenizer_dir}: not the tokenizer of {base.path} (run the tokenize stage again)")
    return len(own)


def describe_shape(config: Any) -> str:
    """The encoder's shape as one line: what the checkpoint decides instead of pretrain's size fields."""
    return (f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
            f"FFN {config.intermediate_size}, {config.vocab_size} embedding rows, "
            f"{config.max_position_embeddings} positions")


def load_mlm(base: BaseCheckpoint, vocab_size: int, checkpoint_vocab: int, dropout: float) -> Any:
    """The checkpoint's encoder under a masked-LM head, in float32, ready to train.

    A checkpoint without the head (an encoder, or the champion's classifier) gets a fresh one; seed first.
    Check it first (`require_trainable`).
    Rows for the `vocab_size - checkpoint_vocab` tokens the tokenize stage added start at the mean of the
    checkpoint's token rows (see `grow_embeddings`).
    """
    import torch
    from transformers import BertForMaskedLM

    from lightning_modules.model import AutocastLayerNorm, loading_model_files, swap_layer_norms

    with loading_model_files(base.path):
        model = BertForMaskedLM.from_pretrained(
            str(base.path), local_files_only=True, dtype=torch.float32, attn_implementation="sdpa",
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        )
    if vocab_size > checkpoint_vocab:
        grow_embeddings(model, checkpoint_vocab, vocab_size)
    swap_layer_norms(model.bert, AutocastLayerNorm)
    # from_pretrained returns eval mode, and Lightning keeps submodule modes as it finds them.
    return model.train()


def grow_embeddings(model: Any, existing: int, vocab_size: int) -> None:
    """Give token ids existing..vocab_size-1 the mean of rows 0..existing-1, in place.

    The matrix grows when it has fewer than vocab_size rows. A mean row is where a new token starts without
    pulling the encoder anywhere in particular (a random row is an outlier of the trained ones, Hewitt 2021);
    the masked-LM decoder is tied to the embeddings, and its bias starts at the mean bias likewise.
    """
    import torch

    if model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        rows = model.get_input_embeddings().weight  # (rows, hidden)
        rows[existing:vocab_size] = rows[:existing].mean(dim=0)
        head = getattr(getattr(model, "cls", None), "predictions", None)  # None on an encoder without the MLM head
        if head is not None and getattr(head, "bias", None) is not None:
            head.bias[existing:vocab_size] = head.bias[:existing].mean()
