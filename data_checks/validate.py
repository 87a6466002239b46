"""Validate the cleaned corpus with Great Expectations: quarantine bad rows, warn, stop on an unfit corpus.

Every row rule (data_checks/rulebook.py) is measured per row and checked by one GX expectation on its
measure column. Every input row ends up in exactly one of two tables: validated (no quarantine- or
fail-severity rule broken) or quarantine (with the broken rules' names in `reasons`). Warnings and
quarantines alike are listed in the findings table, one row per (row, rule), with a detail.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_checks import expectations as ex
from data_checks.clean import CleanConfig, clean_frame
from data_checks.config import SPLITS, ValidateConfig
from data_checks.core_rules import core_rules, fill_nan_float32, measure_core
from data_checks.drift import check_drift
from data_checks.drift_profile import read_profile
from data_checks.duplicates import duplicate_rules, find_duplicates
from data_checks.label_noise import find_label_issues, label_noise_rules
from data_checks.text_quality import measure_text, text_rules
from data_checks.ingest import CANONICAL_COLUMNS
from data_checks.io import DoclifeError, atomic_dir, read_stage_input, recorded_path, write_json, write_parquet
from data_checks.rulebook import FAIL, OFF, QUARANTINE, WARN, RowRule

gx = ex.gx  # imported there, after GX analytics were switched off

SITE_NAME = "doclife"
INDEX_COLUMN = "doc_id"
FINDING_COLUMNS = ("doc_id", "source_row", "rule", "severity", "action", "detail")
# Rows a rule module's measures can point at (a kept copy, a leaked twin): shown in the finding's detail.
_DROP_RULES = {"duplicate_exact"}


class ValidationFailed(DoclifeError):
    """A fail-severity rule failed: the corpus as a whole is unfit; all outputs were still written."""


@dataclass
class ValidationReport:
    """What one validation measured, before anything is written."""

    validated: pd.DataFrame
    """Rows that broke no quarantine- or fail-severity rule (canonical columns)."""
    quarantine: pd.DataFrame
    """Rows that broke at least one (canonical columns plus `reasons` and `duplicate_of`)."""
    findings: pd.DataFrame
    """One row per (row, rule it broke) for every severity, plus one per failed table rule: FINDING_COLUMNS."""
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
            "rows_in": len(self.validated) + len(self.quarantine),
            "validated": len(self.validated),
            "quarantined": len(self.quarantine),
            "warnings": int((self.findings["action"] == "warn").sum()),
            "success": self.success,
            "failures": self.failures,
            "row_rules": self.row_rules,
            "table_rules": self.table_rules,
            "splits": {s: int((self.validated["split"] == s).sum()) for s in SPLITS},
            "labels": {str(k): int(v) for k, v in self.validated["label"].value_counts().sort_index().items()},
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


# Columns of the corpus-wide measures that point at other rows or explain a finding, not bounded by a rule.
POINTER_COLUMNS = ("near_duplicate_of", "near_duplicate_similarity", "leak_of", "labels_per_text", "labels_per_cluster",
                   "suggested_label", "label_confidence")


def measure_rows(frame: pd.DataFrame, cfg: ValidateConfig, labels: list[str] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every rule's measure column for every row, the pointer columns that explain findings).

    Per-row measures are computed `chunk_rows` rows at a time; the corpus-wide ones (duplicates, label
    noise) keep only a few numbers per row across chunks.
    """
    def measure_chunk(chunk: pd.DataFrame) -> pd.DataFrame:
        core = fill_nan_float32(measure_core(chunk, labels))
        noise = measure_text(chunk["text"], cfg.text_quality)
        # An empty text is text_blank's (or text_invisible_only's) finding alone, not also every noise rule's.
        noise.loc[(core["text_blank"] == 1).to_numpy() | (core["text_invisible_only"] == 1).to_numpy(), :] = np.nan
        return pd.concat([core, noise], axis=1)

    parts = [measure_chunk(frame.iloc[start : start + cfg.chunk_rows]) for start in range(0, len(frame), cfg.chunk_rows)]
    per_row = pd.concat(parts) if parts else measure_chunk(frame)
    duplicates = find_duplicates(frame, cfg.duplicates)
    flags = ["near_duplicate", "split_leakage", "conflicting_label", "near_duplicate_conflicting_label"]
    # An unlabelled corpus has only null labels: the label-noise check then returns NA for every row.
    labels_noise = find_label_issues(frame if labels is not None else frame.assign(label=None), cfg.label_noise)
    measures = pd.concat([per_row, fill_nan_float32(duplicates[flags]), fill_nan_float32(labels_noise[["label_issue"]])], axis=1)
    pointers = pd.concat([duplicates, labels_noise], axis=1)
    return measures, pointers[list(POINTER_COLUMNS)]


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


