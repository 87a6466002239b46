"""Typed settings for the data stages; field names match the `engine`, `sample`, `ingest`, `validate` and
`snapshot` sections of params.yaml one to one, and every default equals the value shipped there."""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_checks.io import DoclifeError

if TYPE_CHECKING:
    from data_checks.drift_profile import DriftConfig
    from data_checks.duplicates import DuplicatesConfig
    from data_checks.label_noise import LabelNoiseConfig
    from data_checks.text_quality import TextQualityConfig

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet")
SPLITS = ("train", "validation", "test")
DEFAULT_LABELS = ("sports", "technology", "food", "travel")


def need(ok: bool, section: str, message: str) -> None:
    # A bad setting is user input like any other: one line naming where it lives.
    if not ok:
        raise DoclifeError(f"params.yaml: {section}: {message}")


def _section(cls: type, value: Any, where: str) -> Any:
    """A nested settings section: the dataclass itself, or built from its mapping in params.yaml."""
    if value is None:
        return cls()
    if is_dataclass(value):  # already built (a module reload may have made a new class of the same name)
        return value
    need(isinstance(value, dict), where, f"expected a mapping, got {value!r}")
    try:
        return cls(**value)
    except TypeError as err:
        raise DoclifeError(f"params.yaml: {where}: {err}") from None


ENGINE_MODES = ("local", "ray")


