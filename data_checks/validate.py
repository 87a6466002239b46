"""Validate the cleaned corpus with Great Expectations: quarantine bad rows, warn, stop on an unfit corpus.

Every row rule (data_checks/rulebook.py) is measured per row and checked by one GX expectation on its
measure column. Every input row ends up in exactly one of two tables: validated (no quarantine- or
fail-severity rule broken) or quarantine (with the broken rules' names in `reasons`). Warnings and
quarantines alike are listed in the findings table, one row per (row, rule), with a detail.

The table is read in batches of `engine.batch_rows` rows, several times, and never held whole: the per-row
measures of each batch are spilled to disk; the corpus-wide measures (exact and near duplicates, leakage,
label noise) keep a few bytes a row in memory plus the MinHash signatures (`num_perm` bytes a row), their band
hashes spilled one file per band; each batch then runs through the GX row suite (its result is one run in
Data Docs) and goes to the validated or quarantine file; the table rules and drift run on counts. A file and a
frame (`validate_frame`, for `doclife check`) take the same path.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_checks import expectations as ex
from data_checks.clean import CleanConfig, clean_frame
from data_checks.config import SPLITS, EngineConfig, ValidateConfig
from data_checks.core_rules import core_rules
from data_checks.drift import check_drift
from data_checks.drift_profile import ProfileBuilder, read_profile
from data_checks.expectations import SITE_NAME, add_checkpoint, run_checkpoint, run_on
from data_checks.duplicates import Sketches, duplicate_rules, measure_duplicates
from data_checks.engines import map_batches
from data_checks.label_noise import LabelIssues, label_issues, label_noise_rules
from data_checks.row_measures import as_validated, measure_and_sketch
from data_checks.text_quality import text_rules
from data_checks.ingest import CANONICAL_COLUMNS
from data_checks.io import DoclifeError, atomic_dir, parquet_writer, recorded_path, stage_input_batches, write_json
from data_checks.rulebook import FAIL, OFF, QUARANTINE, WARN, RowRule

gx = ex.gx  # imported there, after GX analytics were switched off

INDEX_COLUMN = "doc_id"
FINDING_COLUMNS = ("doc_id", "source_row", "rule", "severity", "action", "detail")
# Rows a rule module's measures can point at (a kept copy, a leaked twin): shown in the finding's detail.
_DROP_RULES = {"duplicate_exact"}


class ValidationFailed(DoclifeError):
    """A fail-severity rule failed: the corpus as a whole is unfit; all outputs were still written."""


@dataclass
class ValidationReport:
    """What one validation measured. `validate_frame` fills in the three tables; `validate` writes them to files
    as it goes and leaves them None."""

    validated: pd.DataFrame | None
    """Rows that broke no quarantine- or fail-severity rule (canonical columns)."""
    quarantine: pd.DataFrame | None
    """Rows that broke at least one (canonical columns plus `reasons` and `duplicate_of`)."""
    findings: pd.DataFrame | None
    """One row per (row, rule it broke) for every severity, in row order, plus one per failed table rule at the
    end: FINDING_COLUMNS."""
    counts: _Counts
    """Rows in, validated, quarantined and warned, and the validated rows per split and per label."""
    row_rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per row rule: family, severity, description, bounds and how many rows broke it."""
    table_rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per table rule: severity, description, success, observed and expected values."""
    failures: list[str] = field(default_factory=list)
    """One line per failed fail-severity rule: its name, observed and expected values."""
    drift: dict[str, Any] = field(default_factory=dict)
    """The comparison with the previous snapshot's profile (data_checks.drift.check_drift's section)."""

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        """Counts and rule outcomes, as every report of a validation (summary.json, `doclife check`) shows them."""
        return {
            **self.counts.summary(),
            "success": self.success,
            "failures": self.failures,
            "row_rules": self.row_rules,
            "table_rules": self.table_rules,
            "splits": {s: self.counts.splits.get(s, 0) for s in SPLITS},
            "labels": {str(k): int(v) for k, v in sorted(self.counts.labels.items(), key=lambda kv: kv[0])},
            "drift": self.drift,
            "great_expectations_version": gx.__version__,
        }


def rule_catalogue(cfg: ValidateConfig) -> list[RowRule]:
    """Every row rule with params.yaml's overrides applied (rules set to "off" included)."""
    rules = core_rules(cfg) + text_rules(cfg.text_quality) + duplicate_rules(cfg.duplicates) + label_noise_rules(cfg.label_noise)
    names = [r.name for r in rules]
    unknown = sorted(set(cfg.rules) - set(names))
    if unknown:
        raise DoclifeError(f"params.yaml: validate.rules: unknown rule(s) {', '.join(unknown)} (known: {', '.join(names)})")
    return [r.configured(cfg.rules.get(r.name)) for r in rules]


