"""The data contract as Great Expectations suites, plus the derived columns some rules are checked on.

Row rules (severity "quarantine") run on the ingested table; a row failing any of them is set aside
with the names of the rules it broke. Table rules (severity "fail") run on the rows that passed and
stop the pipeline when the corpus as a whole is unfit (too much rejected, a label or a split gone).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

# Must be set before the first import of great_expectations, which reads it at import time.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.expectations import Expectation  # noqa: E402

from data_checks.config import SPLITS, ValidateConfig  # noqa: E402

QUARANTINE = "quarantine"
FAIL = "fail"

# Tags (<div>, </p>, <br/>, <span class="x">) and character entities (&nbsp; &amp; &#39; &#x27;).
# A letter must follow "<" so that "a < b" or "<3" stay legal text.
HTML_REGEX = r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>|&(?:[A-Za-z]{2,8}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});"

# Characters cp1252 maps to code points above U+00FF; with U+0080-U+00FF they are everything a UTF-8
# continuation byte can turn into when a file is read as cp1252 or latin-1.
_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_CP1252_TO_BYTE = {ch: ch.encode("cp1252")[0] for ch in _CP1252_HIGH}
_LATIN_MOJIBAKE = re.compile(f"[\u00c2-\u00ef][\u0080-\u00bf{_CP1252_HIGH}]")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Common CJK ideographs and punctuation only: the rare Extension A block turns up by chance.
_CJK_OR_PUNCT = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@dataclass(frozen=True)
class Rule:
    """One rule of the data contract and the Great Expectations expectation that checks it."""

    name: str
    """Stable name used in the quarantine table, summary.json and Data Docs."""
    severity: str
    """"quarantine" (row rule: failing rows are set aside) or "fail" (table rule: the run stops)."""
    description: str
    """What the rule demands, in words."""
    expectation: Expectation
    """The Great Expectations expectation that checks the rule."""


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


def normalised_text(texts: pd.Series) -> pd.Series:
    """Whitespace-normalised text; blank texts become null (they are not "the same document")."""
    norm = texts.str.split().str.join(" ")
    return norm.where(norm.notna() & (norm != ""), None)


def add_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The ingested rows plus the columns the row rules need that no built-in expectation computes.

    text_stripped_len: length after stripping whitespace (null when the text is null);
    text_nonblank: the stripped text, null when it is null or blank (length rules skip those);
    labels_per_text: distinct non-null labels among rows with the same whitespace-normalised text;
    mojibake: whether the text looks wrongly decoded.
    """
    out = frame.copy()
    text = out["text"].astype(object).where(out["text"].notna(), None)
    stripped = text.str.strip()
    out["text_stripped_len"] = stripped.str.len().astype("Float64")
    out["text_nonblank"] = stripped.where(stripped.notna() & (stripped != ""), None).astype(object)
    norm = normalised_text(text)
    labels_per_text = out.assign(_norm=norm).groupby("_norm", dropna=True)["label"].transform("nunique")
    out["labels_per_text"] = labels_per_text.where(norm.notna()).astype("Float64")
    candidates = text.notna() & text.str.contains(r"[^\x00-\x7f]", regex=True, na=False)
    mojibake = pd.Series(False, index=out.index)
    mojibake[candidates] = text[candidates].map(looks_like_mojibake).astype(bool)
    out["mojibake"] = mojibake.astype(bool)
    return out


DERIVED_COLUMNS = ("text_stripped_len", "text_nonblank", "labels_per_text", "mojibake")


def _rule(name: str, severity: str, description: str, kind: type[Expectation], **kwargs: object) -> Rule:
    # The rule name and severity travel in `meta` so they show in Data Docs and come back in every result.
    expectation = kind(**kwargs, meta={"rule": name, "severity": severity}, description=f"{name}: {description}")
    return Rule(name, severity, description, expectation)