@dataclass
class EngineConfig:
    """How the data stages run: the `engine` section of params.yaml, read by every data stage."""

    batch_rows: int = 100_000
    """Rows a data stage holds at a time; its peak memory grows with this, not with the corpus."""
    batch_mb: int = 64
    """And at most about this much column data (a table's uncompressed Parquet size per row times the rows):
    documents of kilobytes come fewer to a batch, so memory follows this on long documents."""
    memory_limit_mb: int = 128
    """Memory the corpus-wide grouping (DuckDB: repeated ids, exact duplicates) may take before it spills
    to a temporary directory beside the stage's output."""
    mode: str = "local"
    """local: every batch in the stage's own process; ray: the per-batch work on a Ray cluster
    (data_checks/engines.py)."""
    ray_address: str | None = None
    """The Ray cluster for mode ray ("auto", "ray://host:10001", ...); null: RAY_ADDRESS, and without it a
    Ray started on this machine for the stage's run."""
    reuse: str | None = None
    """Where the data stages keep per-file and per-batch results for the next run (data_checks/reuse.py): a
    re-run after new files landed recomputes only what they changed. params.yaml's path is relative to the
    workspace; null: nothing is kept."""

    def __post_init__(self) -> None:
        need(self.mode in ENGINE_MODES, "engine", f"mode must be one of {', '.join(ENGINE_MODES)}, got {self.mode!r}")
        need(self.batch_rows >= 1, "engine", f"batch_rows must be >= 1, got {self.batch_rows}")
        need(self.batch_mb >= 1, "engine", f"batch_mb must be >= 1, got {self.batch_mb}")
        need(self.memory_limit_mb >= 64, "engine", f"memory_limit_mb must be >= 64, got {self.memory_limit_mb}")

    def sized_for(self, table: Path | str) -> EngineConfig:
        """This engine with batch_rows lowered, where the rows of the Parquet table at `table` are long, so that a
        batch holds about batch_mb of column data. Rounded down to a power of two: a corpus that grew a little
        keeps its batch boundaries, and so what engine.reuse kept. A table that cannot be read is left to the
        stage's own one-line error."""
        try:
            meta = pq.ParquetFile(table).metadata
        except (OSError, pa.ArrowException):
            return self
        if not meta.num_rows:
            return self
        row_bytes = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) / meta.num_rows
        fits = int(self.batch_mb * 2**20 // max(row_bytes, 1.0))
        if fits >= self.batch_rows:
            return self
        return replace(self, batch_rows=1 << max(fits, 1).bit_length() - 1)


@dataclass
class SampleConfig:
    """The built-in generated corpus (no download needed)."""

    n_docs: int = 2400
    """Clean documents generated before the planted defects are added."""
    seed: int = 7
    """Seed of the generator; the same seed always gives the same corpus."""
    defects_per_kind: int = 6
    """Rows planted per defect kind (null text, HTML residue, mojibake, ...)."""

    def __post_init__(self) -> None:
        need(self.n_docs >= 1, "sample", f"n_docs must be >= 1, got {self.n_docs}")
        need(self.defects_per_kind >= 0, "sample", f"defects_per_kind must be >= 0, got {self.defects_per_kind}")
        # Conflicting duplicates copy existing documents, so there must be enough of them to copy.
        need(
            self.defects_per_kind <= self.n_docs,
            "sample",
            f"defects_per_kind ({self.defects_per_kind}) must not exceed n_docs ({self.n_docs})",
        )


@dataclass
class IngestConfig:
    """How to read the raw corpus into the canonical table (doc_id, text, label, split, source, source_row)."""

    source: str = "data/raw/sample.csv"
    """Path of the raw corpus: CSV, TSV, JSONL or Parquet."""
    format: str = "auto"
    """auto (from the file extension) | csv | tsv | jsonl | parquet."""
    header: bool = True
    """CSV/TSV only: the first line names the columns; without a header columns are named "0", "1", ..."""
    text_column: str = "text"
    """Column holding the document text."""
    label_column: str | None = "label"
    """Column holding the label; None for an unlabelled corpus (every label is then null)."""
    id_column: str | None = None
    """Column holding a unique document id; None derives the id from the text."""
    split_column: str | None = None
    """Column holding train/validation/test; None assigns splits from a hash of the text."""
    source_column: str | None = None
    """Column naming where each document came from (a site, a feed); None uses the source file's name."""
    validation_fraction: float = 0.1
    """Share of documents hashed into the validation split (when split_column is None)."""
    test_fraction: float = 0.1
    """Share of documents hashed into the test split (when split_column is None)."""

    def __post_init__(self) -> None:
        need(self.format in FORMATS, "ingest", f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        need(bool(self.text_column), "ingest", "text_column must not be empty")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            need(0.0 <= value < 1.0, "ingest", f"{name} must be in [0, 1), got {value}")
        need(
            self.validation_fraction + self.test_fraction < 1.0,
            "ingest",
            "validation_fraction + test_fraction must leave rows for training",
        )


@dataclass
class ValidateConfig:
    """The data contract the Great Expectations suite enforces."""

    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    """The declared label set; every validated row carries one of these and every one must occur."""
    min_chars: int = 2
    """Shortest accepted text, counted after stripping surrounding whitespace."""
    max_chars: int = 2000
    """Longest accepted text, counted after stripping surrounding whitespace."""
    max_rejected_fraction: float = 0.2
    """Table-level: the run fails when a larger share of the input rows is quarantined."""
    min_rows_per_split: int = 10
    """Table-level: every split must keep at least this many validated rows."""
    min_label_share: float = 0.005
    """Table-level class balance: every declared label holds at least this share of the validated rows."""
    max_label_share: float = 0.9
    """Table-level class balance: no label holds more than this share of the validated rows."""
    chunk_rows: int = 100_000
    """Rows measured at a time: memory for the per-row text work is bounded by it, not by the corpus."""
    rules: dict[str, dict] = field(default_factory=dict)
    """Per-rule overrides by rule name: {severity: fail|quarantine|warn|off, min_value, max_value}."""
    duplicates: DuplicatesConfig | None = None
    """Exact and near duplicates, conflicting labels and train/test leakage (data_checks.duplicates)."""
    text_quality: TextQualityConfig | None = None
    """Noise rules: markup, spam, scripts, Gopher/C4/FineWeb in a long or short profile (data_checks.text_quality)."""
    label_noise: LabelNoiseConfig | None = None
    """Likely mislabelled rows from cross-validated predictions (data_checks.label_noise)."""
    drift: DriftConfig | None = None
    """The comparison with the previous snapshot's profile (data_checks.drift)."""

    def __post_init__(self) -> None:
        self.labels = [str(label) for label in self.labels]
        need(len(self.labels) >= 1, "validate", "labels must name at least one label")
        need(len(set(self.labels)) == len(self.labels), "validate", f"labels contain duplicates: {self.labels}")
        need(self.min_chars >= 0, "validate", f"min_chars must be >= 0, got {self.min_chars}")
        need(
            self.max_chars >= max(self.min_chars, 1),
            "validate",
            f"max_chars ({self.max_chars}) must be >= min_chars ({self.min_chars}) and >= 1",
        )
        need(
            0.0 <= self.max_rejected_fraction <= 1.0,
            "validate",
            f"max_rejected_fraction must be in [0, 1], got {self.max_rejected_fraction}",
        )
        need(self.min_rows_per_split >= 0, "validate", f"min_rows_per_split must be >= 0, got {self.min_rows_per_split}")
        need(0.0 <= self.min_label_share <= self.max_label_share <= 1.0, "validate",
             f"need 0 <= min_label_share ({self.min_label_share}) <= max_label_share ({self.max_label_share}) <= 1")
        need(self.chunk_rows >= 1, "validate", f"chunk_rows must be >= 1, got {self.chunk_rows}")
        need(isinstance(self.rules, dict), "validate", "rules must map rule names to {severity, min_value, max_value}")
        # Imported here: the rule modules import this module for SPLITS and need().
        from data_checks.drift_profile import DriftConfig
        from data_checks.duplicates import DuplicatesConfig
        from data_checks.label_noise import LabelNoiseConfig
        from data_checks.text_quality import TextQualityConfig

        self.text_quality = _section(TextQualityConfig, self.text_quality, "validate.text_quality")
        self.duplicates = _section(DuplicatesConfig, self.duplicates, "validate.duplicates")
        self.label_noise = _section(LabelNoiseConfig, self.label_noise, "validate.label_noise")
        self.drift = _section(DriftConfig, self.drift, "validate.drift")


@dataclass
class SnapshotConfig:
    """Where versioned corpus snapshots are pushed."""

    remote: str | None = None
    """Name of the DVC remote the flow pushes snapshots and tokenizers to; None: the workspace's default
    remote (core.remote in .dvc/config)."""
    shards: int = 64
    """Parquet shards of a snapshot's corpus; a document's shard follows from its doc_id, so unchanged shards
    stay byte-identical between snapshots. Keep it fixed for a corpus: a new count reshards everything."""

    def __post_init__(self) -> None:
        need(self.remote is None or bool(self.remote), "snapshot", "remote must be null or a remote's name")
        need(1 <= self.shards <= 4096, "snapshot", f"shards must be in [1, 4096], got {self.shards}")
