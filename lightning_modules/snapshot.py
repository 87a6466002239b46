"""Reading a data snapshot: `corpus.parquet` (doc_id, text, label, split, source, source_row; a directory of
shards, or one file) and `manifest.json`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

from data_checks.io import DoclifeError
from data_checks.snapshot import CORPUS_FILE, read_manifest

REQUIRED_COLUMNS = ("doc_id", "text", "label", "split")


def load_manifest(snapshot_dir: Path) -> dict[str, Any]:
    """The snapshot's manifest (data_checks.snapshot.read_manifest); it must name the snapshot and its hash."""
    manifest = read_manifest(snapshot_dir)
    for key in ("snapshot", "content_sha256"):
        if key not in manifest:
            raise DoclifeError(f"{Path(snapshot_dir) / 'manifest.json'}: manifest has no {key!r} field")
    return manifest


def read_split(snapshot_dir: Path, splits: Iterable[str]) -> pd.DataFrame:
    """Rows of the snapshot whose `split` is in `splits`, in file order, index reset."""
    path = Path(snapshot_dir) / CORPUS_FILE
    if not path.exists():
        raise DoclifeError(f"{path}: missing snapshot corpus (run the snapshot stage first)")
    frame = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DoclifeError(f"{path}: missing column(s) {', '.join(missing)}")
    wanted = list(splits)
    frame = frame[frame["split"].isin(wanted)].reset_index(drop=True)
    frame["text"] = frame["text"].astype(str)
    frame["label"] = frame["label"].astype(str)
    return frame


def iter_split(snapshot_dir: Path, splits: Iterable[str], columns: Iterable[str] = REQUIRED_COLUMNS,
               batch_rows: int = 65536) -> Iterator[pd.DataFrame]:
    """The rows of `splits` in file order (shard by shard, each in doc_id order), `batch_rows` at a time, with
    only `columns`.

    Memory is bounded by the batch, not the snapshot: the stages that read a whole split (tokenize's
    encoding, finetuning's index, evaluation) read it through this.
    """
    path = Path(snapshot_dir) / CORPUS_FILE
    if not path.exists():
        raise DoclifeError(f"{path}: missing snapshot corpus (run the snapshot stage first)")
    columns = list(dict.fromkeys(columns))
    dataset = ds.dataset(path, format="parquet")
    missing = [c for c in (*columns, "split") if c not in dataset.schema.names]
    if missing:
        raise DoclifeError(f"{path}: missing column(s) {', '.join(dict.fromkeys(missing))}")
    wanted = pc.field("split").isin(list(splits))
    for batch in dataset.to_batches(columns=columns, filter=wanted, batch_size=batch_rows, batch_readahead=1,
                                    fragment_readahead=1, use_threads=False):
        if batch.num_rows:
            frame = batch.to_pandas()
            for column in ("text", "label"):
                if column in frame.columns:
                    frame[column] = frame[column].astype(str)
            yield frame


def no_rows(snapshot_dir: Path, what: str) -> DoclifeError:
    """The one-line error for a split the stage needs that has no rows (for a stage reading batches)."""
    return DoclifeError(f"{Path(snapshot_dir) / CORPUS_FILE}: no rows for {what}")


def require_rows(frame: pd.DataFrame, snapshot_dir: Path, what: str) -> None:
    """Stop with a one-line error when a split the stage needs is empty."""
    if frame.empty:
        raise no_rows(snapshot_dir, what)
