"""Missing values, labels, length and Unicode: the measures and rules every corpus is held to.

Measures are read off the cleaned table (see clean.py): `fixes` says what cleaning removed, so text that
was nothing but invisible characters is told apart from text that was blank to begin with.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_checks.config import ValidateConfig
from data_checks.rulebook import FAIL, QUARANTINE, WARN, RowRule

# Characters cp1252 maps to code points above U+00FF; with U+0080-U+00FF they are everything a UTF-8
# continuation byte can turn into when a file is read as cp1252 or latin-1.
_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_CP1252_TO_BYTE = {ch: ch.encode("cp1252")[0] for ch in _CP1252_HIGH}
_LATIN_MOJIBAKE = re.compile(f"[\u00c2-\u00ef][\u0080-\u00bf{_CP1252_HIGH}]")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Common CJK ideographs and punctuation only: the rare Extension A block turns up by chance.
_CJK_OR_PUNCT = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Full-width Latin letters and digits (ＡＢＣ１２３); full-width punctuation is normal in Chinese text.
_FULLWIDTH_ALNUM = re.compile(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")
_INVISIBLE_OR_CONTROL = re.compile(r"[\u200b\u200c\u200d\u2060\u00ad\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_REMOVED_BY_CLEANING = ("bom", "invisible", "control")


def _sloppy_cp1252_bytes(text: str) -> bytes:
    """The bytes a cp1252/latin-1 reader would have seen to produce `text` (other characters dropped)."""
    out = bytearray()
    for ch in text:
        code = ord(ch)
        if code < 0x100:
            out.append(code)
        elif ch in _CP1252_TO_BYTE:
            out.append(_CP1252_TO_BYTE[ch])
    return bytes(out)


def _utf8_evidence(raw: bytes, counts: re.Pattern[str]) -> tuple[int, int]:
    """(decoded characters matching `counts`, invalid bytes) when `raw` is read as UTF-8."""
    decoded = raw.decode("utf-8", errors="replace")
    return len(counts.findall(decoded)), decoded.count("\ufffd")


def looks_like_mojibake(text: str) -> bool:
    """True when `text` reads as UTF-8 that was decoded with the wrong codec (cp1252, latin-1 or GBK).

    The test undoes the suspected wrong decoding and asks whether the bytes then form valid UTF-8:
    real mojibake does ("cafÃ©" -> "café", "閿欒" -> "错误"), genuine text almost never does, so
    accented words or traditional Chinese are not flagged.
    """
    if text.isascii():
        return False
    if _LATIN_MOJIBAKE.search(text):
        multibyte, bad = _utf8_evidence(_sloppy_cp1252_bytes(text), _NON_ASCII)
        if multibyte >= 1 and bad * 2 <= multibyte:
            return True
    if _CJK.search(text):
        # Only CJK characters count: mojibake of Chinese undoes into CJK, while the GBK bytes of genuine
        # text often happen to form other UTF-8 sequences ("好好" -> "ºúº").
        multibyte, bad = _utf8_evidence(text.encode("gbk", errors="ignore"), _CJK_OR_PUNCT)
        # GBK decoding loses a byte here and there (odd lengths), so some invalid bytes are normal.
        if multibyte >= 1 and bad <= multibyte:
            return True
    return False


def _gbk_lead_chars() -> str:
    """Characters whose GBK bytes are a UTF-8 lead byte of a CJK character (E4-E9) and a continuation byte:
    every piece of Chinese UTF-8 misread as GBK starts with one of them (they are rare in real text)."""
    chars = []
    for lead in range(0xE4, 0xEA):
        for trail in range(0x80, 0xC0):
            try:
                chars.append(bytes([lead, trail]).decode("gbk"))
            except UnicodeDecodeError:
                continue
    return "".join(chars)


# Texts matching neither pattern cannot be mojibake, so the exact (per-text) test runs on few rows.
_MOJIBAKE_HINT = f"[\u00c2-\u00ef][\u0080-\u00bf{_CP1252_HIGH}]|[{_gbk_lead_chars()}]"


def garbled(text: pd.Series) -> pd.Series:
    """Whether each text looks like mojibake (null text: False), screened in one vectorised pass first."""
    arrow = pa.array(text.astype(object).where(text.notna(), None).to_numpy(), type=pa.large_string())
    hint = pc.fill_null(pc.match_substring_regex(arrow, _MOJIBAKE_HINT), False).to_numpy(zero_copy_only=False)
    out = pd.Series(False, index=text.index)
    candidates = text[hint]
    out[candidates.index] = candidates.map(looks_like_mojibake).astype(bool)
    return out


def _flag(mask: pd.Series, applies: pd.Series) -> pd.Series:
    """1.0 where `mask`, 0.0 where not, NaN where the rule does not apply."""
    return mask.astype("float32").where(applies)


def measure_core(frame: pd.DataFrame, labels: list[str] | None) -> pd.DataFrame:
    """Per-row measures of the cleaned table (doc_id, text, label, optional fixes and duplicate_of).

    `labels` is the declared label set; None for an unlabelled corpus (label rules then do not apply).
    """
    text = frame["text"].astype(object).where(frame["text"].notna(), None)
    present = text.notna()
    stripped = text.str.strip()
    is_text = stripped.notna()  # a non-string value is the table rule text_type's business
    blank = is_text & (stripped.str.len() == 0)
    fixes = frame["fixes"].fillna("") if "fixes" in frame else pd.Series("", index=frame.index)
    removed = fixes.str.contains("|".join(_REMOVED_BY_CLEANING), regex=True)
    nonblank = is_text & ~blank
    body = text[nonblank]

    if "mojibake" in frame:  # the clean step measured it on the raw text
        mojibake = frame["mojibake"].fillna(False).astype(bool)
    else:
        mojibake = garbled(text.where(is_text, None))
    arrow = pa.array(body.to_numpy(object), type=pa.large_string())
    normal = pc.equal(pc.utf8_normalize(arrow, "NFKC"), arrow).to_numpy(zero_copy_only=False)
    not_nfkc = pd.Series(False, index=frame.index)
    not_nfkc[body.index] = ~normal

    label = frame["label"].astype(object).where(frame["label"].notna(), None)
    label_blank = label.isna() | (label.astype(str).str.strip() == "")
    labelled = labels is not None
    out = pd.DataFrame(index=frame.index)
    out["text_null"] = (~present).astype("float32")
    out["text_not_string"] = (present & ~is_text).astype("float32")
    out["text_blank"] = _flag(blank & ~removed, present)
    out["text_invisible_only"] = _flag(blank & removed, present)
    out["text_chars"] = stripped.str.len().where(nonblank).astype("float32")
    out["label_null"] = _flag(label_blank, pd.Series(labelled, index=frame.index))
    known = label.isin(labels or [])
    out["label_unknown"] = _flag(~known, pd.Series(labelled, index=frame.index) & ~label_blank)
    out["mojibake"] = _flag(mojibake, nonblank)
    out["not_nfkc"] = _flag(not_nfkc, nonblank)
    out["fullwidth_alnum"] = body.str.count(_FULLWIDTH_ALNUM).reindex(frame.index).astype("float32")
    out["invisible_chars"] = text.str.count(_INVISIBLE_OR_CONTROL).where(present).astype("float32")
    dup = frame["duplicate_of"] if "duplicate_of" in frame else pd.Series(None, index=frame.index, dtype=object)
    out["exact_duplicate"] = _flag(dup.notna(), nonblank)
    return out


def core_rules(cfg: ValidateConfig) -> list[RowRule]:
    """Default rules on the core measures; params.yaml's `validate.rules` overrides severity and bounds."""
    q, w = QUARANTINE, WARN
    return [
        RowRule("text_missing", "text_null", "text is present", max_value=0, severity=q, family="missing"),
        RowRule("text_type", "text_not_string", "every present text is a string (a wrong column fails the run)",
                max_value=0, severity=FAIL, family="inconsistency"),
        RowRule("text_blank", "text_blank", "text is not empty or whitespace only", max_value=0, severity=q, family="missing"),
        RowRule("text_invisible_only", "text_invisible_only",
                "text is more than invisible characters (BOM, zero-width, control)", max_value=0, severity=q, family="missing"),
        RowRule("text_too_short", "text_chars", "text has at least {min_value} characters after stripping whitespace",
                min_value=cfg.min_chars, severity=q, family="noise"),
        RowRule("text_too_long", "text_chars", "text has at most {max_value} characters after stripping whitespace",
                max_value=cfg.max_chars, severity=q, family="noise"),
        RowRule("label_missing", "label_null", "a labelled corpus has a label on every row", max_value=0, severity=q,
                family="missing"),
        RowRule("label_unknown", "label_unknown", "label is one of the declared labels (validate.labels)", max_value=0,
                severity=q, family="inconsistency"),
        RowRule("mojibake", "mojibake", "text is not garbled by a wrong decoding (UTF-8 read as cp1252, latin-1 or GBK)",
                max_value=0, severity=q, family="inconsistency"),
        RowRule("unicode_not_normalised", "not_nfkc", "text is NFKC-normalised (clean.unicode_form does it)",
                max_value=0, severity=w, family="inconsistency"),
        RowRule("fullwidth_alnum", "fullwidth_alnum", "at most {max_value} full-width Latin letters or digits (ＡＢＣ１２３)",
                max_value=0, severity=w, family="inconsistency"),
        RowRule("invisible_chars", "invisible_chars", "no zero-width or control characters are left in the text",
                max_value=0, severity=w, family="inconsistency"),
        RowRule("duplicate_exact", "exact_duplicate",
                "not an exact copy (after normalisation) of an earlier row with the same label", max_value=0,
                severity=q, family="inconsistency"),
    ]


def fill_nan_float32(frame: pd.DataFrame) -> pd.DataFrame:
    """Measures as float32 with NaN for not-applicable: compact for 1M rows, one dtype for GX."""
    return frame.apply(lambda col: pd.to_numeric(col, errors="coerce")).astype(np.float32)