def row_rules(cfg: ValidateConfig) -> list[Rule]:
    """Rules every single row must pass; a failing row is quarantined, never silently dropped."""
    E = gx.expectations
    q = QUARANTINE
    return [
        _rule("text_missing", q, "text is present", E.ExpectColumnValuesToNotBeNull, column="text"),
        _rule(
            "text_blank",
            q,
            "text is not empty or whitespace only",
            E.ExpectColumnValuesToBeBetween,
            column="text_stripped_len",
            min_value=1,
        ),
        _rule(
            "text_too_short",
            q,
            f"text has at least {cfg.min_chars} characters after stripping whitespace",
            E.ExpectColumnValueLengthsToBeBetween,
            column="text_nonblank",
            min_value=cfg.min_chars,
        ),
        _rule(
            "text_too_long",
            q,
            f"text has at most {cfg.max_chars} characters after stripping whitespace",
            E.ExpectColumnValueLengthsToBeBetween,
            column="text_nonblank",
            max_value=cfg.max_chars,
        ),
        _rule("label_missing", q, "label is present", E.ExpectColumnValuesToNotBeNull, column="label"),
        _rule(
            "label_unknown",
            q,
            f"label is one of {', '.join(cfg.labels)}",
            E.ExpectColumnValuesToBeInSet,
            column="label",
            value_set=list(cfg.labels),
        ),
        _rule(
            "duplicate_conflicting_label",
            q,
            "all copies of the same (whitespace-normalised) text carry the same label",
            E.ExpectColumnValuesToBeBetween,
            column="labels_per_text",
            max_value=1,
        ),
        _rule(
            "html_residue",
            q,
            "text has no HTML tags or entities",
            E.ExpectColumnValuesToNotMatchRegex,
            column="text",
            regex=HTML_REGEX,
        ),
        _rule(
            "char_spam",
            q,
            f"no character repeats more than {cfg.max_char_run} times in a row",
            E.ExpectColumnValuesToNotMatchRegex,
            column="text",
            # A run longer than max_char_run: one non-space character followed by max_char_run copies.
            regex=rf"(\S)\1{{{cfg.max_char_run},}}",
        ),
        _rule(
            "mojibake",
            q,
            "text is not garbled by a wrong decoding (UTF-8 read as cp1252, latin-1 or GBK)",
            E.ExpectColumnValuesToNotBeInSet,
            column="mojibake",
            value_set=[True],
        ),
    ]


def min_validated_rows(cfg: ValidateConfig, rows_in: int) -> int:
    """The fewest validated rows the table rules accept for `rows_in` input rows."""
    # The small epsilon keeps 0.8 * 10 from becoming 9 through floating-point error.
    return max(0, math.ceil((1.0 - cfg.max_rejected_fraction) * rows_in - 1e-9))


def table_rules(cfg: ValidateConfig, rows_in: int) -> list[Rule]:
    """Rules on the validated rows as a whole; run on the validated table."""
    E = gx.expectations
    min_rows = min_validated_rows(cfg, rows_in)
    return [
        _rule(
            "rejected_fraction",
            FAIL,
            f"at least {min_rows} of {rows_in} rows pass the row rules (max_rejected_fraction {cfg.max_rejected_fraction})",
            E.ExpectTableRowCountToBeBetween,
            min_value=min_rows,
        ),
        _rule(
            "label_set",
            FAIL,
            f"the validated labels are exactly {', '.join(cfg.labels)}",
            E.ExpectColumnDistinctValuesToEqualSet,
            column="label",
            value_set=list(cfg.labels),
        ),
    ]


def split_rules(cfg: ValidateConfig) -> list[Rule]:
    """Rules on the per-split row counts of the validated table (one row per split, see split_count_frame)."""
    return [
        _rule(
            "split_min_rows",
            FAIL,
            f"every split ({', '.join(SPLITS)}) keeps at least {cfg.min_rows_per_split} validated rows",
            gx.expectations.ExpectColumnValuesToBeBetween,
            column="rows",
            min_value=cfg.min_rows_per_split,
        )
    ]


def split_count_frame(validated: pd.DataFrame) -> pd.DataFrame:
    """One row per split with its validated row count; a split with no rows appears with 0."""
    counts = validated["split"].value_counts()
    return pd.DataFrame({"split": list(SPLITS), "rows": [int(counts.get(s, 0)) for s in SPLITS]})
