"""A WordPiece tokenizer for mixed Chinese/English text, saved as a Hugging Face fast tokenizer.

BERT's normaliser puts spaces around every CJK character, so the pre-tokeniser makes each Chinese character
its own word (and token) while Latin words are split into WordPiece subwords. Chinese therefore never floods
[UNK]: only characters absent from the training text are unknown.

With `pretrain.init_from` the tokenizer follows the checkpoint: the stage writes the checkpoint's own, and
optionally extends it with the corpus's frequent words that it maps to [UNK] (`extend_vocabulary`).
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data_checks.io import DoclifeError, atomic_dir
from lightning_modules.checkpoint import BaseCheckpoint, load_checkpoint_tokenizer, read_checkpoint_config
from lightning_modules.config import TokenizeConfig
from lightning_modules.snapshot import iter_split, load_manifest, require_rows
from lightning_modules.token_shards import ENCODED_SPLITS, SHARDS_DIR, encode_snapshot, tokenizer_sha256

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def is_cjk(char: str) -> bool:
    """The code-point ranges BERT's normaliser treats as Chinese characters."""
    cp = ord(char)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_latin(char: str) -> bool:
    return (char.isascii() and char.isalnum()) or (char.isalpha() and "LATIN" in unicodedata.name(char, ""))


def _is_punctuation(char: str) -> bool:
    """BertPreTokenizer's split characters besides whitespace: ASCII punctuation and Unicode's P* categories."""
    return (char.isascii() and not char.isalnum() and char.isprintable() and not char.isspace()) \
        or unicodedata.category(char).startswith("P")


def continuing_pieces(normalizer: normalizers.Normalizer, texts: list[str]) -> list[str]:
    """The continuation pieces the trainer needs, sorted: "##c" for every character c that can continue a word.

    The WordPiece trainer creates these pieces while it walks a hash map of words, so their ids, and through
    the ids its choice between equally frequent merges, change from run to run (huggingface/tokenizers#1794).
    Handed over first, as special tokens, they get fixed ids, and the same text always trains the same
    vocabulary. Characters that never continue a word are left out: whitespace and punctuation (the
    pre-tokeniser splits there) and Chinese characters (the normaliser isolates them).
    """
    raw = set().union(*texts)  # distinct characters; normalising is per character, so these are enough
    normalised = set(normalizer.normalize_str("".join(sorted(raw))))
    return ["##" + c for c in sorted(normalised) if not (c.isspace() or _is_punctuation(c) or is_cjk(c))]


def build_tokenizer(cfg: TokenizeConfig, texts: list[str]) -> Tokenizer:
    """Train the WordPiece model on `texts` and attach BERT's [CLS] ... [SEP] template. Deterministic: the
    same texts and settings give the same vocabulary and ids (see `continuing_pieces`)."""
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=cfg.lowercase
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS + continuing_pieces(normalizer, texts),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    trained = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    trained.normalizer = normalizer
    trained.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trained.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # The trained vocabulary without the pieces' special-token status: in text, "##a" is not one token.
    tok = Tokenizer(trained.model)
    tok.normalizer, tok.pre_tokenizer = trained.normalizer, trained.pre_tokenizer
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def unk_rates(tok: Tokenizer, texts: list[str], unk_token: str = "[UNK]") -> dict[str, Any]:
    """[UNK] rate among tokens that come from CJK text and among tokens from Latin-script text.

    A token is attributed by the first character of the original text span it covers.
    """
    unk_id = tok.token_to_id(unk_token)
    counts = {"cjk": [0, 0], "latin": [0, 0], "all": [0, 0]}  # [unk tokens, tokens]
    for text, encoding in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        # Offsets index the original (un-normalised) text, so its characters tell the script.
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
            is_unk = token_id == unk_id
            counts["all"][0] += is_unk
            counts["all"][1] += 1
            if end <= start:
                continue
            first = text[start]
            group = "cjk" if is_cjk(first) else ("latin" if _is_latin(first) else None)
            if group:
                counts[group][0] += is_unk
                counts[group][1] += 1
    return {
        f"unk_rate_{group}": (unk / total if total else None) for group, (unk, total) in counts.items()
    } | {f"n_tokens_{group}": total for group, (_, total) in counts.items()}


