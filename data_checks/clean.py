"""Cleaning: the explicit, reported repair step between ingest and validation.

Fixes are applied to the text and recorded per row (`fixes`, "; "-joined): Unicode normalisation, BOM,
zero-width and control characters, whitespace. Exact duplicates (same normalised text, same label) are
marked `duplicate_of` the first copy's doc_id; validation sets them aside with that pointer, so every
ingested row still ends in the snapshot or in quarantine. Copies whose labels disagree are not marked:
which label is right is unknown, so validation quarantines all of them as conflicting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_checks.config import need
from data_checks.core_rules import garbled
from data_checks.io import DoclifeError, read_stage_input, recorded_path, write_json, write_parquet

UNICODE_FORMS = ("NFKC", "NFC", "none")

BOM = "\ufeff"
# Patterns run by pyarrow (RE2): zero-width and invisible format characters (ZWSP, ZWNJ, ZWJ, word joiner,
# soft hyphen; the BOM has its own fix), and C0/C1 control characters except tab, line feed and return.
_INVISIBLE = "[\u200b\u200c\u200d\u2060\u00ad]"
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_HSPACE = "[ \t\u00a0\u3000\u2000-\u200a\u202f\u205f]+"

FIX_COLUMNS = ("bom", "invisible", "control", "unicode", "whitespace")
"""Fix names in the order they are applied; a row's `fixes` lists the ones that changed it."""

FIX_DESCRIPTIONS = {
    "bom": "removed byte-order mark(s) (U+FEFF) inside the text",
    "invisible": "removed zero-width / invisible format characters",
    "control": "removed control characters",
    "unicode": "Unicode-normalised (full-width forms, compatibility characters)",
    "whitespace": "normalised whitespace (runs of spaces, line ends, blank lines)",
}


@dataclass
class CleanConfig:
    """What the cleaning step repairs; the `clean` section of params.yaml."""

    unicode_form: str = "NFKC"
    """NFKC (full-width letters/digits and compatibility characters become their plain forms) | NFC | none."""
    strip_invisible: bool = True
    """Remove BOMs, zero-width characters and control characters (tab and newline are kept)."""
    normalise_whitespace: bool = True
    """Collapse runs of spaces, trim every line, keep at most one blank line between paragraphs."""
    drop_exact_duplicates: bool = True
    """Mark later copies of the same normalised text with the same label as duplicates of the first copy."""

    def __post_init__(self) -> None:
        need(self.unicode_form in UNICODE_FORMS, "clean", f"unicode_form must be one of {', '.join(UNICODE_FORMS)}, got {self.unicode_form!r}")


def duplicate_key(text: pd.Series) -> pd.Series:
    """The text two documents must share to be exact duplicates: NFKC, lower-cased, whitespace collapsed."""
    arr = pc.utf8_lower(pc.utf8_normalize(_arrow(text), "NFKC"))
    arr = pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, r"\s+", " "))
    key = pd.Series(arr.to_numpy(zero_copy_only=False), index=text.index, dtype=object)
    return key.where(key.notna() & (key != ""), None)


def _arrow(text: pd.Series) -> pa.Array:
    return pa.array(text.astype(object).where(text.notna(), None).to_numpy(), type=pa.large_string())


def _whitespace(arr: pa.Array) -> pa.Array:
    arr = pc.replace_substring_regex(arr, "\r\n?", "\n")
    arr = pc.replace_substring_regex(arr, _HSPACE, " ")
    arr = pc.replace_substring_regex(arr, " *\n *", "\n")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, "\n{3,}", "\n\n"))


def clean_texts(text: pd.Series, cfg: CleanConfig, mojibake: pd.Series | None = None) -> tuple[pd.Series, pd.DataFrame]:
    """(cleaned text, one boolean column per fix saying whether it changed the row); null text stays null.

    `mojibake` marks garbled rows (computed when None): they are not Unicode-normalised, which would
    erase the evidence validation needs.
    """
    current = _arrow(text)
    changed: dict[str, np.ndarray] = {}

    def step(name: str, fixed: pa.Array) -> None:
        nonlocal current
        changed[name] = pc.fill_null(pc.not_equal(fixed, current), False).to_numpy(zero_copy_only=False)
        current = fixed

    if cfg.strip_invisible:
        step("bom", pc.replace_substring(current, BOM, ""))
        step("invisible", pc.replace_substring_regex(current, _INVISIBLE, ""))
        step("control", pc.replace_substring_regex(current, _CONTROL, ""))
    if cfg.unicode_form != "none":
        keep = pa.array((garbled(text) if mojibake is None else mojibake).to_numpy(bool))
        step("unicode", pc.if_else(keep, current, pc.utf8_normalize(current, cfg.unicode_form)))
    if cfg.normalise_whitespace:
        step("whitespace", _whitespace(current))
    none = np.zeros(len(text), bool)
    fixes = pd.DataFrame({name: changed.get(name, none) for name in FIX_COLUMNS}, index=text.index)
    return pd.Series(current.to_numpy(zero_copy_only=False), index=text.index, dtype=object), fixes


