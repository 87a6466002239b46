"""`doclife check`: the whole validation on any corpus file, outside the pipeline, as a table of findings.

Writes `DIR/report.parquet` (one row per finding: source_row, rule, severity, action, detail),
`DIR/summary.json` and the Great Expectations Data Docs in `DIR/data_docs/`. The source is only read.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from data_checks.config import IngestConfig, ValidateConfig
from data_checks.ingest import read_source
from data_checks.io import DoclifeError, atomic_dir, write_json, write_parquet
from data_checks.validate import ValidationReport, validate_frame

FINDING_COLUMNS = ("source_row", "rule", "severity", "action", "detail")


def findings(report: ValidationReport) -> pd.DataFrame:
    """One row per (quarantined row, rule it broke), then one per failed table rule (no source row)."""
    per_row = report.quarantine[["source_row", "reasons"]].assign(rule=lambda f: f["reasons"].str.split("; "))
    per_row = per_row.explode("rule")
    rules = report.row_rules
    per_row = pd.DataFrame({
        "source_row": per_row["source_row"].astype("Int64"),
        "rule": per_row["rule"],
        "severity": per_row["rule"].map(lambda r: rules[r]["severity"]),
        "action": "quarantine",
        "detail": per_row["rule"].map(lambda r: rules[r]["description"]),
    })
    failed_tables = pd.DataFrame([
        {"source_row": pd.NA, "rule": name, "severity": rule["severity"], "action": "warn",
         "detail": f"{rule['description']} (observed {rule.get('observed')})"}
        for name, rule in report.table_rules.items() if not rule["success"]
    ], columns=list(FINDING_COLUMNS))
    table = pd.concat([per_row, failed_tables.astype({"source_row": "Int64"})], ignore_index=True)
    return table.sort_values(["source_row", "rule"], na_position="last", kind="stable").reset_index(drop=True)


def check(source: Path, ingest_cfg: IngestConfig, validate_cfg: ValidateConfig, out_dir: Path,
          labels: list[str] | None = None) -> dict[str, Any]:
    """Validate `source` and write the findings, the summary and Data Docs under `out_dir`; return the summary.

    `labels` is the declared label set; None declares the labels found in the file (so no label is unknown).
    """
    source, out_dir = Path(source), Path(out_dir)
    frame = read_source(ingest_cfg, source)
    declared = labels or sorted(frame["label"].dropna().astype(str).str.strip().loc[lambda s: s != ""].unique())
    if not declared:
        raise DoclifeError(f"{source}: column {ingest_cfg.label_column!r} holds no labels")
    validate_cfg = replace(validate_cfg, labels=list(declared))
    with atomic_dir(out_dir / "data_docs") as docs:
        report = validate_frame(validate_cfg, frame, docs, where=str(source))
    table = findings(report)
    write_parquet(out_dir / "report.parquet", table)
    summary = {"source": str(source), **report.summary(), "findings": len(table),
               "report": str(out_dir / "report.parquet"), "data_docs": str(out_dir / "data_docs" / "index.html")}
    write_json(out_dir / "summary.json", summary)
    return summary