def to_hf(tok: Tokenizer, model_max_length: int | None = None) -> Any:
    """Wrap a `tokenizers.Tokenizer` as a transformers fast tokenizer that AutoTokenizer can reload."""
    from transformers import PreTrainedTokenizerFast

    kwargs: dict[str, Any] = {"model_max_length": model_max_length} if model_max_length else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        padding_side="right",
        **kwargs,
    )


def unknown_words(tok: Tokenizer, texts: list[str], min_frequency: int, limit: int, unk_token: str = "[UNK]",
                  chunk: int = 10000) -> list[tuple[str, int]]:
    """The `limit` most frequent words of `texts` that `tok` maps to [UNK], seen at least `min_frequency` times,
    normalised as the tokenizer sees them: (word, count), most frequent first, ties by the word.

    WordPiece maps a whole word to one [UNK] when it cannot spell it from its pieces, so the offsets of an
    [UNK] token are exactly the unknown word (a character absent from the vocabulary, an emoji, a rare CJK
    character).
    """
    unk_id = tok.token_to_id(unk_token)
    normalize = tok.normalizer.normalize_str if tok.normalizer is not None else str
    counts: Counter[str] = Counter()
    for start in range(0, len(texts), chunk):  # bounded memory: the encodings of one chunk at a time
        part = texts[start:start + chunk]
        for text, encoding in zip(part, tok.encode_batch(part, add_special_tokens=False)):
            for token_id, (begin, end) in zip(encoding.ids, encoding.offsets):
                if token_id == unk_id and end > begin:
                    # BertNormalizer pads CJK characters with spaces: strip them back off.
                    counts[normalize(text[begin:end]).strip()] += 1
    # WordPiece gives [UNK] without a look at the vocabulary for words longer than this: adding them is useless.
    longest = json.loads(tok.to_str())["model"].get("max_input_chars_per_word") or 100
    frequent = [(word, n) for word, n in counts.items()
                if n >= min_frequency and word and len(word) <= longest and not any(c.isspace() for c in word)]
    return sorted(frequent, key=lambda item: (-item[1], item[0]))[:limit]


def extend_wordpiece(tok: Tokenizer, words: list[str]) -> Tokenizer:
    """A copy of the WordPiece tokenizer `tok` with `words` as whole-word entries, with ids after every
    existing one (so the checkpoint's ids, and its embedding rows, stay where they are)."""
    data = json.loads(tok.to_str())
    if data["model"]["type"] != "WordPiece":
        raise ValueError(f"a WordPiece tokenizer to extend, not {data['model']['type']}")
    vocab = data["model"]["vocab"]
    first = tok.get_vocab_size(with_added_tokens=True)
    for offset, word in enumerate(words):
        vocab[word] = first + offset
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def training_sample(snapshot_dir: Path, max_docs: int, batch_rows: int = 65536) -> tuple[pd.DataFrame, int]:
    """The train and validation documents the tokenizer learns from, and how many there are in all.

    At most `max_docs`: those whose doc_id hashes lowest (pandas' fixed-key hash), a sample that depends only on
    the snapshot's content, so the same snapshot always trains the same vocabulary, whatever its size. Memory
    holds the sample and one batch. A snapshot no larger than the sample is taken whole, in file order.
    """
    kept: pd.DataFrame | None = None
    total = 0
    for frame in iter_split(snapshot_dir, ENCODED_SPLITS, ["doc_id", "text", "split"], batch_rows):
        total += len(frame)
        frame["rank"] = pd.util.hash_pandas_object(frame["doc_id"], index=False).to_numpy()
        kept = frame if kept is None else pd.concat([kept, frame], ignore_index=True)
        if len(kept) > max_docs:
            kept = kept.sort_values(["rank", "doc_id"], kind="stable").head(max_docs)
    if kept is None:
        return pd.DataFrame(columns=["doc_id", "text", "split"]), 0
    if total > max_docs:  # back to file (doc_id) order, the order a whole snapshot is read in
        kept = kept.sort_values("doc_id", kind="stable")
    return kept.drop(columns="rank").reset_index(drop=True), total


