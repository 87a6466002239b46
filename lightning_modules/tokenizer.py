"""A WordPiece tokenizer for mixed Chinese/English text, saved as a Hugging Face fast tokenizer.

BERT's normaliser puts spaces around every CJK character, so the pre-tokeniser makes each Chinese character
its own word (and token) while Latin words are split into WordPiece subwords. Chinese therefore never floods
[UNK]: only characters absent from the training text are unknown.
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data_checks.io import atomic_dir
from lightning_modules.config import TokenizeConfig
from lightning_modules.snapshot import load_manifest, read_split, require_rows

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


def unk_rates(tok: Tokenizer, texts: list[str]) -> dict[str, Any]:
    """[UNK] rate among tokens that come from CJK text and among tokens from Latin-script text.

    A token is attributed by the first character of the original text span it covers.
    """
    unk_id = tok.token_to_id("[UNK]")
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


def train_tokenizer(cfg: TokenizeConfig, snapshot_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Train on the train+validation text of the snapshot and save a fast tokenizer into `out_dir`.

    Returns the vocabulary size and the [UNK] rates on the validation text (CJK, Latin, all).
    """
    started = time.perf_counter()
    manifest = load_manifest(snapshot_dir)
    frame = read_split(snapshot_dir, ["train", "validation"])
    require_rows(frame, snapshot_dir, "the train and validation splits")
    tok = build_tokenizer(cfg, frame["text"].tolist())
    validation = frame.loc[frame["split"] == "validation", "text"].tolist()
    rates = unk_rates(tok, validation)
    with atomic_dir(out_dir) as tmp:
        to_hf(tok).save_pretrained(str(tmp))
    return {
        "vocab_size": tok.get_vocab_size(),
        "n_texts": len(frame),
        "n_validation_texts": len(validation),
        **rates,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "snapshot": manifest["snapshot"],
    }
