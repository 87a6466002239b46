"""Read a raw corpus (CSV, TSV, JSONL or Parquet files, optionally compressed) into the canonical table.

Canonical columns: doc_id (unique string), text (string or null), label (string or null),
split (train | validation | test), source (the file a row came from, or the `ingest.source_column`) and
source_row (0-based row index in the whole source: its files are counted one after another, in their order,
so a single file's rows are its own row numbers and every row of a directory has a number of its own).
Ingest never drops or repairs a row: judging rows is the validation stage's job.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.config import SPLITS, IngestConfig
from data_checks.io import DoclifeError, write_parquet
from data_checks.sources import SourceFile, source_files

CANONICAL_COLUMNS = ("doc_id", "text", "label", "split", "source", "source_row")

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def _decode(source: Path, raw: bytes) -> str:
    try:
        # utf-8-sig: a byte-order mark at the very start of the file is encoding metadata, not content.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DoclifeError(
            f"{source}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); re-save the file as UTF-8"
        ) from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__


def _read_delimited(source: Path, text: str, sep: str, fmt: str, header: bool) -> pd.DataFrame:
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if header else None,
            dtype=str,
            # Only a truly empty cell is missing: "NA", "null" or "None" are text a user may mean.
            keep_default_na=False,
            na_values=[""],
            quoting=csv.QUOTE_MINIMAL,
        )
    except pd.errors.EmptyDataError:
        raise DoclifeError(f"{source}: no header and no rows") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as err:
        raise DoclifeError(f"{source}: cannot parse as {fmt.upper()}: {_one_line(err)}") from None


def _json_scalar(value: object) -> object:
    # Labels like 0/1 or true/false become the strings "0"/"1"/"true"/"false"; nested values stay JSON.
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _read_jsonl(source: Path, text: str) -> pd.DataFrame:
    records: list[dict[str, object]] = []
    # Split on "\n" only: str.splitlines() would also break at U+2028, which JSON allows inside strings.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DoclifeError(f"{source}: line {line_no} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DoclifeError(f"{source}: line {line_no} is a JSON {type(record).__name__}, expected an object")
        records.append({key: _json_scalar(value) for key, value in record.items()})
    if not records:
        raise DoclifeError(f"{source}: no rows")
    return pd.DataFrame.from_records(records)


def _read_parquet(source: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(source)
    except Exception as err:  # pyarrow raises many unrelated types for a damaged file
        raise DoclifeError(f"{source}: cannot read as Parquet: {_one_line(err)}") from None


def _is_missing(value: object) -> bool:
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return False
    return bool(pd.isna(value))


def _as_strings(series: pd.Series) -> pd.Series:
    """Values as strings with missing values kept missing; integral floats lose their ".0"."""
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        # Already text (the usual case): no per-value conversion.
        return series.astype(object).where(series.notna(), None)
    if pd.api.types.is_bool_dtype(series):
        out = series.map(lambda v: None if pd.isna(v) else str(bool(v)).lower())
    elif pd.api.types.is_float_dtype(series):
        finite = series.dropna()
        integral = bool(np.all(np.mod(finite, 1) == 0)) if len(finite) else True
        out = series.map(lambda v: None if pd.isna(v) else (str(int(v)) if integral else repr(float(v))))
    else:
        out = series.map(lambda v: None if _is_missing(v) else str(v))
    return out.astype(object).where(out.notna(), None)


def _normalise(texts: pd.Series) -> pd.Series:
    """Whitespace-normalised text: what counts as "the same document" for duplicates and splits."""
    return texts.str.split().str.join(" ")


def _sha1_hex(values: pd.Series) -> pd.Series:
    return values.map(lambda v: hashlib.sha1(v.encode("utf-8")).hexdigest())


def _doc_ids(text: pd.Series, source_row: pd.Series) -> pd.Series:
    key = text.where(text.notna(), "row:" + source_row.astype(str))
    base = _sha1_hex(key).str[:16]
    # The k-th repeat of the same id gets "~k", so ids stay unique and the first copy keeps the plain hash.
    repeat = base.groupby(base).cumcount()
    return base.where(repeat == 0, base + "~" + repeat.astype(str))


def hash_splits(text: pd.Series, source_row: pd.Series, validation_fraction: float, test_fraction: float) -> pd.Series:
    """train/validation/test from a hash of the whitespace-normalised text.

    A document keeps its split when rows are added, removed or reordered, and exact duplicates always
    share a split (so a duplicate can never leak from train into test).
    """
    key = _normalise(text).where(text.notna(), "row:" + source_row.astype(str))
    fraction = _sha1_hex(key).map(lambda h: int(h[:15], 16) / float(16**15))
    return pd.Series(
        np.where(fraction < test_fraction, "test", np.where(fraction < test_fraction + validation_fraction, "validation", "train")),
        index=text.index,
        dtype=object,
    )


def _column_splits(source: Path, column: str, values: pd.Series) -> pd.Series:
    cleaned = values.map(lambda v: None if v is None else _SPLIT_ALIASES.get(v.strip().lower()))
    bad = values[cleaned.isna()]
    if len(bad):
        shown = ", ".join(sorted({repr(v) for v in bad.head(50)})[:5])
        raise DoclifeError(
            f"{source}: split column {column!r} has {len(bad)} value(s) that are not train/validation/test (e.g. {shown})"
        )
    return cleaned


def _column_ids(source: Path, column: str, values: pd.Series) -> pd.Series:
    if values.isna().any():
        raise DoclifeError(f"{source}: id column {column!r} is empty in row {int(values.isna().to_numpy().argmax())}")
    dup = values.duplicated(keep=False)
    if dup.any():
        first = values[dup].iloc[0]
        rows = values.index[values == first].tolist()[:3]
        raise DoclifeError(f"{source}: id column {column!r} has duplicate value {first!r} (rows {', '.join(map(str, rows))})")
    return values


def _read_file(cfg: IngestConfig, file: SourceFile) -> pd.DataFrame:
    """One file's rows as read, with string column names; an empty or unreadable file is a one-line error."""
    source = file.path
    if source.stat().st_size == 0:
        raise DoclifeError(f"{source}: empty file")
    if file.format == "parquet":
        raw = _read_parquet(source)
    else:
        text = _decode(source, file.read_bytes())
        if not text.strip():
            raise DoclifeError(f"{source}: empty file")
        raw = _read_jsonl(source, text) if file.format == "jsonl" else _read_delimited(
            source, text, "," if file.format == "csv" else "\t", file.format, cfg.header)
    raw.columns = [str(c) for c in raw.columns]
    if raw.empty:
        raise DoclifeError(f"{source}: no rows (columns: {', '.join(raw.columns)})")
    return raw


