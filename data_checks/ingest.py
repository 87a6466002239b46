"""Read a raw corpus (CSV, TSV, JSONL or Parquet files, optionally compressed) into the canonical table.

Canonical columns: doc_id (unique string), text (string or null), label (string or null),
split (train | validation | test), source (the file a row came from, or the `ingest.source_column`) and
source_row (0-based row index in the whole source: its files are counted one after another, in their order,
so a single file's rows are its own row numbers and every row of a directory has a number of its own).
Ingest never drops or repairs a row: judging rows is the validation stage's job.

The source is read `engine.batch_rows` rows at a time and written one batch at a time, so memory does not
grow with the corpus. What needs every row at once, which derived ids repeat (the k-th copy of a text gets
"~k") and whether a configured id column is unique, is a DuckDB GROUP BY over the written ids
(data_checks/out_of_core.py); repeats are then suffixed in a second pass over the written table.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_checks import out_of_core
from data_checks.config import SPLITS, EngineConfig, IngestConfig
from data_checks.io import DoclifeError, parquet_writer, stage_input_batches
from data_checks.reuse import Store, file_digest, key_of
from data_checks.sources import SourceFile, source_files

CANONICAL_COLUMNS = ("doc_id", "text", "label", "split", "source", "source_row")
SCHEMA = pa.schema([(name, pa.int64() if name == "source_row" else pa.string()) for name in CANONICAL_COLUMNS])

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


class _Text:
    """A source file's text, decoded block by block as a parser reads it (`read`); bytes that are not UTF-8
    are a one-line error naming their offset in the (decompressed) file."""

    def __init__(self, file: SourceFile) -> None:
        self._path = file.path
        self._blocks = file.blocks()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0  # bytes decoded so far
        self._first = True
        self.blank = True
        """Only whitespace so far."""

    def read(self, size: int = -1) -> str:  # noqa: ARG002 - a parser takes whatever length it is given
        for raw in self._blocks:
            pending = len(self._decoder.getstate()[0])  # bytes of a character cut by the previous block
            try:
                text = self._decoder.decode(raw)
            except UnicodeDecodeError as err:
                at = self._offset - pending + err.start
                raise DoclifeError(f"{self._path}: not valid UTF-8 (byte 0x{err.object[err.start]:02x} at offset "
                                   f"{at}); re-save the file as UTF-8") from None
            self._offset += len(raw)
            if text:
                if self._first:
                    # A byte-order mark at the very start is encoding metadata, not content.
                    text, self._first = text.removeprefix("\ufeff"), False
                self.blank = self.blank and not text.strip()
                return text
        try:
            return self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DoclifeError(f"{self._path}: not valid UTF-8 (the file ends inside a character at offset "
                               f"{self._offset}); re-save the file as UTF-8") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.read, "")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__


def _delimited_batches(file: SourceFile, sep: str, header: bool, rows: int) -> Iterator[pd.DataFrame]:
    text = _Text(file)
    try:
        yield from pd.read_csv(
            text,
            sep=sep,
            header=0 if header else None,
            dtype=str,
            # Only a truly empty cell is missing: "NA", "null" or "None" are text a user may mean.
            keep_default_na=False,
            na_values=[""],
            quoting=csv.QUOTE_MINIMAL,
            chunksize=rows,
        )
    except pd.errors.EmptyDataError:
        raise DoclifeError(f"{file.path}: {'empty file' if text.blank else 'no header and no rows'}") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as err:
        raise DoclifeError(f"{file.path}: cannot parse as {file.format.upper()}: {_one_line(err)}") from None


def _json_scalar(value: object) -> object:
    # Labels like 0/1 or true/false become the strings "0"/"1"/"true"/"false"; nested values stay JSON.
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _jsonl_batches(file: SourceFile, rows: int) -> Iterator[pd.DataFrame]:
    records: list[dict[str, object]] = []
    line_no, tail = 0, ""
    text = _Text(file)
    for block in text:
        # Split on "\n" only: str.splitlines() would also break at U+2028, which JSON allows inside strings.
        lines = (tail + block).split("\n")
        tail = lines.pop()
        for line in lines:
            line_no += 1
            if line.strip():
                records.append(_json_record(file, line_no, line))
                if len(records) == rows:
                    yield pd.DataFrame.from_records(records)
                    records = []
    if tail.strip():
        records.append(_json_record(file, line_no + 1, tail))
    if records:
        yield pd.DataFrame.from_records(records)
    elif text.blank:
        raise DoclifeError(f"{file.path}: empty file")


def _json_record(file: SourceFile, line_no: int, line: str) -> dict[str, object]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DoclifeError(f"{file.path}: line {line_no} is not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise DoclifeError(f"{file.path}: line {line_no} is a JSON {type(record).__name__}, expected an object")
    return {key: _json_scalar(value) for key, value in record.items()}


def _parquet_batches(file: SourceFile, rows: int) -> Iterator[pd.DataFrame]:
    try:
        parquet = pq.ParquetFile(file.path, pre_buffer=False)
        if parquet.metadata.num_rows == 0:
            raise DoclifeError(f"{file.path}: no rows (columns: {', '.join(parquet.schema_arrow.names)})")
        for batch in parquet.iter_batches(batch_size=rows):
            yield batch.to_pandas()
    except (OSError, pa.ArrowException) as err:  # pyarrow raises many types for a damaged file
        raise DoclifeError(f"{file.path}: cannot read as Parquet: {_one_line(err)}") from None


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


def _base_ids(text: pd.Series, source_row: pd.Series) -> pd.Series:
    """The first 16 hex digits of the text's sha1 (of "row:N" for a null text); repeats are suffixed later."""
    key = text.where(text.notna(), "row:" + source_row.astype(str))
    return _sha1_hex(key).str[:16]


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