def mark_duplicates(frame: pd.DataFrame) -> pd.Series:
    """doc_id of the first row (input order) of the same split with the same normalised text and label.

    Null for first copies. Copies whose labels differ anywhere are left unmarked, so the conflict stays
    visible to validation; copies in different splits are leakage, which validation sets aside on the
    training side (dropping one here as well would lose the text altogether).
    """
    key = duplicate_key(frame["text"])
    label = frame["label"].astype(object).where(frame["label"].notna(), "\x00<no label>")
    candidates = key.notna()
    # 64-bit hashes group far faster than the strings; a collision would need ~2^32 distinct texts.
    groups = pd.DataFrame({"key": pd.util.hash_array(key[candidates].to_numpy(object)),
                           "label": pd.util.hash_array(label[candidates].to_numpy(object)),
                           "split": frame.loc[candidates, "split"].astype(object).fillna("").to_numpy()},
                          index=key.index[candidates])
    labels_per_key = groups.groupby("key")["label"].transform("nunique")
    same_label = groups[labels_per_key == 1]
    position = same_label.groupby(["key", "split"]).cumcount()
    first = same_label[position == 0]
    first_id = pd.Series(frame.loc[first.index, "doc_id"].to_numpy(),
                         index=pd.MultiIndex.from_frame(first[["key", "split"]]))
    later = same_label[position > 0]
    pointer = pd.Series(first_id.reindex(pd.MultiIndex.from_frame(later[["key", "split"]])).to_numpy(), index=later.index)
    return pointer.reindex(frame.index).astype(object).where(lambda s: s.notna(), None)


def clean_frame(frame: pd.DataFrame, cfg: CleanConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cleaned table with `fixes` and `duplicate_of` columns, one report row per applied fix or drop).

    Report columns: doc_id, source_row, fix, detail. The input frame is not modified.
    """
    mojibake = garbled(frame["text"])
    text, fixes = clean_texts(frame["text"], cfg, mojibake)
    out = frame.copy()
    out["text"] = text
    out["mojibake"] = mojibake  # measured on the raw text; validation's mojibake rule reads it
    names = np.array(FIX_COLUMNS, dtype=object)
    flags = fixes.to_numpy()
    out["fixes"] = ["; ".join(names[row]) for row in flags] if len(out) else pd.Series(dtype=object)
    out["duplicate_of"] = mark_duplicates(out) if cfg.drop_exact_duplicates else None

    applied = fixes.stack()
    applied = applied[applied.to_numpy()]
    rows = applied.index.get_level_values(0)
    fix_names = applied.index.get_level_values(1)
    report = pd.DataFrame({
        "doc_id": frame.loc[rows, "doc_id"].to_numpy(),
        "source_row": frame.loc[rows, "source_row"].to_numpy(),
        "fix": np.asarray(fix_names, dtype=object),
        "detail": [FIX_DESCRIPTIONS[f] for f in fix_names],
    })
    dups = out[out["duplicate_of"].notna()]
    if len(dups):
        kept_row = frame.set_index("doc_id")["source_row"]
        drops = pd.DataFrame({
            "doc_id": dups["doc_id"].to_numpy(),
            "source_row": dups["source_row"].to_numpy(),
            "fix": "duplicate_exact",
            "detail": [f"exact duplicate of doc {d} (source row {int(kept_row[d])}), dropped keep-first"
                       for d in dups["duplicate_of"]],
        })
        report = pd.concat([report, drops], ignore_index=True)
    report = report.sort_values(["source_row", "fix"], kind="stable").reset_index(drop=True)
    return out, report


def summarise(report: pd.DataFrame, rows: int) -> dict[str, Any]:
    """Counts per fix, for summary.json and the Prefect artifact."""
    counts = report["fix"].value_counts()
    return {
        "rows": int(rows),
        "rows_fixed": int(report.loc[report["fix"] != "duplicate_exact", "doc_id"].nunique()),
        "duplicates_dropped": int(counts.get("duplicate_exact", 0)),
        "fixes": {name: int(counts.get(name, 0)) for name in (*FIX_COLUMNS, "duplicate_exact")},
    }


def clean(cfg: CleanConfig, ingested_path: Path, cleaned_path: Path, report_path: Path, summary_path: Path) -> dict[str, Any]:
    """Clean the ingested table; write the cleaned table, the per-row report and summary.json; return the summary."""
    ingested_path = Path(ingested_path)
    frame = read_stage_input(ingested_path, "ingest")
    for column in ("doc_id", "text", "label", "source_row"):
        if column not in frame.columns:
            raise DoclifeError(f"{ingested_path}: not an ingested table (no column {column!r})")
    cleaned, report = clean_frame(frame, cfg)
    write_parquet(cleaned_path, cleaned)
    write_parquet(report_path, report)
    summary = {"ingested": recorded_path(ingested_path), **summarise(report, len(frame)),
               "outputs": {"cleaned": recorded_path(cleaned_path), "report": recorded_path(report_path)}}
    write_json(summary_path, summary)
    return summary