def _file_columns(cfg: IngestConfig, file: SourceFile, raw: pd.DataFrame) -> pd.DataFrame:
    """The configured columns of one file, as strings: text, label, and id, split and origin where configured."""
    def column(name: str, role: str) -> pd.Series:
        if name not in raw.columns:
            raise DoclifeError(f"{file.path}: no {role} column {name!r} (columns: {', '.join(raw.columns)})")
        return _as_strings(raw[name]).reset_index(drop=True)

    n = len(raw)
    table = {"text": column(cfg.text_column, "text"),
             "label": column(cfg.label_column, "label") if cfg.label_column else pd.Series([None] * n, dtype=object),
             # Where each document came from: the gate slices its test metrics by it.
             "source": column(cfg.source_column, "source") if cfg.source_column else pd.Series([file.name] * n, dtype=object)}
    if cfg.id_column:
        table["id"] = _column_ids(file.path, cfg.id_column, column(cfg.id_column, "id"))
    if cfg.split_column:
        table["split"] = _column_splits(file.path, cfg.split_column, column(cfg.split_column, "split"))
    return pd.DataFrame(table)


def _unique_across_files(source: Path, column: str, ids: pd.Series, files: list[SourceFile],
                         firsts: np.ndarray) -> pd.Series:
    """The id column of all files, each already unique in itself: an id in two files is a one-line error."""
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0]
        rows = np.flatnonzero((ids == first).to_numpy())[:2]
        at = np.searchsorted(firsts, rows, side="right") - 1  # the file of each row
        places = " and ".join(f"{files[f].name} row {r - firsts[f]}" for f, r in zip(at, rows))
        raise DoclifeError(f"{source}: id column {column!r} has duplicate value {first!r} ({places})")
    return ids


def read_files(cfg: IngestConfig, source: Path | str) -> tuple[pd.DataFrame, list[dict]]:
    """Read `source` (a file, a directory or a glob) into the canonical table, one row per input row, and
    describe its files: name, format, compression, rows and the source_row of each file's first row."""
    files = source_files(source, cfg.format)
    parts = [_file_columns(cfg, file, _read_file(cfg, file)) for file in files]
    firsts = np.cumsum([0] + [len(part) for part in parts[:-1]])
    table = pd.concat(parts, ignore_index=True)
    texts = table["text"]
    source_row = pd.Series(np.arange(len(table), dtype=np.int64))
    if cfg.id_column:
        doc_id = _unique_across_files(Path(source), cfg.id_column, table["id"], files, firsts)
    else:
        doc_id = _doc_ids(texts, source_row)
    split = table["split"] if cfg.split_column else hash_splits(texts, source_row, cfg.validation_fraction,
                                                                 cfg.test_fraction)
    frame = pd.DataFrame(
        {
            "doc_id": doc_id.astype(object),
            "text": texts.astype(object),
            "label": table["label"].astype(object),
            "split": split.astype(object),
            "source": table["source"].fillna("").astype(object),
            "source_row": source_row,
        }
    )
    described = [{"file": file.name, "format": file.format, "compression": file.compression, "rows": len(part),
                  "first_source_row": int(first)} for file, part, first in zip(files, parts, firsts)]
    return frame, described


def read_source(cfg: IngestConfig, source: Path | str) -> pd.DataFrame:
    """Read `source` (a file, a directory or a glob) into the canonical table; one row per input row."""
    return read_files(cfg, source)[0]


def split_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per split, always listing train, validation and test (0 when absent)."""
    counts = frame["split"].value_counts()
    return {name: int(counts.get(name, 0)) for name in SPLITS}


def ingest(cfg: IngestConfig, source: Path | str, out_path: Path) -> dict:
    """Read `source` and write the canonical table to `out_path` (Parquet, atomically); the source is only read.

    The summary lists the source's files with the source_row each one starts at: a row's lineage is
    (file, source_row - that file's first_source_row).
    """
    frame, files = read_files(cfg, source)
    write_parquet(out_path, frame)
    formats = sorted({f["format"] for f in files})
    return {
        "source": str(source),
        "format": formats[0] if len(formats) == 1 else "mixed",
        "rows": int(len(frame)),
        "splits": split_counts(frame),
        "files": files,
        "output": str(out_path),
    }
