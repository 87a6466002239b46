"""Cleaning: the explicit, reported repair step between ingest and validation.

Fixes are applied to the text and recorded per row (`fixes`, "; "-joined): Unicode normalisation, BOM,
zero-width and control characters, whitespace. Exact duplicates (same normalised text, same label) are
marked `duplicate_of` the first copy's doc_id; validation sets them aside with that pointer, so every
ingested row still ends in the snapshot or in quarantine. Copies whose labels disagree are not marked:
which label is right is unknown, so validation quarantines all of them as conflicting.

The stage cleans `engine.batch_rows` rows at a time into a draft that carries each row's 64-bit duplicate
key; which rows are later copies is a DuckDB GROUP BY over those keys (data_checks/out_of_core.py), applied
in a second pass that writes the cleaned table and the report. Memory does not grow with the corpus.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_checks import out_of_core
from data_checks.config import EngineConfig, need
from data_checks.core_rules import garbled
from data_checks.engines import map_batches
from data_checks.ingest import SCHEMA
from data_checks.io import DoclifeError, parquet_writer, recorded_path, stage_input_batches, write_json

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


CLEANED_SCHEMA = SCHEMA.append(pa.field("mojibake", pa.bool_())).append(pa.field("fixes", pa.string())).append(
    pa.field("duplicate_of", pa.string()))
REPORT_SCHEMA = pa.schema([("doc_id", pa.string()), ("source_row", pa.int64()), ("fix", pa.string()),
                           ("detail", pa.string())])
# The draft's extra columns: the row's position, the 64-bit hashes of its duplicate key (null: no text) and label.
_KEY_COLUMNS = {"_pos": pa.int64(), "_key": pa.uint64(), "_label": pa.uint64()}
_DRAFT_SCHEMA = pa.schema([*(f for f in CLEANED_SCHEMA if f.name != "duplicate_of"), *_KEY_COLUMNS.items()])

# Later copies, keep-first in input order within (key, split), of keys whose copies all carry one label (a
# null label counts as a label of its own). 64-bit hashes group far faster than the strings; a collision
# would need ~2^32 distinct texts.
_LATER_COPIES = """
WITH keyed AS (SELECT _pos, _key, _label, coalesce(split, '') AS split FROM t WHERE _key IS NOT NULL),
one_label AS (SELECT _key FROM keyed GROUP BY _key HAVING count(*) > 1 AND count(DISTINCT _label) = 1),
firsts AS (SELECT _key, split, min(_pos) AS first_pos FROM keyed WHERE _key IN (SELECT _key FROM one_label)
           GROUP BY _key, split HAVING count(*) > 1)