def _raw_batches(cfg: IngestConfig, file: SourceFile, rows: int) -> Iterator[pd.DataFrame]:
    """One file's rows as read, `rows` at a time, with string column names; an empty or unreadable file is a
    one-line error."""
    if file.path.stat().st_size == 0:
        raise DoclifeError(f"{file.path}: empty file")
    if file.format == "parquet":
        batches = _parquet_batches(file, rows)
    elif file.format == "jsonl":
        batches = _jsonl_batches(file, rows)
    else:
        batches = _delimited_batches(file, "," if file.format == "csv" else "\t", cfg.header, rows)
    empty = None
    for raw in batches:
        raw.columns = [str(c) for c in raw.columns]
        if raw.empty:
            empty = raw
            continue
        yield raw
        empty = False
    if empty is not False:
        columns = ", ".join(empty.columns) if empty is not None else ""
        raise DoclifeError(f"{file.path}: no rows (columns: {columns})")


def _file_batches(cfg: IngestConfig, file: SourceFile, rows: int) -> Iterator[pd.DataFrame]:
    """The configured columns of one file, as strings, `rows` at a time: text, label, and id, split and origin
    where configured. A JSONL record may leave a key out; a column no row of the file has is an error."""
    wanted = {"text": (cfg.text_column, "text"), "label": (cfg.label_column, "label"), "id": (cfg.id_column, "id"),
              "split": (cfg.split_column, "split"), "source": (cfg.source_column, "source")}
    wanted = {key: spec for key, spec in wanted.items() if spec[0]}
    seen: set[str] = set()
    done = 0  # rows of the file before this batch
    for raw in _raw_batches(cfg, file, rows):
        seen.update(raw.columns)
        absent = [(name, role) for name, role in wanted.values() if name not in seen]
        if absent and file.format != "jsonl":  # every batch of a table has the same columns
            name, role = absent[0]
            raise DoclifeError(f"{file.path}: no {role} column {name!r} (columns: {', '.join(raw.columns)})")
        n = len(raw)
        table = {key: _as_strings(raw[name]).reset_index(drop=True) if name in raw.columns
                 else pd.Series([None] * n, dtype=object) for key, (name, _) in wanted.items()}
        if "label" not in table:
            table["label"] = pd.Series([None] * n, dtype=object)
        if "source" not in table:
            # Where each document came from: the gate slices its test metrics by it.
            table["source"] = pd.Series([file.name] * n, dtype=object)
        if "id" in table and table["id"].isna().any():
            row = done + int(table["id"].isna().to_numpy().argmax())
            raise DoclifeError(f"{file.path}: id column {cfg.id_column!r} is empty in row {row}")
        if "split" in table:
            table["split"] = _column_splits(file.path, cfg.split_column, table["split"])
        done += n
        yield pd.DataFrame(table)
    absent = [(name, role) for name, role in wanted.values() if name not in seen]
    if absent:
        name, role = absent[0]
        raise DoclifeError(f"{file.path}: no {role} column {name!r} (columns: {', '.join(sorted(seen))})")