def train_tokenizer(cfg: TokenizeConfig, snapshot_dir: Path, out_dir: Path,
                    base: BaseCheckpoint | None = None) -> dict[str, Any]:
    """Train on a sample of the snapshot's train+validation text (`training_sample`), save a fast tokenizer
    into `out_dir`, and encode the train and validation documents with it into token shards beside it
    (lightning_modules.token_shards). With `base` (pretrain.init_from), the checkpoint's tokenizer is written
    instead (see `checkpoint_tokenizer`). The tokenizer and its shards appear together or not at all.

    Returns the vocabulary size, the [UNK] rates on the sample's validation text (CJK, Latin, all) and the
    token counts of the shards.
    """
    from transformers import AutoTokenizer

    started = time.perf_counter()
    manifest = load_manifest(snapshot_dir)
    sample, n_docs = training_sample(snapshot_dir, cfg.sample_docs)
    require_rows(sample, snapshot_dir, "the train and validation splits")
    validation = sample.loc[sample["split"] == "validation", "text"].tolist()
    with atomic_dir(out_dir) as tmp:
        if base is not None:
            measures = checkpoint_tokenizer(cfg, base, sample["text"].tolist(), validation, tmp)
        else:
            tok = build_tokenizer(cfg, sample["text"].tolist())
            measures = {"vocab_size": tok.get_vocab_size(), **unk_rates(tok, validation)}
            to_hf(tok).save_pretrained(str(tmp))
        trained_seconds = time.perf_counter() - started
        del sample
        # The tokenizer as pretraining will load it, so the shards hold exactly the ids it would produce.
        saved = AutoTokenizer.from_pretrained(str(tmp), local_files_only=True)
        encoded = encode_snapshot(saved, snapshot_dir, tmp / SHARDS_DIR, tokenizer_sha256(tmp), cfg.shard_tokens)
    return {
        "vocab_size": measures.pop("vocab_size"),
        "n_texts": min(n_docs, cfg.sample_docs),
        "n_corpus_texts": n_docs,
        "n_validation_texts": len(validation),
        **measures,
        **encoded,
        "train_seconds": round(trained_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "snapshot": manifest["snapshot"],
    }


def checkpoint_tokenizer(cfg: TokenizeConfig, base: BaseCheckpoint, texts: list[str], validation: list[str],
                         out_dir: Path) -> dict[str, Any]:
    """Write the tokenizer of the checkpoint `base` into the directory `out_dir`, with up to `cfg.extend_vocabulary` of the
    frequent words of `texts` it maps to [UNK] added (at least `cfg.min_frequency` times each).

    vocab_size and lowercase are the checkpoint's: its embedding rows are indexed by its vocabulary. Returns the
    vocabulary size, the words added, and the [UNK] rates on `validation` of the checkpoint's tokenizer
    (`checkpoint_unk_rate_*`) and of the one written (`unk_rate_*`).
    """
    tokenizer = load_checkpoint_tokenizer(base.path, read_checkpoint_config(base.path))
    backend, unk = tokenizer.backend_tokenizer, tokenizer.unk_token
    kind = json.loads(backend.to_str())["model"]["type"]
    if cfg.extend_vocabulary and kind != "WordPiece":
        raise DoclifeError(f"{base.path}: tokenize.extend_vocabulary adds whole words to a WordPiece vocabulary; "
                           f"this tokenizer is {kind} (set extend_vocabulary: 0)")
    before = unk_rates(backend, validation, unk)
    added = unknown_words(backend, texts, cfg.min_frequency, cfg.extend_vocabulary, unk) if cfg.extend_vocabulary else []
    extended = extend_wordpiece(backend, [word for word, _ in added]) if added else backend
    if added:
        # A fast tokenizer around the extended WordPiece, with the checkpoint's special tokens.
        from transformers import PreTrainedTokenizerFast

        specials = {name: getattr(tokenizer, name) for name in
                    ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token")}
        PreTrainedTokenizerFast(tokenizer_object=extended, model_max_length=tokenizer.model_max_length,
                                padding_side="right", **specials).save_pretrained(str(out_dir))
    else:
        tokenizer.save_pretrained(str(out_dir))
    return {
        "vocab_size": extended.get_vocab_size(with_added_tokens=True),
        "base_checkpoint": base.lineage(),
        "checkpoint_vocab_size": len(tokenizer),
        "added_tokens": len(added),
        "added_examples": [word for word, _ in added[:20]],
        **{f"checkpoint_{key}": value for key, value in before.items() if key.startswith("unk_rate")},
        **unk_rates(extended, validation, unk),
    }
