"""`doclife check`: the whole cleaning and validation on any corpus (a file, a directory, a glob), outside the pipeline.

Writes `DIR/report.parquet` (one row per finding: source_row, rule, severity, action, detail),
`DIR/summary.json` (with the source's files and the source_row each starts at) and the Great Expectations
Data Docs in `DIR/data_docs/`. The source is only read.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from data_checks.clean import CleanConfig
from data_checks.config import EngineConfig, IngestConfig, ValidateConfig
from data_checks.ingest import read_files
from data_checks.drift_profile import read_profile
from data_checks.io import DoclifeError, atomic_dir, write_json, write_parquet
from data_checks.snapshot import PROFILE_FILE
from data_checks.validate import clean_and_validate

REPORT_COLUMNS = ("source_row", "rule", "severity", "action", "detail")


def report_table(findings: pd.DataFrame, fixes: pd.DataFrame) -> pd.DataFrame:
    """Validation findings and cleaning fixes as one table in source-row order; table rules come last."""
    repairs = fixes[fixes["fix"] != "duplicate_exact"]  # a drop: validation reports it, with the kept row
    repairs = pd.DataFrame({"source_row": repairs["source_row"], "rule": repairs["fix"], "severity": "warn",
                            "action": "fix", "detail": repairs["detail"]})
    table = pd.concat([findings.loc[:, list(REPORT_COLUMNS)], repairs], ignore_index=True)
    table = table.astype({"source_row": "Int64"})
    return table.sort_values(["source_row", "action", "rule"], na_position="last", kind="stable").reset_index(drop=True)


def _reference(path: Path | None) -> dict | None:
    if path is None:
        return None
    path = Path(path)
    profile_path = path / PROFILE_FILE if path.is_dir() else path
    reference = read_profile(profile_path)
    if reference is None:
        raise DoclifeError(f"{profile_path}: no drift profile (pass a snapshot directory or its {PROFILE_FILE})")
    return reference


def check(source: Path, ingest_cfg: IngestConfig, validate_cfg: ValidateConfig, out_dir: Path,
          labels: list[str] | None = None, clean_cfg: CleanConfig | None = None, reference: Path | None = None,
          engine: EngineConfig | None = None) -> dict[str, Any]:
    """Clean and validate `source`; write the findings, the summary and Data Docs under `out_dir`; return the summary.

    Without `ingest_cfg.label_column` the corpus is unlabelled and the label rules do not apply. `labels` is
    the declared label set; None declares the labels found in the file (so no label is unknown).
    `reference` is a snapshot directory or a drift profile file to measure drift against. `engine` says where
    the per-batch work runs (data_checks/engines.py).
    """
    source, out_dir = Path(source), Path(out_dir)
    frame, files = read_files(ingest_cfg, source)
    labelled = bool(ingest_cfg.label_column)
    if labelled:
        labels = labels or sorted(frame["label"].dropna().astype(str).str.strip().loc[lambda s: s != ""].unique())
        if not labels:
            raise DoclifeError(f"{source}: column {ingest_cfg.label_column!r} holds no labels")
        validate_cfg = replace(validate_cfg, labels=list(labels))
    with atomic_dir(out_dir / "data_docs") as docs:
        report, fixes = clean_and_validate(validate_cfg, clean_cfg or CleanConfig(), frame, docs, where=str(source),
                                           labels=labels, labelled=labelled,
                                           reference=_reference(reference), engine=engine)
    table = report_table(report.findings, fixes)
    write_parquet(out_dir / "report.parquet", table)
    summary = {"source": str(source), **report.summary(), "findings": len(table),
               "findings_by_rule": {str(k): int(v) for k, v in table["rule"].value_counts().items()},
               "report": str(out_dir / "report.parquet"), "data_docs": str(out_dir / "data_docs" / "index.html"),
               "files": files}
    write_json(out_dir / "summary.json", summary)
    return summary