def _canonical(cfg: IngestConfig, table: pd.DataFrame, first_row: int) -> pd.DataFrame:
    """A batch in the canonical columns; derived ids are the plain text hash (repeats are suffixed later)."""
    texts = table["text"]
    source_row = pd.Series(np.arange(first_row, first_row + len(table), dtype=np.int64))
    doc_id = table["id"] if cfg.id_column else _base_ids(texts, source_row)
    split = table["split"] if cfg.split_column else hash_splits(texts, source_row, cfg.validation_fraction,
                                                                 cfg.test_fraction)
    return pd.DataFrame({"doc_id": doc_id.astype(object), "text": texts.astype(object),
                         "label": table["label"].astype(object), "split": split.astype(object),
                         "source": table["source"].fillna("").astype(object), "source_row": source_row})


def _canonical_batches(cfg: IngestConfig, file: SourceFile, first_row: int, rows: int, store: Store | None
                       ) -> Iterator[pd.DataFrame]:
    """One file's rows in the canonical columns, `rows` at a time, numbered from `first_row`. With a store, a
    file whose bytes were ingested at the same first row before is read back from it instead of parsed."""
    computed = (_canonical(cfg, table, first_row + done)
                for table, done in _numbered(_file_batches(cfg, file, rows)))
    if store is None:
        yield from computed
        return
    kept = store.path(key_of("ingest", cfg, file.name, file.format, file.compression, file_digest(file.path),
                             first_row, rows), ".parquet")
    if kept.is_file():
        for batch in pq.ParquetFile(kept, pre_buffer=False).iter_batches(batch_size=rows):
            yield batch.to_pandas()
        return
    with parquet_writer(kept, SCHEMA) as keep:  # kept only once the whole file has been read
        for batch in computed:
            keep(batch)
            yield batch


def _numbered(tables: Iterator[pd.DataFrame]) -> Iterator[tuple[pd.DataFrame, int]]:
    """Each table with the number of rows before it."""
    done = 0
    for table in tables:
        yield table, done
        done += len(table)


def _where(files: list[SourceFile], firsts: np.ndarray, row: int) -> str:
    at = int(np.searchsorted(firsts, row, side="right")) - 1  # the file holding this row
    return f"{files[at].name} row {row - int(firsts[at])}"


def _check_unique_ids(cfg: IngestConfig, table: Path, engine: EngineConfig, files: list[SourceFile],
                      firsts: np.ndarray) -> None:
    """A configured id column must be unique across the whole source: the first repeated value is an error
    naming the two rows (file and row in it) that carry it."""
    first = out_of_core.query("SELECT doc_id, min(source_row) AS a FROM t GROUP BY doc_id HAVING count(*) > 1 "
                              "ORDER BY a LIMIT 1", engine, table, t=table)
    if len(first):
        value, a = first.iloc[0]["doc_id"], int(first.iloc[0]["a"])
        b = int(out_of_core.query(f"SELECT min(source_row) AS b FROM t WHERE doc_id = '{value.replace(chr(39), chr(39) * 2)}' "
                                  f"AND source_row > {a}", engine, table, t=table).iloc[0]["b"])
        place = files[int(np.searchsorted(firsts, a, side="right")) - 1].path
        raise DoclifeError(f"{place}: id column {cfg.id_column!r} has duplicate value {value!r} "
                           f"({_where(files, firsts, a)} and {_where(files, firsts, b)})")