SELECT k._pos AS pos, d.doc_id AS first_id, d.source_row AS first_source_row
FROM keyed k JOIN firsts f ON k._key = f._key AND k.split = f.split JOIN t d ON d._pos = f.first_pos
WHERE k._pos > f.first_pos AND {marking} ORDER BY pos
"""


def _clean_batch(frame: pd.DataFrame, cfg: CleanConfig) -> pd.DataFrame:
    """A batch cleaned, with `mojibake`, `fixes` and the key columns of the duplicate search (its index, the
    rows' positions in the table, becomes `_pos`)."""
    mojibake = garbled(frame["text"])
    text, fixes = clean_texts(frame["text"], cfg, mojibake)
    out = frame.copy()
    out["text"] = text
    out["mojibake"] = mojibake  # measured on the raw text; validation's mojibake rule reads it
    names = np.array(FIX_COLUMNS, dtype=object)
    out["fixes"] = ["; ".join(names[row]) for row in fixes.to_numpy()] if len(out) else pd.Series(dtype=object)
    key = duplicate_key(out["text"])
    label = out["label"].astype(object).where(out["label"].notna(), "\x00<no label>")
    out["_pos"] = frame.index.to_numpy(np.int64)
    out["_key"] = pd.array(pd.util.hash_array(key.fillna("").to_numpy(object)), dtype="UInt64")
    out.loc[key.isna(), "_key"] = pd.NA
    out["_label"] = pd.util.hash_array(label.to_numpy(object))
    return out


def _finish_batch(draft: pd.DataFrame, copies: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the cleaned rows, their report rows sorted by source row and fix) from a draft batch and the later
    copies among its rows (pos, first_id, first_source_row)."""
    out = draft.drop(columns=list(_KEY_COLUMNS))
    out["duplicate_of"] = pd.Series(None, index=out.index, dtype=object)
    at = copies["pos"].to_numpy()
    out.loc[at, "duplicate_of"] = copies["first_id"].to_numpy(object)
    fixed = out["fixes"].fillna("").str.split("; ").explode()
    fixed = fixed[fixed != ""]
    report = pd.DataFrame({"doc_id": out.loc[fixed.index, "doc_id"].to_numpy(), "source_row":
                           out.loc[fixed.index, "source_row"].to_numpy(), "fix": fixed.to_numpy(object),
                           "detail": [FIX_DESCRIPTIONS[f] for f in fixed]})
    drops = pd.DataFrame({
        "doc_id": out.loc[at, "doc_id"].to_numpy(), "source_row": out.loc[at, "source_row"].to_numpy(),
        "fix": "duplicate_exact",
        "detail": [f"exact duplicate of doc {d} (source row {int(r)}), dropped keep-first"
                   for d, r in zip(copies["first_id"], copies["first_source_row"])],
    })
    report = pd.concat([report, drops], ignore_index=True).sort_values(["source_row", "fix"], kind="stable")
    return out, report.reset_index(drop=True)


def _clean_table(cfg: CleanConfig, source: Path | pd.DataFrame, cleaned_path: Path, report_path: Path,
                 engine: EngineConfig) -> dict[str, Any]:
    """Clean every batch of `source` (the ingested table: a file or a frame) into a draft beside `cleaned_path`
    (the engine runs the batches), find the later copies over the whole draft, then write the cleaned table and
    the report; returns the counts per fix (`summarise`'s)."""
    with tempfile.TemporaryDirectory(prefix=f".{cleaned_path.name}.", dir=cleaned_path.parent) as tmp:
        draft, copies = Path(tmp) / "draft.parquet", Path(tmp) / "copies.parquet"
        with parquet_writer(draft, _DRAFT_SCHEMA) as write:
            for cleaned in map_batches(partial(_clean_batch, cfg=cfg), source, engine, "ingest", list(SCHEMA.names),
                                       reuse=True):
                write(cleaned)
        # With drop_exact_duplicates off the query still runs, so the second pass has its (empty) result to read.
        marking = "true" if cfg.drop_exact_duplicates else "false"
        out_of_core.query(_LATER_COPIES.format(marking=marking), engine, cleaned_path, into=copies, t=draft)
        with parquet_writer(cleaned_path, CLEANED_SCHEMA) as write_cleaned, \
                parquet_writer(report_path, REPORT_SCHEMA) as write_report:
            drafts = stage_input_batches(draft, "clean", engine.batch_rows)
            counts = summarise(pd.DataFrame({"doc_id": [], "fix": []}), 0)
            for batch, found in out_of_core.aligned(copies, "pos", drafts, engine.batch_rows):
                cleaned, report = _finish_batch(batch, found)
                write_cleaned(cleaned)
                write_report(report)
                # A row's report rows are all in its batch, so the batches' counts add up to the table's.
                counts = _add(counts, summarise(report, len(batch)))
        return counts


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: _add(v, b[k]) if isinstance(v, dict) else v + b[k] for k, v in a.items()}


def clean_frame(frame: pd.DataFrame, cfg: CleanConfig, engine: EngineConfig | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cleaned table with `fixes` and `duplicate_of` columns, one report row per applied fix or drop), in memory,
    as the clean stage writes them. Report columns: doc_id, source_row, fix, detail. The input is not modified."""
    engine = engine or EngineConfig()
    with tempfile.TemporaryDirectory(prefix="doclife-clean-") as tmp:
        cleaned_path, report_path = Path(tmp) / "cleaned.parquet", Path(tmp) / "report.parquet"
        _clean_table(cfg, frame.loc[:, list(SCHEMA.names)], cleaned_path, report_path, engine)
        cleaned = pd.read_parquet(cleaned_path)
        cleaned.index = frame.index
        return cleaned, pd.read_parquet(report_path)


def summarise(report: pd.DataFrame, rows: int) -> dict[str, Any]:
    """Counts per fix, for summary.json and the Prefect artifact."""
    counts = report["fix"].value_counts()
    return {
        "rows": int(rows),
        "rows_fixed": int(report.loc[report["fix"] != "duplicate_exact", "doc_id"].nunique()),
        "duplicates_dropped": int(counts.get("duplicate_exact", 0)),
        "fixes": {name: int(counts.get(name, 0)) for name in (*FIX_COLUMNS, "duplicate_exact")},
    }


def clean(cfg: CleanConfig, ingested_path: Path, cleaned_path: Path, report_path: Path, summary_path: Path,
          engine: EngineConfig | None = None) -> dict[str, Any]:
    """Clean the ingested table `engine.batch_rows` rows at a time; write the cleaned table, the per-row report
    and summary.json; return the summary."""
    ingested_path, cleaned_path = Path(ingested_path), Path(cleaned_path)
    engine = (engine or EngineConfig()).sized_for(ingested_path)
    stage_input_batches(ingested_path, "ingest", engine.batch_rows)  # a missing or damaged file fails here, at once
    missing = [c for c in SCHEMA.names if c not in pq.read_schema(ingested_path).names]
    if missing:
        raise DoclifeError(f"{ingested_path}: not an ingested table (no column {missing[0]!r})")
    cleaned_path.parent.mkdir(parents=True, exist_ok=True)
    counts = _clean_table(cfg, ingested_path, cleaned_path, report_path, engine)
    summary = {"ingested": recorded_path(ingested_path), **counts,
               "outputs": {"cleaned": recorded_path(cleaned_path), "report": recorded_path(report_path)}}
    write_json(summary_path, summary)
    return summary
