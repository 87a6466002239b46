"""Reading a data snapshot: `corpus.parquet` (doc_id, text, label, split, source, source_row) and `manifest.json`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

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
    if not path.is_file():
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


def require_rows(frame: pd.DataFrame, snapshot_dir: Path, what: str) -> None:
    """Stop with a one-line error when a split the stage needs is empty."""
    if frame.empty:
        raise DoclifeError(f"{Path(snapshot_dir) / CORPUS_FILE}: no rows for {what}")