def _suffix_repeats(table: Path, out_path: Path, engine: EngineConfig) -> None:
    """Write `table` to `out_path` with the k-th repeat (k >= 1, in source order) of a derived id as "id~k", so
    ids stay unique and the first copy keeps the plain hash."""
    repeats = table.with_name("repeats.parquet")
    out_of_core.query(
        "SELECT source_row, k FROM (SELECT source_row, row_number() OVER (PARTITION BY doc_id ORDER BY source_row) - 1"
        " AS k FROM t WHERE doc_id IN (SELECT doc_id FROM t GROUP BY doc_id HAVING count(*) > 1)) WHERE k > 0 "
        "ORDER BY source_row", engine, table, into=repeats, t=table)
    if pq.ParquetFile(repeats).metadata.num_rows == 0:
        os.replace(table, out_path)
        return
    with parquet_writer(out_path, SCHEMA) as write:
        batches = stage_input_batches(table, "ingest", engine.batch_rows)
        # source_row is the row's position in the table.
        for batch, found in out_of_core.aligned(repeats, "source_row", batches, engine.batch_rows):
            if len(found):
                at = found["source_row"].to_numpy()
                batch.loc[at, "doc_id"] = batch.loc[at, "doc_id"].to_numpy(object) + ("~" + found["k"].astype(str)).to_numpy(object)
            write(batch)


def _describe(files: list[SourceFile], counts: list[int], firsts: np.ndarray) -> list[dict]:
    return [{"file": file.name, "format": file.format, "compression": file.compression, "rows": n,
             "first_source_row": int(first)} for file, n, first in zip(files, counts, firsts)]


def ingest(cfg: IngestConfig, source: Path | str, out_path: Path, engine: EngineConfig | None = None) -> dict:
    """Read `source` (a file, a directory or a glob) and write the canonical table to `out_path` (Parquet,
    atomically), `engine.batch_rows` rows at a time; the source is only read.

    The summary lists the source's files with the source_row each one starts at: a row's lineage is
    (file, source_row - that file's first_source_row).
    """
    engine = engine or EngineConfig()
    out_path = Path(out_path)
    files = source_files(source, cfg.format)
    counts: list[int] = []
    splits = dict.fromkeys(SPLITS, 0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.", dir=out_path.parent) as tmp:
        draft = Path(tmp) / "draft.parquet"
        store = Store(engine.reuse, "ingest") if engine.reuse else None
        with parquet_writer(draft, SCHEMA) as write:
            for file in files:
                counts.append(0)
                for batch in _canonical_batches(cfg, file, sum(counts), engine.batch_rows, store):
                    counts[-1] += len(batch)
                    for name, n in batch["split"].value_counts().items():
                        splits[name] += int(n)
                    write(batch)
        if store is not None:
            store.prune()
        firsts = np.cumsum([0] + counts[:-1])
        if cfg.id_column:
            _check_unique_ids(cfg, draft, engine, files, firsts)
            os.replace(draft, out_path)
        else:
            _suffix_repeats(draft, out_path, engine)
    formats = sorted({f.format for f in files})
    return {
        "source": str(source),
        "format": formats[0] if len(formats) == 1 else "mixed",
        "rows": int(sum(counts)),
        "splits": splits,
        "files": _describe(files, counts, firsts),
        "output": str(out_path),
    }


def read_files(cfg: IngestConfig, source: Path | str, engine: EngineConfig | None = None
               ) -> tuple[pd.DataFrame, list[dict]]:
    """Read `source` (a file, a directory or a glob) into the canonical table in memory, one row per input row,
    as ingest writes it, and describe its files: name, format, compression, rows and the source_row of each
    file's first row."""
    with tempfile.TemporaryDirectory(prefix="doclife-ingest-") as tmp:
        summary = ingest(cfg, source, Path(tmp) / "ingested.parquet", engine)
        return pd.read_parquet(Path(tmp) / "ingested.parquet"), summary["files"]


def label_counts(cfg: IngestConfig, source: Path | str, engine: EngineConfig | None = None) -> pd.Series:
    """How often each label occurs in `source`, most frequent first (the configured columns are checked on the
    way), read `engine.batch_rows` rows at a time."""
    engine = engine or EngineConfig()
    counts = pd.Series(dtype="int64")
    for file in source_files(source, cfg.format):
        for table in _file_batches(cfg, file, engine.batch_rows):
            counts = counts.add(table["label"].dropna().value_counts(), fill_value=0)
    return counts.astype("int64").sort_values(ascending=False, kind="stable")


def read_source(cfg: IngestConfig, source: Path | str) -> pd.DataFrame:
    """Read `source` (a file, a directory or a glob) into the canonical table; one row per input row."""
    return read_files(cfg, source)[0]
