"""Freeze the validated corpus into a content-addressed snapshot the training stages read.

A snapshot directory holds corpus.parquet, a directory of `snapshot.shards` Parquet shards, and
manifest.json. A document's shard is fixed by a hash of its doc_id alone and each shard is sorted by doc_id,
so a shard whose documents did not change is byte-identical in the next snapshot, and DVC stores and pushes
only the shards that changed. The snapshot's name derives from a hash of the content alone (rows in doc_id
order, whatever the sharding, row order or Parquet encoding), so the same corpus always gives the same
snapshot; there are no timestamps on purpose.

The stage reads `engine.batch_rows` validated rows at a time, spills them to their shards, then sorts and
writes one shard at a time: memory is set by the batch and the largest shard, not by the corpus.
"""

from __future__ import annotations

import hashlib
import heapq
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring as _json_string
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_checks.config import SPLITS, EngineConfig, SnapshotConfig
from data_checks.io import DoclifeError, atomic_dir, read_json, stage_input_batches, write_json

if TYPE_CHECKING:
    from data_checks.drift_profile import DriftConfig

CONTENT_COLUMNS = ("doc_id", "text", "label", "split")
SNAPSHOT_COLUMNS = ("doc_id", "text", "label", "split", "source", "source_row")
SNAPSHOT_SCHEMA = pa.schema([(name, pa.int64() if name == "source_row" else pa.string()) for name in SNAPSHOT_COLUMNS])
CORPUS_FILE = "corpus.parquet"
"""The snapshot's rows: a directory of shards (a single Parquet file is read the same way)."""
SHARD_ROW_GROUP = 16_384
MANIFEST_FILE = "manifest.json"
PROFILE_FILE = "drift_profile.json"
"""The snapshot's profile: the next validation measures drift against it."""


def _json_cell(value: object) -> str:
    # What json.dumps(..., ensure_ascii=False) writes for the cell; a missing value is null, not "".
    if isinstance(value, str):
        return _json_string(value)
    return "null" if value is None or pd.isna(value) else _json_string(str(value))


def _row_lines(columns: list[list]) -> list[bytes]:
    """One JSON array per row and line, the rows' cells given column by column: unambiguous whatever
    characters the text contains. Written as json.dumps writes a list, a few times faster than calling it."""
    cells = [list(map(_json_cell, column)) for column in columns]
    return [("[" + ", ".join(row) + "]\n").encode("utf-8") for row in zip(*cells, strict=True)]


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 of the canonical content: (doc_id, text, label, split) per row, rows sorted by doc_id.

    Missing values hash as JSON null, distinct from the empty string; dtypes and row order do not matter.
    """
    missing = [c for c in CONTENT_COLUMNS if c not in frame.columns]
    if missing:
        raise DoclifeError(f"<frame>: cannot hash a table without columns {', '.join(missing)}")
    ordered = frame.sort_values("doc_id", kind="stable")
    digest = hashlib.sha256()
    for lo in range(0, len(ordered), 8192):
        digest.update(b"".join(_row_lines([ordered[c].iloc[lo:lo + 8192].tolist() for c in CONTENT_COLUMNS])))
    return digest.hexdigest()


def _shard_rows(path: Path) -> Iterator[tuple[str, bytes]]:
    """(doc_id, its row's line) of a shard, in the shard's (doc_id) order."""
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=4096, columns=list(CONTENT_COLUMNS)):
        yield from zip(batch.column("doc_id").to_pylist(),
                       _row_lines([batch.column(c).to_pylist() for c in CONTENT_COLUMNS]), strict=True)


def _shards_hash(shards: list[Path]) -> str:
    """content_hash of the rows of sorted shards, merged into doc_id order a few thousand rows per shard at a time."""
    digest = hashlib.sha256()
    lines: list[bytes] = []
    for _, line in heapq.merge(*(_shard_rows(path) for path in shards), key=itemgetter(0)):
        lines.append(line)
        if len(lines) == 8192:
            digest.update(b"".join(lines))
            lines.clear()
    digest.update(b"".join(lines))
    return digest.hexdigest()


def shard_of(doc_ids: pd.Series, shards: int) -> np.ndarray:
    """The shard of each doc_id: from a hash of the id alone, so it never changes while the id does not."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(d.encode("utf-8"), digest_size=8).digest(), "big") % shards
                        for d in doc_ids.astype(str)), dtype=np.int64, count=len(doc_ids))


