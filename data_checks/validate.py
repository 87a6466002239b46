"""Validate the ingested corpus with Great Expectations: quarantine bad rows, stop on an unfit corpus.

Every ingested row ends up in exactly one of two tables: validated (passed every row rule) or
quarantine (failed at least one, with the rule names in `reasons`). Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from data_checks import expectations as ex
from data_checks.config import SPLITS, ValidateConfig
from data_checks.ingest import CANONICAL_COLUMNS
from data_checks.io import DoclifeError, atomic_dir, write_json, write_parquet

gx = ex.gx  # imported there, after GX analytics were switched off

SITE_NAME = "doclife"
INDEX_COLUMN = "doc_id"


class ValidationFailed(DoclifeError):
    """A table-level rule failed: the corpus as a whole is unfit; all outputs were still written."""


@dataclass
class ValidationReport:
    """What one validation measured, before anything is written."""

    validated: pd.DataFrame
    """Rows that passed every row rule (canonical columns)."""
    quarantine: pd.DataFrame
    """Rows that failed at least one row rule (canonical columns plus `reasons`)."""
    row_rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per row rule: severity, description and how many rows failed it."""
    table_rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per table rule: severity, description, success, observed and expected values."""
    failures: list[str] = field(default_factory=list)
    """One line per failed table rule: its name, observed and expected values."""

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        """Counts and rule outcomes, as every report of a validation (summary.json, `doclife check`) shows them."""
        return {
            "rows_in": len(self.validated) + len(self.quarantine),
            "validated": len(self.validated),
            "quarantined": len(self.quarantine),
            "success": self.success,
            "failures": self.failures,
            "row_rules": self.row_rules,
            "table_rules": self.table_rules,
            "splits": {s: int((self.validated["split"] == s).sum()) for s in SPLITS},
            "labels": {str(k): int(v) for k, v in self.validated["label"].value_counts().sort_index().items()},
            "great_expectations_version": gx.__version__,
        }


def _quiet_gx() -> None:
    # GX logs configuration chatter at INFO/WARNING for every ephemeral context; users only need errors.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)


def _context(docs_dir: Path | None) -> Any:
    """An in-memory GX context whose only Data Docs site (if any) is `docs_dir`."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in list(context.get_config().data_docs_sites or {}):
        context.delete_data_docs_site(site)
    if docs_dir is not None:
        context.add_data_docs_site(
            SITE_NAME,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _run_checkpoint(
    context: Any, name: str, frame: pd.DataFrame, rules: list[ex.Rule], index_column: str, build_docs: bool
) -> dict[str, Any]:
    """Run `rules` as suite `name` on `frame` through a Checkpoint; return {rule name: GX result}."""
    source = context.data_sources.add_or_update_pandas("doclife")
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=[r.expectation for r in rules]))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    # The action renders this checkpoint's suite and results into the site and refreshes its index.
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])] if build_docs else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=actions,
            # COMPLETE with an index column: every failing row comes back identified by its doc_id.
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index_column]},
        )
    )
    with warnings.catch_warnings():
        # pandas warns that a regex has groups when GX matches with str.contains; the char_spam
        # back-reference needs its group, and only the match is used.
        warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    results: dict[str, Any] = {}
    for run in outcome.run_results.values():
        for result in run.results:
            rule = result.expectation_config.meta["rule"]
            info = result.exception_info or {}
            if info.get("raised_exception"):
                # A crashed expectation is a defect of the suite, not of the user's data.
                raise RuntimeError(f"expectation for rule {rule} crashed: {info.get('exception_message')}")
            results[rule] = result
    return results


def _failing_ids(result: Any, index_column: str) -> set[str]:
    if result.success:
        return set()
    return {str(item[index_column]) for item in result.result.get("unexpected_index_list") or []}


