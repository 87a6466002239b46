"""Freeze the validated corpus into a content-addressed snapshot the training stages read.

A snapshot directory holds corpus.parquet (canonical columns, sorted by doc_id) and manifest.json.
Its name derives from a hash of the content alone, so the same corpus always gives the same
snapshot, whatever the row order or Parquet encoding; there are no timestamps on purpose.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from data_checks.config import SPLITS
from data_checks.io import DoclifeError, atomic_dir, read_json, read_stage_input, write_json, write_parquet

if TYPE_CHECKING:
    from data_checks.drift_profile import DriftConfig

CONTENT_COLUMNS = ("doc_id", "text", "label", "split")
SNAPSHOT_COLUMNS = ("doc_id", "text", "label", "split", "source", "source_row")
CORPUS_FILE = "corpus.parquet"
MANIFEST_FILE = "manifest.json"
PROFILE_FILE = "drift_profile.json"
"""The snapshot's profile: the next validation measures drift against it."""


def _cell(value: object) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 of the canonical content: (doc_id, text, label, split) per row, rows sorted by doc_id.

    Missing values hash as JSON null, distinct from the empty string; dtypes and row order do not matter.
    """
    missing = [c for c in CONTENT_COLUMNS if c not in frame.columns]
    if missing:
        raise DoclifeError(f"<frame>: cannot hash a table without columns {', '.join(missing)}")
    ordered = frame.sort_values("doc_id", kind="stable")
    digest = hashlib.sha256()
    for row in zip(*(ordered[c] for c in CONTENT_COLUMNS), strict=True):
        # One JSON array per line: unambiguous whatever characters the text contains.
        digest.update(json.dumps([_cell(v) for v in row], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.value_counts().sort_index().items()}


def snapshot(validated_path: Path, summary_path: Path, out_dir: Path, drift_cfg: DriftConfig | None = None) -> dict:
    """Write out_dir/corpus.parquet and out_dir/manifest.json from a successful validation; return the manifest.

    The directory is built beside `out_dir` and swapped in whole, so a failure leaves the previous
    snapshot untouched.
    """
    # Here, not at the top: the training stages read snapshots through this module, and a change to the
    # drift profile must not re-run them (dvc.yaml lists drift_profile.py for this stage alone).
    from data_checks.drift_profile import DriftConfig, profile, write_profile

    validated_path, summary_path, out_dir = Path(validated_path), Path(summary_path), Path(out_dir)
    for path in (validated_path, summary_path):
        if not path.is_file():
            raise DoclifeError(f"{path}: file not found (run the validate stage first)")
    summary = read_json(summary_path)
    if not summary.get("success", False):
        raise DoclifeError(f"{summary_path}: validation did not succeed; refusing to snapshot a failed corpus")
    frame = read_stage_input(validated_path, "validate")
    missing = [c for c in SNAPSHOT_COLUMNS if c not in frame.columns]
    if missing:
        raise DoclifeError(f"{validated_path}: not a validated table (missing columns: {', '.join(missing)})")
    if summary.get("validated") != len(frame):
        # A summary from another run would describe different rows: refuse rather than mislabel.
        raise DoclifeError(
            f"{summary_path}: says {summary.get('validated')} validated rows but {validated_path} has {len(frame)}"
        )

    corpus = frame.loc[:, list(SNAPSHOT_COLUMNS)].sort_values("doc_id", kind="stable").reset_index(drop=True)
    digest = content_hash(corpus)
    manifest = {
        "snapshot": f"snap-{digest[:12]}",
        "content_sha256": digest,
        "rows": int(len(corpus)),
        "splits": {s: int((corpus["split"] == s).sum()) for s in SPLITS},
        "labels": _counts(corpus["label"]),
        "rows_in": int(summary["rows_in"]),
        "quarantined": int(summary["quarantined"]),
    }
    with atomic_dir(out_dir) as tmp:
        write_parquet(tmp / CORPUS_FILE, corpus)
        write_json(tmp / MANIFEST_FILE, manifest)
        write_profile(tmp / PROFILE_FILE, profile(corpus, drift_cfg or DriftConfig()))
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
    if not path.is_file():
        raise DoclifeError(f"{path}: no snapshot corpus (run the snapshot stage first)")
    corpus = pd.read_parquet(path)
    return corpus.loc[corpus["split"] == split].reset_index(drop=True)