def run_checkpoint(
    context: Any, name: str, frame: pd.DataFrame, expectations: list[Any], build_docs: bool,
    result_format: dict[str, Any] | str = "SUMMARY",
) -> dict[str, Any]:
    """Run `expectations` as suite `name` on `frame` through a Checkpoint; return {rule name: GX result}."""
    source = context.data_sources.add_or_update_pandas("doclife")
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    # The action renders this checkpoint's suite and results into the site and refreshes its index.
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])] if build_docs else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=name, validation_definitions=[definition], actions=actions, result_format=result_format)
    )
    with warnings.catch_warnings():
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


def _table_outcomes(
    cfg: ValidateConfig, rows_in: int, validated: pd.DataFrame, labels: list[str] | None, results: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Observed and expected values of each table rule, and a one-line message per failure."""
    min_rows = ex.min_validated_rows(cfg, rows_in)
    found = sorted({str(v) for v in validated["label"].dropna()})
    missing = sorted(set(labels or []) - set(found))
    per_split = {s: int((validated["split"] == s).sum()) for s in SPLITS}
    small = [s for s, n in per_split.items() if n < cfg.min_rows_per_split]
    shares = {name: round(float((validated["label"] == name).mean()) if len(validated) else 0.0, 6) for name in labels or []}
    unbalanced = {k: v for k, v in shares.items() if not cfg.min_label_share <= v <= cfg.max_label_share}
    rejected = (rows_in - len(validated)) / rows_in if rows_in else 0.0
    outcomes = {
        "rejected_fraction": (
            {"validated_rows": int(len(validated)), "rejected_fraction": round(rejected, 6)},
            {"min_validated_rows": min_rows, "max_rejected_fraction": cfg.max_rejected_fraction},
            f"only {len(validated)} of {rows_in} rows passed the row rules (rejected {rejected:.1%}, "
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


def _check_ingested(frame: pd.DataFrame, where: str) -> None:
    missing = [c for c in CANONICAL_COLUMNS if c not in frame.columns]
    if missing:
        raise DoclifeError(f"{where}: not an ingested table (missing columns: {', '.join(missing)})")
    if frame[INDEX_COLUMN].isna().any() or not frame[INDEX_COLUMN].is_unique:
        raise DoclifeError(f"{where}: doc_id must be present and unique in every row")
    bad_splits = set(frame["split"].dropna()) - set(SPLITS)
    if bad_splits or frame["split"].isna().any():
        raise DoclifeError(f"{where}: split must be one of {', '.join(SPLITS)} (found {sorted(map(str, bad_splits))})")


def _action(rule: RowRule) -> str:
    if rule.severity == WARN:
        return "warn"
    return "drop" if rule.name in _DROP_RULES else "quarantine"


def _details(rule: RowRule, rows: pd.Index, frame: pd.DataFrame, measures: pd.DataFrame,
             pointers: pd.DataFrame) -> list[str]:
    """One detail per violating row: the observed value against the bound, or what the row points at."""
    source_row = frame["source_row"].to_numpy()
    if rule.name == "duplicate_exact":
        kept = frame.set_index("doc_id")["source_row"]
        return [f"exact duplicate of doc {d} (source row {int(kept[d])}), dropped keep-first"
                for d in frame.loc[rows, "duplicate_of"]]
    if rule.name == "near_duplicate":
        return [f"near duplicate of source row {source_row[int(p)]} (estimated Jaccard {s:.2f})"
                for p, s in zip(pointers.loc[rows, "near_duplicate_of"], pointers.loc[rows, "near_duplicate_similarity"])]
    if rule.name == "split_leakage":
        return [f"{frame.at[r, 'split']} copy of source row {source_row[int(p)]} in split {frame.at[int(p), 'split']}"
                for r, p in zip(rows, pointers.loc[rows, "leak_of"])]
    if rule.name == "label_noise":
        return [f"label {frame.at[r, 'label']!r} looks wrong: suggested {s!r} (out-of-fold p(given label) = {p:.2f})"
                for r, s, p in zip(rows, pointers.loc[rows, "suggested_label"], pointers.loc[rows, "label_confidence"])]
    if rule.name in ("duplicate_conflicting_label", "near_duplicate_conflicting_label"):
        column = "labels_per_text" if rule.name == "duplicate_conflicting_label" else "labels_per_cluster"
        return [f"label {frame.at[r, 'label']!r}; copies carry {int(n)} different labels"
                for r, n in zip(rows, pointers.loc[rows, column])]
    bound = " and ".join(
        f"{op} {v:g}" for op, v in ((">=", rule.min_value), ("<=", rule.max_value)) if v is not None
    )
    values = measures.loc[rows, rule.column].to_numpy()
    return [f"{rule.name}: {rule.column} = {v:g}, expected {bound}" for v in values]


def validate_frame(
    cfg: ValidateConfig, frame: pd.DataFrame, data_docs_dir: Path | None = None, where: str = "<frame>",
    labels: list[str] | None = None, labelled: bool = True, reference: dict | None = None,
) -> ValidationReport:
    """Run the row and table rules on an ingested (optionally cleaned) table; Data Docs into `data_docs_dir`.

    `labels` is the declared label set (default: validate.labels); `labelled=False` checks an unlabelled
    corpus, where the label rules do not apply. `reference` is the previous snapshot's drift profile
    (None: no previous snapshot). `where` names the table in error messages.
    """
    _check_ingested(frame, where)
    # Object columns: GX then checks the type of every value (pandas' string dtype would hide a non-string).
    frame = frame.reset_index(drop=True).astype({"text": object, "label": object})
    if "duplicate_of" not in frame:
        frame = frame.assign(duplicate_of=None)
    labels = (list(labels) if labels is not None else list(cfg.labels)) if labelled else None
    rows_in = len(frame)
    context = _context(data_docs_dir)
    docs = data_docs_dir is not None

    rules = [r for r in rule_catalogue(cfg) if r.severity != OFF]
    measures, pointers = measure_rows(frame, cfg, labels)
    results = run_checkpoint(context, "rows", measures.assign(doc_id=frame[INDEX_COLUMN].to_numpy()),
                              [ex.row_expectation(r) for r in rules], docs)
    broken = pd.DataFrame({r.name: r.violations(measures) for r in rules}, index=frame.index)
    for rule in rules:
        # GX and the mask apply the same bounds to the same column; a mismatch would be a defect here.
        gx_count = int(results[rule.name].result.get("unexpected_count") or 0)
        assert gx_count == int(broken[rule.name].sum()), (rule.name, gx_count, int(broken[rule.name].sum()))

    setting_aside = [r.name for r in rules if r.severity in (QUARANTINE, FAIL)]
    bad = broken[setting_aside].any(axis=1) if setting_aside else pd.Series(False, index=frame.index)
    names = np.array(setting_aside, dtype=object)
    flags = broken[setting_aside].to_numpy()
    reasons = pd.Series(["; ".join(names[row]) for row in flags], index=frame.index, dtype=object)

    finding_parts = []
    for rule in rules:
        rows = broken.index[broken[rule.name].to_numpy()]
        if len(rows):
            finding_parts.append(pd.DataFrame({
                "doc_id": frame.loc[rows, "doc_id"].to_numpy(), "source_row": frame.loc[rows, "source_row"].to_numpy(),
                "rule": rule.name, "severity": rule.severity, "action": _action(rule),
                "detail": _details(rule, rows, frame, measures, pointers),
            }))

    canonical = list(CANONICAL_COLUMNS)
    validated = frame.loc[~bad, canonical].reset_index(drop=True)
    quarantine = frame.loc[bad, [*canonical, "duplicate_of"]].assign(reasons=reasons[bad]).reset_index(drop=True)

    labelled = labels is not None
    table_results = run_checkpoint(context, "table", validated,
                                    [r.expectation for r in ex.table_rules(cfg, rows_in, labelled)], docs)
    count_results = run_checkpoint(context, "counts", ex.count_frame(validated, labels),
                                    [r.expectation for r in ex.count_rules(cfg, labelled)], docs)
    table, failures = _table_outcomes(cfg, rows_in, validated, labels, {**table_results, **count_results})
    for rule in rules:
        count = int(broken[rule.name].sum())
        if rule.severity == FAIL and count:
            failures.append(f"{rule.name}: {count} row(s) break it ({rule.text}), e.g. source row "
                            f"{int(frame.loc[broken[rule.name], 'source_row'].iloc[0])}")
    drift = check_drift(validated, reference, cfg.drift, context, data_docs_dir)
    failures += [f"drift: {f}" for f in drift["failures"]] if not drift["success"] else []
    failed_tables = pd.DataFrame([
        {"doc_id": None, "source_row": pd.NA, "rule": name, "severity": t["severity"], "action": "warn",
         "detail": f"{t['description']} (observed {t['observed']})"}
        for name, t in table.items() if not t["success"]
    ], columns=list(FINDING_COLUMNS))
    findings = pd.concat([*finding_parts, failed_tables], ignore_index=True) if finding_parts else failed_tables
    findings = findings.astype({"source_row": "Int64"}).sort_values(
        ["source_row", "rule"], na_position="last", kind="stable").reset_index(drop=True)

    row_summary = {
        r.name: {"family": r.family, "severity": r.severity, "description": r.text, "column": r.column,
                 "min_value": r.min_value, "max_value": r.max_value, "failed_rows": int(broken[r.name].sum())}
        for r in rules
    }
    return ValidationReport(validated, quarantine, findings, row_summary, table, failures, drift)


def validate(
    cfg: ValidateConfig,
    cleaned_path: Path,
    validated_path: Path,
    quarantine_path: Path,
    findings_path: Path,
    summary_path: Path,
    data_docs_dir: Path,
    reference_path: Path | None = None,
) -> dict:
    """Validate the cleaned table; write validated rows, quarantined rows, findings, summary.json and Data Docs.

    `reference_path` is the previous snapshot's drift profile; a missing file means there is none yet.

    Returns the summary. When a fail-severity rule fails, every output is still written (so the reasons
    can be read) and then ValidationFailed is raised naming the input file and the failed rule(s).
    """
    cleaned_path = Path(cleaned_path)
    frame = read_stage_input(cleaned_path, "clean")

    with atomic_dir(data_docs_dir) as docs_tmp:
        reference = read_profile(reference_path) if reference_path is not None else None
        report = validate_frame(cfg, frame, docs_tmp, where=str(cleaned_path), reference=reference)
    write_parquet(validated_path, report.validated)
    write_parquet(quarantine_path, report.quarantine)
    write_parquet(findings_path, report.findings)

    summary = {
        "input": recorded_path(cleaned_path),
        **report.summary(),
        "outputs": {"validated": recorded_path(validated_path), "quarantine": recorded_path(quarantine_path),
                    "findings": recorded_path(findings_path)},
        "data_docs": recorded_path(Path(data_docs_dir) / "index.html"),
    }
    # Nothing may vanish between the input and the two output tables.
    assert summary["rows_in"] == len(frame), summary
    write_json(summary_path, summary)
    if not report.success:
        raise ValidationFailed(f"{cleaned_path}: validation failed: {'; '.join(report.failures)}")
    return summary


def clean_and_validate(
    validate_cfg: ValidateConfig, clean_cfg: CleanConfig, frame: pd.DataFrame, data_docs_dir: Path | None = None,
    where: str = "<frame>", labels: list[str] | None = None, labelled: bool = True,
    reference: dict | None = None,
) -> tuple[ValidationReport, pd.DataFrame]:
    """Clean an ingested table and validate it: (the validation report, the cleaning report)."""
    cleaned, fixes = clean_frame(frame, clean_cfg)
    report = validate_frame(validate_cfg, cleaned, data_docs_dir, where, labels, labelled, reference)
    return report, fixes