def _table_outcomes(
    cfg: ValidateConfig, rows_in: int, validated: pd.DataFrame, results: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Observed and expected values of each table rule, and a one-line message per failure."""
    min_rows = ex.min_validated_rows(cfg, rows_in)
    labels = sorted({str(v) for v in validated["label"].dropna()})
    missing = sorted(set(cfg.labels) - set(labels))
    splits = ex.split_count_frame(validated)
    per_split = dict(zip(splits["split"], (int(n) for n in splits["rows"]), strict=True))
    small = [s for s, n in per_split.items() if n < cfg.min_rows_per_split]
    rejected = (rows_in - len(validated)) / rows_in if rows_in else 0.0
    outcomes = {
        "rejected_fraction": {
            "observed": {"validated_rows": int(len(validated)), "rejected_fraction": round(rejected, 6)},
            "expected": {"min_validated_rows": min_rows, "max_rejected_fraction": cfg.max_rejected_fraction},
            "message": f"only {len(validated)} of {rows_in} rows passed the row rules "
            f"(rejected {rejected:.1%}, max_rejected_fraction {cfg.max_rejected_fraction:g}, "
            f"expected at least {min_rows} rows)",
        },
        "label_set": {
            "observed": labels,
            "expected": sorted(cfg.labels),
            "message": f"declared label(s) {', '.join(missing) or '-'} have no validated rows "
            f"(observed labels: {', '.join(labels) or 'none'}; expected: {', '.join(sorted(cfg.labels))})",
        },
        "split_min_rows": {
            "observed": per_split,
            "expected": {"min_rows_per_split": cfg.min_rows_per_split},
            "message": "split(s) "
            + ", ".join(f"{s} has {per_split[s]} rows" for s in small)
            + f" (expected at least {cfg.min_rows_per_split} per split)",
        },
    }
    table: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    rules = {r.name: r for r in ex.table_rules(cfg, rows_in) + ex.split_rules(cfg)}
    for name, rule in rules.items():
        ok = bool(results[name].success)
        outcome = outcomes[name]
        table[name] = {
            "severity": rule.severity,
            "description": rule.description,
            "success": ok,
            "observed": outcome["observed"],
            "expected": outcome["expected"],
        }
        if not ok:
            failures.append(f"{name}: {outcome['message']}")
    return table, failures


def _check_ingested(frame: pd.DataFrame, where: str) -> None:
    missing = [c for c in CANONICAL_COLUMNS if c not in frame.columns]
    if missing:
        raise DoclifeError(f"{where}: not an ingested table (missing columns: {', '.join(missing)})")
    if frame[INDEX_COLUMN].isna().any() or not frame[INDEX_COLUMN].is_unique:
        raise DoclifeError(f"{where}: doc_id must be present and unique in every row")
    bad_splits = set(frame["split"].dropna()) - set(SPLITS)
    if bad_splits or frame["split"].isna().any():
        raise DoclifeError(f"{where}: split must be one of {', '.join(SPLITS)} (found {sorted(map(str, bad_splits))})")


def validate_frame(
    cfg: ValidateConfig, frame: pd.DataFrame, data_docs_dir: Path | None = None, where: str = "<frame>"
) -> ValidationReport:
    """Run the row and table rules on an ingested table; build Data Docs into `data_docs_dir` when given.

    `where` names the table in error messages (normally the ingested file).
    """
    _check_ingested(frame, where)
    frame = frame.reset_index(drop=True)
    rows_in = len(frame)
    context = _context(data_docs_dir)
    docs = data_docs_dir is not None

    row_rules = ex.row_rules(cfg)
    row_results = _run_checkpoint(context, "rows", ex.add_derived_columns(frame), row_rules, INDEX_COLUMN, docs)
    ids = frame[INDEX_COLUMN].astype(str)
    failed = pd.DataFrame({r.name: ids.isin(_failing_ids(row_results[r.name], INDEX_COLUMN)) for r in row_rules})
    bad = failed.any(axis=1)
    # "; "-joined names in rule order: readable in any viewer and a plain string column in Parquet.
    reasons = failed.apply(lambda row: "; ".join(row.index[row]), axis=1) if rows_in else pd.Series(dtype=object)

    validated = frame.loc[~bad].reset_index(drop=True)
    quarantine = frame.loc[bad].assign(reasons=reasons[bad].astype(object)).reset_index(drop=True)

    table_results = _run_checkpoint(context, "table", validated, ex.table_rules(cfg, rows_in), INDEX_COLUMN, docs)
    split_results = _run_checkpoint(context, "splits", ex.split_count_frame(validated), ex.split_rules(cfg), "split", docs)
    table, failures = _table_outcomes(cfg, rows_in, validated, {**table_results, **split_results})
    row_summary = {
        r.name: {"severity": r.severity, "description": r.description, "failed_rows": int(failed[r.name].sum())}
        for r in row_rules
    }
    return ValidationReport(validated, quarantine, row_summary, table, failures)


def validate(
    cfg: ValidateConfig,
    ingested_path: Path,
    validated_path: Path,
    quarantine_path: Path,
    summary_path: Path,
    data_docs_dir: Path,
) -> dict:
    """Validate the ingested table and write validated rows, quarantined rows, summary.json and Data Docs.

    Returns the summary. When a table rule fails, every output is still written (so the reasons can be
    read) and then ValidationFailed is raised naming the ingested file and the failed rule(s).
    """
    ingested_path = Path(ingested_path)
    if not ingested_path.is_file():
        raise DoclifeError(f"{ingested_path}: file not found (run the ingest stage first)")
    try:
        frame = pd.read_parquet(ingested_path)
    except Exception as err:  # pyarrow raises many unrelated types for a damaged file
        raise DoclifeError(f"{ingested_path}: cannot read as Parquet: {' '.join(str(err).split())[:300]}") from None

    with atomic_dir(data_docs_dir) as docs_tmp:
        report = validate_frame(cfg, frame, docs_tmp, where=str(ingested_path))
    write_parquet(validated_path, report.validated)
    write_parquet(quarantine_path, report.quarantine)

    summary = {
        "ingested": str(ingested_path),
        **report.summary(),
        "outputs": {"validated": str(validated_path), "quarantine": str(quarantine_path)},
        "data_docs": str(Path(data_docs_dir) / "index.html"),
    }
    # Nothing may vanish between the input and the two output tables.
    assert summary["rows_in"] == len(frame), summary
    write_json(summary_path, summary)
    if not report.success:
        raise ValidationFailed(f"{ingested_path}: validation failed: {'; '.join(report.failures)}")
    return summary