# Corpus-wide measures that are rule columns (the rest of find_duplicates' columns point at rows or explain).
_DUPLICATE_FLAGS = ("near_duplicate", "split_leakage", "conflicting_label", "near_duplicate_conflicting_label")


def _table_outcomes(
    cfg: ValidateConfig, rows_in: int, counts: _Counts, labels: list[str] | None, results: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Observed and expected values of each table rule, and a one-line message per failure."""
    min_rows = ex.min_validated_rows(cfg, rows_in)
    validated = counts.validated
    found = sorted({str(v) for v in counts.labels})
    missing = sorted(set(labels or []) - set(found))
    per_split = {s: counts.splits.get(s, 0) for s in SPLITS}
    small = [s for s, n in per_split.items() if n < cfg.min_rows_per_split]
    shares = {name: round(counts.labels.get(name, 0) / validated if validated else 0.0, 6) for name in labels or []}
    unbalanced = {k: v for k, v in shares.items() if not cfg.min_label_share <= v <= cfg.max_label_share}
    rejected = (rows_in - validated) / rows_in if rows_in else 0.0
    outcomes = {
        "rejected_fraction": (
            {"validated_rows": int(validated), "rejected_fraction": round(rejected, 6)},
            {"min_validated_rows": min_rows, "max_rejected_fraction": cfg.max_rejected_fraction},
            f"only {validated} of {rows_in} rows passed the row rules (rejected {rejected:.1%}, "
            f"max_rejected_fraction {cfg.max_rejected_fraction:g}, expected at least {min_rows} rows)",
        ),
        "label_set": (found, sorted(labels or []),
                      f"declared label(s) {', '.join(missing) or '-'} have no validated rows "
                      f"(observed labels: {', '.join(found) or 'none'}; expected: {', '.join(sorted(labels or []))})"),
        "split_min_rows": (per_split, {"min_rows_per_split": cfg.min_rows_per_split},
                           "split(s) " + ", ".join(f"{s} has {per_split[s]} rows" for s in small)
                           + f" (expected at least {cfg.min_rows_per_split} per split)"),
        "label_balance": (shares, {"min_label_share": cfg.min_label_share, "max_label_share": cfg.max_label_share},
                          "label share(s) " + ", ".join(f"{k} {v:.3f}" for k, v in unbalanced.items())
                          + f" outside [{cfg.min_label_share:g}, {cfg.max_label_share:g}]"),
    }
    labelled = labels is not None
    rules = {r.name: r for r in ex.table_rules(cfg, rows_in, labelled) + ex.count_rules(cfg, labelled)}
    table: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name, rule in rules.items():
        ok = bool(results[name].success)
        observed, expected, message = outcomes[name]
        table[name] = {"severity": rule.severity, "description": rule.description, "success": ok,
                       "observed": observed, "expected": expected}
        if not ok:
            failures.append(f"{name}: {message}")
    return table, failures


def _action(rule: RowRule) -> str:
    if rule.severity == WARN:
        return "warn"
    return "drop" if rule.name in _DROP_RULES else "quarantine"


# ----------------------------------------------------------------------------------------------------------
# The table, read batch by batch


@dataclass
class _Table:
    """The table being validated, read batch by batch in row order (each batch indexed by its rows' positions in
    the table), as many times as the validation needs: a Parquet file an earlier stage wrote, or a frame."""

    rows: int
    columns: list[str]
    read: Callable[[list[str] | None], Iterator[pd.DataFrame]]
    where: str
    source: Path | pd.DataFrame
    """What an engine reads the batches of (data_checks.engines.map_batches)."""

    def __post_init__(self) -> None:
        missing = [c for c in CANONICAL_COLUMNS if c not in self.columns]
        if missing:
            raise DoclifeError(f"{self.where}: not an ingested table (missing columns: {', '.join(missing)})")

    @staticmethod
    def of_file(path: Path, batch_rows: int) -> _Table:
        stage_input_batches(path, "clean", batch_rows)  # a missing or damaged file fails here, at once
        parquet = pq.ParquetFile(path)
        return _Table(parquet.metadata.num_rows, parquet.schema_arrow.names,
                      lambda columns: stage_input_batches(path, "clean", batch_rows, columns), str(path), path)

    @staticmethod
    def of_frame(frame: pd.DataFrame, batch_rows: int, where: str) -> _Table:
        frame = frame.reset_index(drop=True)

        def read(columns: list[str] | None) -> Iterator[pd.DataFrame]:
            for lo in range(0, max(len(frame), 1), batch_rows):
                yield frame.iloc[lo:lo + batch_rows, :] if columns is None else frame.iloc[lo:lo + batch_rows][columns]

        return _Table(len(frame), list(frame.columns), read, where, frame)

    def batches(self) -> Iterator[pd.DataFrame]:
        return map(as_validated, self.read(None))

    def texts_at(self, positions: np.ndarray) -> pd.Series:
        """The texts at ascending `positions`, in that order, from one pass over the text column."""
        parts = []
        for batch in self.read(["text"]):
            if len(batch):
                lo, hi = np.searchsorted(positions, [batch.index[0], batch.index[-1] + 1])
                parts.append(batch["text"].loc[positions[lo:hi]])
        return pd.concat(parts) if parts else pd.Series([], dtype=object)

    def map_texts(self, engine: EngineConfig) -> Callable[[Callable[[pd.Series], Any]], Iterator[Any]]:
        """Runs a function of a text batch over the text column on `engine` (label noise's predictions)."""
        return lambda fn: map_batches(lambda batch: fn(batch["text"]), self.source, engine, "clean", ["text"])

    def source_rows_of(self, doc_ids: set[str]) -> dict[str, int]:
        """{doc_id: source_row} of the rows whose doc_id is in `doc_ids`."""
        found: dict[str, int] = {}
        if doc_ids:
            for batch in self.read(["doc_id", "source_row"]):
                hit = batch[batch["doc_id"].isin(doc_ids)]
                found.update(zip(hit["doc_id"], hit["source_row"].astype(int)))
        return found


def _check_batch(batch: pd.DataFrame, where: str) -> None:
    if batch[INDEX_COLUMN].isna().any():  # repeats, within a batch or across, are _Corpus.check_unique_ids'
        raise DoclifeError(f"{where}: doc_id must be present and unique in every row")
    bad_splits = set(batch["split"].dropna()) - set(SPLITS)
    if bad_splits or batch["split"].isna().any():
        raise DoclifeError(f"{where}: split must be one of {', '.join(SPLITS)} (found {sorted(map(str, bad_splits))})")


@dataclass
class _Counts:
    """What the table rules and the summary count, added up batch by batch."""

    rows_in: int = 0
    validated: int = 0
    quarantined: int = 0
    warnings: int = 0
    splits: Counter = field(default_factory=Counter)
    """Validated rows per split."""
    labels: Counter = field(default_factory=Counter)
    """Validated rows per (non-null) label."""

    def summary(self) -> dict[str, Any]:
        return {"rows_in": self.rows_in, "validated": self.validated, "quarantined": self.quarantined,
                "warnings": self.warnings}


@dataclass
class _Corpus:
    """The per-row arrays the corpus-wide measures and the findings' details need (a few bytes a row)."""

    source_row: np.ndarray
    split: np.ndarray
    """Index into SPLITS."""
    label: np.ndarray
    """Code into `label_values` (-1: null)."""
    has_text: np.ndarray
    id_hash: np.ndarray
    label_values: dict = field(default_factory=dict)

    @staticmethod
    def empty(rows: int) -> _Corpus:
        return _Corpus(np.zeros(rows, np.int64), np.zeros(rows, np.int8), np.full(rows, -1, np.int64),
                       np.zeros(rows, bool), np.zeros(rows, np.uint64))

    def add(self, batch: pd.DataFrame, has_text: np.ndarray) -> None:
        at = slice(batch.index[0], batch.index[-1] + 1)
        self.source_row[at] = batch["source_row"].to_numpy(np.int64)
        self.split[at] = pd.Categorical(batch["split"], categories=SPLITS).codes
        found, values = pd.factorize(batch["label"])
        for value in values:
            self.label_values.setdefault(value, len(self.label_values))
        self.label[at] = np.append(np.array([self.label_values[v] for v in values], np.int64), -1)[found]
        self.has_text[at] = has_text
        self.id_hash[at] = pd.util.hash_pandas_object(batch[INDEX_COLUMN], index=False).to_numpy()

    def check_unique_ids(self, table: _Table) -> None:
        ordered = np.sort(self.id_hash)
        repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
        if not repeated:
            return
        # A repeated hash is almost surely a repeated id; the ids themselves decide.
        seen: set[str] = set()
        for batch in table.read([INDEX_COLUMN]):
            suspects = batch[INDEX_COLUMN][np.isin(pd.util.hash_pandas_object(batch[INDEX_COLUMN], index=False).to_numpy(),
                                                   list(repeated))]
            for doc_id in suspects:
                if doc_id in seen:
                    raise DoclifeError(f"{table.where}: doc_id must be present and unique in every row")
                seen.add(doc_id)


def _details(rule: RowRule, rows: pd.Index, batch: pd.DataFrame, measures: pd.DataFrame, corpus: _Corpus,
             dup: dict[str, np.ndarray], noise: LabelIssues, kept: dict[str, int]) -> list[str]:
    """One detail per violating row: the observed value against the bound, or what the row points at."""
    source_row = corpus.source_row
    if rule.name == "duplicate_exact":
        return [f"exact duplicate of doc {d} (source row {kept[d]}), dropped keep-first"
                for d in batch.loc[rows, "duplicate_of"]]
    if rule.name == "near_duplicate":
        return [f"near duplicate of source row {source_row[p]} (estimated Jaccard {s:.2f})"
                for p, s in zip(dup["near_duplicate_of"][rows], dup["near_duplicate_similarity"][rows])]
    if rule.name == "split_leakage":
        return [f"{batch.at[r, 'split']} copy of source row {source_row[p]} in split {SPLITS[corpus.split[p]]}"
                for r, p in zip(rows, dup["leak_of"][rows])]
    if rule.name == "label_noise":
        return [f"label {batch.at[r, 'label']!r} looks wrong: suggested {noise.names[s]!r} "
                f"(out-of-fold p(given label) = {p:.2f})"
                for r, s, p in zip(rows, noise.suggested[rows], noise.confidence[rows])]
    if rule.name in ("duplicate_conflicting_label", "near_duplicate_conflicting_label"):
        column = "labels_per_text" if rule.name == "duplicate_conflicting_label" else "labels_per_cluster"
        return [f"label {batch.at[r, 'label']!r}; copies carry {int(n)} different labels" for r, n in zip(rows, dup[column][rows])]
    bound = " and ".join(
        f"{op} {v:g}" for op, v in ((">=", rule.min_value), ("<=", rule.max_value)) if v is not None
    )
    values = measures.loc[rows, rule.column].to_numpy()
    return [f"{rule.name}: {rule.column} = {v:g}, expected {bound}" for v in values]


def _as_measure(values: np.ndarray) -> np.ndarray:
    """A corpus-wide measure as a rule column: float32, NaN where it does not apply (coded -1)."""
    return np.where(values < 0, np.nan, values).astype(np.float32)


Sink = Callable[[pd.DataFrame], None]


def _validate_table(
    cfg: ValidateConfig, table: _Table, validated_out: Sink, quarantine_out: Sink, findings_out: Sink,
    spill: Path, data_docs_dir: Path | None, labels: list[str] | None, reference: dict | None, engine: EngineConfig,
) -> ValidationReport:
    """Validate `table` in three passes over its batches, writing rows and findings to the sinks as they are
    judged: (1) per-row measures, spilled to `spill`, and the corpus-wide sketches; then the corpus-wide measures
    (duplicates, label noise) from compact arrays; (2) for label noise, the fit samples' texts and a streamed
    prediction; (3) each batch's rule columns through the GX row suite, and its rows to validated or
    quarantine. Table rules and drift run on counts at the end. The engine runs pass (1)'s batches."""
    context = ex.context(data_docs_dir)
    rules = [r for r in rule_catalogue(cfg) if r.severity != OFF]
    n = table.rows
    corpus = _Corpus.empty(n)
    sketches = Sketches(cfg.duplicates, n, spill)
    duplicate_targets: set[str] = set()
    measure_columns: list[str] = []
    per_row = spill / "measures.f32"  # every row's measures in row order: a batch reads its rows' slice
    with per_row.open("wb") as spilled:
        for part in map_batches(partial(measure_and_sketch, cfg=cfg, labels=labels), table.source, engine, "clean",
                                reuse=True):
            if not len(part.rows):
                continue
            _check_batch(part.rows, table.where)
            corpus.add(part.rows, part.has_text)
            measure_columns = list(part.measures.columns)
            spilled.write(part.measures.to_numpy(np.float32).tobytes())
            sketches.add_sketch(part.sketch)
            duplicate_targets.update(part.rows["duplicate_of"].dropna())
    corpus.check_unique_ids(table)
    split = (corpus.split, list(SPLITS))
    dup = measure_duplicates(sketches, split, corpus.label)
    del sketches
    noise = (label_issues((corpus.label, list(corpus.label_values)), split, corpus.has_text, cfg.label_noise,
                          table.texts_at, table.map_texts(engine))
             if labels is not None else LabelIssues.none(n))
    kept = table.source_rows_of(duplicate_targets)

    row_suite = add_checkpoint(context, "rows", [ex.row_expectation(r) for r in rules], False)
    rule_columns = list(dict.fromkeys(r.column for r in rules))
    counts = _Counts(rows_in=n)
    failed = dict.fromkeys((r.name for r in rules), 0)
    first_failed: dict[str, int] = {}
    setting_aside = [r.name for r in rules if r.severity in (QUARANTINE, FAIL)]
    names = np.array(setting_aside, dtype=object)
    canonical = list(CANONICAL_COLUMNS)
    profile = ProfileBuilder(cfg.drift)
    profiling = bool(reference and reference.get("rows"))  # without a reference drift compares nothing
    width = len(measure_columns)
    for batch in table.batches():
        if not len(batch):
            continue
        at = slice(batch.index[0], batch.index[-1] + 1)
        spilled = np.fromfile(per_row, np.float32, count=len(batch) * width, offset=at.start * width * 4)
        measures_of_rows = pd.DataFrame(spilled.reshape(len(batch), width), columns=measure_columns, index=batch.index)
        corpus_wide = pd.DataFrame({f: _as_measure(dup[f][at]) for f in _DUPLICATE_FLAGS}, index=batch.index)
        measures = pd.concat([measures_of_rows, corpus_wide, pd.DataFrame({"label_issue": _as_measure(noise.issue[at])},
                                                                  index=batch.index)], axis=1)
        # Only the rules' columns, as float64: GX copies the whole frame for each expectation, and compares any
        # other dtype value by value in Python (float32 took twice as long). The masks below compare in float64 too.
        checked = measures[rule_columns].astype(np.float64).assign(doc_id=batch[INDEX_COLUMN].to_numpy())
        results = run_on(row_suite, checked, f"rows-{at.start}-{at.stop - 1}")
        broken = pd.DataFrame({r.name: r.violations(measures) for r in rules}, index=batch.index)
        for rule in rules:
            # GX and the mask apply the same bounds to the same column; a mismatch would be a defect here.
            gx_count = int(results[rule.name].result.get("unexpected_count") or 0)
            count = int(broken[rule.name].sum())
            assert gx_count == count, (rule.name, gx_count, count)
            failed[rule.name] += count
            if count and rule.name not in first_failed:
                first_failed[rule.name] = int(batch.loc[broken[rule.name], "source_row"].iloc[0])

        bad = broken[setting_aside].any(axis=1) if setting_aside else pd.Series(False, index=batch.index)
        reasons = pd.Series(["; ".join(names[row]) for row in broken[setting_aside].to_numpy()], index=batch.index,
                            dtype=object)
        parts = []
        for rule in rules:
            rows = broken.index[broken[rule.name].to_numpy()]
            if len(rows):
                parts.append(pd.DataFrame({
                    "doc_id": batch.loc[rows, "doc_id"].to_numpy(), "source_row": batch.loc[rows, "source_row"].to_numpy(),
                    "rule": rule.name, "severity": rule.severity, "action": _action(rule),
                    "detail": _details(rule, rows, batch, measures, corpus, dup, noise, kept), "_pos": rows,
                }))
        if parts:
            found = pd.concat(parts, ignore_index=True).sort_values(["_pos", "rule"], kind="stable")
            counts.warnings += int((found["action"] == "warn").sum())
            findings_out(found.drop(columns="_pos").astype({"source_row": "Int64"}).reset_index(drop=True))

        validated = batch.loc[~bad, canonical]
        validated_out(validated.reset_index(drop=True))
        quarantine_out(batch.loc[bad, [*canonical, "duplicate_of"]].assign(reasons=reasons[bad]).reset_index(drop=True))
        counts.validated += len(validated)
        counts.quarantined += int(bad.sum())
        counts.splits.update(validated["split"].value_counts().to_dict())
        counts.labels.update(validated["label"].dropna().value_counts().to_dict())
        if profiling:
            profile.add(validated)

    labelled = labels is not None
    table_results = run_checkpoint(context, "table", ex.table_frame(counts.validated, list(counts.labels)),
                                   [r.expectation for r in ex.table_rules(cfg, n, labelled)], False)
    count_results = run_checkpoint(context, "counts", ex.count_frame(counts.splits, counts.labels, counts.validated, labels),
                                   [r.expectation for r in ex.count_rules(cfg, labelled)], False)
    table_outcome, failures = _table_outcomes(cfg, n, counts, labels, {**table_results, **count_results})
    for rule in rules:
        if rule.severity == FAIL and failed[rule.name]:
            failures.append(f"{rule.name}: {failed[rule.name]} row(s) break it ({rule.text}), e.g. source row "
                            f"{first_failed[rule.name]}")
    drift = check_drift(profile, reference, cfg.drift, context)
    failures += [f"drift: {f}" for f in drift["failures"]] if not drift["success"] else []
    failed_tables = pd.DataFrame([
        {"doc_id": None, "source_row": pd.NA, "rule": name, "severity": t["severity"], "action": "warn",
         "detail": f"{t['description']} (observed {t['observed']})"}
        for name, t in table_outcome.items() if not t["success"]
    ], columns=list(FINDING_COLUMNS)).astype({"source_row": "Int64"})
    if len(failed_tables):
        counts.warnings += len(failed_tables)
        findings_out(failed_tables)
    if data_docs_dir is not None:
        context.build_data_docs(site_names=[SITE_NAME])

    row_summary = {
        r.name: {"family": r.family, "severity": r.severity, "description": r.text, "column": r.column,
                 "min_value": r.min_value, "max_value": r.max_value, "failed_rows": failed[r.name]}
        for r in rules
    }
    return ValidationReport(None, None, None, counts, row_summary, table_outcome, failures, drift)


def validate_frame(
    cfg: ValidateConfig, frame: pd.DataFrame, data_docs_dir: Path | None = None, where: str = "<frame>",
    labels: list[str] | None = None, labelled: bool = True, reference: dict | None = None,
    engine: EngineConfig | None = None,
) -> ValidationReport:
    """Run the row and table rules on an ingested (optionally cleaned) table; Data Docs into `data_docs_dir`.

    `labels` is the declared label set (default: validate.labels); `labelled=False` checks an unlabelled
    corpus, where the label rules do not apply. `reference` is the previous snapshot's drift profile
    (None: no previous snapshot). `where` names the table in error messages. The frame goes through the same
    batches as a file (`validate`), and the report holds the three output tables.
    """
    labels = (list(labels) if labels is not None else list(cfg.labels)) if labelled else None
    engine = engine or EngineConfig()
    table = _Table.of_frame(frame, engine.batch_rows, where)
    outputs: dict[str, list[pd.DataFrame]] = {"validated": [], "quarantine": [], "findings": []}
    with tempfile.TemporaryDirectory(prefix="doclife-validate.") as spill:
        report = _validate_table(cfg, table, outputs["validated"].append, outputs["quarantine"].append,
                                 outputs["findings"].append, Path(spill), data_docs_dir, labels, reference, engine)
    empty = {"findings": pd.DataFrame(columns=list(FINDING_COLUMNS)).astype({"source_row": "Int64"})}
    report.validated, report.quarantine, report.findings = (
        pd.concat(parts, ignore_index=True) if parts else empty.get(name, pd.DataFrame())
        for name, parts in outputs.items())
    return report


def _schemas(cleaned: pq.ParquetFile) -> dict[str, pa.Schema]:
    """The Parquet schemas of validate's three outputs, from the cleaned table's column types."""
    types = dict(zip(cleaned.schema_arrow.names, cleaned.schema_arrow.types, strict=True))
    canonical = [pa.field(c, types[c]) for c in CANONICAL_COLUMNS]
    findings = pd.DataFrame({c: pd.Series(dtype="Int64" if c == "source_row" else object) for c in FINDING_COLUMNS})
    return {
        "validated": pa.schema(canonical),
        "quarantine": pa.schema([*canonical, pa.field("duplicate_of", types.get("duplicate_of", pa.string())),
                                 pa.field("reasons", pa.string())]),
        # From pandas, so source_row (null on table-rule rows) reads back as Int64.
        "findings": pa.Schema.from_pandas(findings.astype({c: "string" for c in FINDING_COLUMNS if c != "source_row"}),
                                          preserve_index=False),
    }


def validate(
    cfg: ValidateConfig,
    cleaned_path: Path,
    validated_path: Path,
    quarantine_path: Path,
    findings_path: Path,
    summary_path: Path,
    data_docs_dir: Path,
    reference_path: Path | None = None,
    engine: EngineConfig | None = None,
) -> dict:
    """Validate the cleaned table batch by batch; write validated rows, quarantined rows, findings, summary.json
    and Data Docs. Memory follows `engine.batch_rows` and a few bytes a row for the corpus-wide measures.

    `reference_path` is the previous snapshot's drift profile; a missing file means there is none yet.

    Returns the summary. When a fail-severity rule fails, every output is still written (so the reasons
    can be read) and then ValidationFailed is raised naming the input file and the failed rule(s).
    """
    cleaned_path = Path(cleaned_path)
    engine = (engine or EngineConfig()).sized_for(cleaned_path)
    table = _Table.of_file(cleaned_path, engine.batch_rows)
    schemas = _schemas(pq.ParquetFile(cleaned_path))
    labels = list(cfg.labels)
    Path(validated_path).parent.mkdir(parents=True, exist_ok=True)
    spill_prefix = f".{Path(validated_path).name}.spill."
    for stale in Path(validated_path).parent.glob(spill_prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a run that was killed: gigabytes at corpus scale
    with contextlib.ExitStack() as stack:
        docs_tmp = stack.enter_context(atomic_dir(data_docs_dir))
        spill = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=spill_prefix, dir=Path(validated_path).parent)))
        sinks = [stack.enter_context(parquet_writer(path, schemas[name])) for name, path in
                 (("validated", validated_path), ("quarantine", quarantine_path), ("findings", findings_path))]
        reference = read_profile(reference_path) if reference_path is not None else None
        report = _validate_table(cfg, table, *sinks, spill, docs_tmp, labels, reference, engine)

    summary = {
        "input": recorded_path(cleaned_path),
        **report.summary(),
        "outputs": {"validated": recorded_path(validated_path), "quarantine": recorded_path(quarantine_path),
                    "findings": recorded_path(findings_path)},
        "data_docs": recorded_path(Path(data_docs_dir) / "index.html"),
    }
    # Nothing may vanish between the input and the two output tables.
    assert summary["rows_in"] == table.rows == summary["validated"] + summary["quarantined"], summary
    write_json(summary_path, summary)
    if not report.success:
        raise ValidationFailed(f"{cleaned_path}: validation failed: {'; '.join(report.failures)}")
    return summary


def clean_and_validate(
    validate_cfg: ValidateConfig, clean_cfg: CleanConfig, frame: pd.DataFrame, data_docs_dir: Path | None = None,
    where: str = "<frame>", labels: list[str] | None = None, labelled: bool = True,
    reference: dict | None = None, engine: EngineConfig | None = None,
) -> tuple[ValidationReport, pd.DataFrame]:
    """Clean an ingested table and validate it: (the validation report, the cleaning report)."""
    cleaned, fixes = clean_frame(frame, clean_cfg, engine)
    report = validate_frame(validate_cfg, cleaned, data_docs_dir, where, labels, labelled, reference, engine)
    return report, fixes