def _write_shards(batches: Iterator[pd.DataFrame], corpus_dir: Path, spill_dir: Path, shards: int,
                  on_batch: Callable[[pd.DataFrame], None]) -> list[Path]:
    """Spill every batch's rows to their shards, then sort each shard by doc_id into `corpus_dir`; the shards
    written (only non-empty ones), in name order."""
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in batches:
            on_batch(batch)
            table = pa.Table.from_pandas(batch.loc[:, list(SNAPSHOT_COLUMNS)], schema=SNAPSHOT_SCHEMA, preserve_index=False)
            shard = shard_of(batch["doc_id"], shards)
            for k in np.unique(shard).tolist():
                if k not in writers:
                    writers[k] = pq.ParquetWriter(spill_dir / f"{k}.parquet", SNAPSHOT_SCHEMA)
                writers[k].write_table(table.filter(pa.array(shard == k)))
    finally:
        for writer in writers.values():
            writer.close()
    written = []
    for k in sorted(writers):
        # Only the rows decide the bytes: no pandas metadata, fixed row groups, the same codec every time. Row
        # groups of SHARD_ROW_GROUP rows let a reader (the hash's merge of every shard at once) hold one each.
        rows = pq.read_table(spill_dir / f"{k}.parquet").sort_by("doc_id").replace_schema_metadata(None)
        path = corpus_dir / f"part-{k:04d}.parquet"
        pq.write_table(rows, path, row_group_size=SHARD_ROW_GROUP, compression="zstd")
        (spill_dir / f"{k}.parquet").unlink()
        written.append(path)
    return written


def snapshot(validated_path: Path, summary_path: Path, out_dir: Path, drift_cfg: DriftConfig | None = None,
             cfg: SnapshotConfig | None = None, engine: EngineConfig | None = None) -> dict:
    """Write out_dir/corpus.parquet (shards) and out_dir/manifest.json from a successful validation; return the
    manifest.

    The directory is built beside `out_dir` and swapped in whole, so a failure leaves the previous
    snapshot untouched.
    """
    # Here, not at the top: the training stages read snapshots through this module, and a change to the
    # drift profile must not re-run them (dvc.yaml lists drift_profile.py for this stage alone).
    from data_checks.drift_profile import DriftConfig, ProfileBuilder, write_profile

    validated_path, summary_path, out_dir = Path(validated_path), Path(summary_path), Path(out_dir)
    cfg, engine = cfg or SnapshotConfig(), (engine or EngineConfig()).sized_for(validated_path)
    for path in (validated_path, summary_path):
        if not path.is_file():
            raise DoclifeError(f"{path}: file not found (run the validate stage first)")
    summary = read_json(summary_path)
    if not summary.get("success", False):
        raise DoclifeError(f"{summary_path}: validation did not succeed; refusing to snapshot a failed corpus")
    batches = stage_input_batches(validated_path, "validate", engine.batch_rows)
    schema = pq.read_schema(validated_path)
    missing = [c for c in SNAPSHOT_COLUMNS if c not in schema.names]
    if missing:
        raise DoclifeError(f"{validated_path}: not a validated table (missing columns: {', '.join(missing)})")
    rows = pq.ParquetFile(validated_path).metadata.num_rows
    if summary.get("validated") != rows:
        # A summary from another run would describe different rows: refuse rather than mislabel.
        raise DoclifeError(f"{summary_path}: says {summary.get('validated')} validated rows but {validated_path} has {rows}")

    profile = ProfileBuilder(drift_cfg or DriftConfig())
    splits: Counter[str] = Counter()
    labels: Counter[str] = Counter()

    def count(batch: pd.DataFrame) -> None:
        profile.add(batch)
        splits.update(batch["split"].value_counts().to_dict())
        labels.update({str(k): int(v) for k, v in batch["label"].value_counts().items()})

    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.spill.",
                                                                 dir=out_dir.parent) as spill:
        (tmp / CORPUS_FILE).mkdir()
        shards = _write_shards(batches, tmp / CORPUS_FILE, Path(spill), cfg.shards, count)
        digest = _shards_hash(shards)
        manifest = {
            "snapshot": f"snap-{digest[:12]}",
            "content_sha256": digest,
            "rows": int(rows),
            "splits": {s: int(splits[s]) for s in SPLITS},
            "labels": {k: labels[k] for k in sorted(labels)},
            "rows_in": int(summary["rows_in"]),
            "quarantined": int(summary["quarantined"]),
            "shards": {"count": cfg.shards, "written": len(shards)},
        }
        write_json(tmp / MANIFEST_FILE, manifest)
        write_profile(tmp / PROFILE_FILE, profile.result())
    return manifest


def read_manifest(snapshot_dir: Path) -> dict:
    """The manifest of a snapshot directory."""
    path = Path(snapshot_dir) / MANIFEST_FILE
    if not path.is_file():
        raise DoclifeError(f"{path}: no snapshot manifest (run the snapshot stage first)")
    return read_json(path)


def load_split(snapshot_dir: Path, split: str) -> pd.DataFrame:
    """Rows of one split (train, validation or test) of a snapshot, in doc_id order."""
    if split not in SPLITS:
        raise DoclifeError(f"{snapshot_dir}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    path = Path(snapshot_dir) / CORPUS_FILE
    if not path.exists():
        raise DoclifeError(f"{path}: no snapshot corpus (run the snapshot stage first)")
    corpus = pd.read_parquet(path)
    return corpus.loc[corpus["split"] == split].reset_index(drop=True)
