"""Where every stage reads and writes, relative to the workspace root.

`dvc.yaml` declares the same paths as its deps and outs; `tests/test_dvc_yaml.py` keeps the two in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path
    """The workspace: the directory holding dvc.yaml and params.yaml."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def name(self) -> str:
        """The workspace's name where several share one place (a Prefect server's deployments, run names and
        artifact keys): its directory's name, in the lowercase letters, digits and dashes Prefect keys allow."""
        return re.sub(r"[^a-z0-9]+", "-", self.root.name.lower()).strip("-") or "workspace"

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def sample_corpus(self) -> Path:
        return self.root / "data/raw/sample.csv"

    # ingest, clean, validate
    @property
    def ingested(self) -> Path:
        return self.root / "data/ingested.parquet"

    @property
    def cleaned(self) -> Path:
        return self.root / "data/cleaned.parquet"

    @property
    def clean_report(self) -> Path:
        return self.root / "reports/clean/report.parquet"

    @property
    def clean_summary(self) -> Path:
        return self.root / "reports/clean/summary.json"

    @property
    def findings(self) -> Path:
        return self.root / "reports/validate/findings.parquet"

    @property
    def validated(self) -> Path:
        return self.root / "data/validated.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "data/quarantine.parquet"

    @property
    def validation_summary(self) -> Path:
        return self.root / "reports/validate/summary.json"

    @property
    def data_docs(self) -> Path:
        return self.root / "reports/validate/data_docs"

    # snapshot
    @property
    def snapshot(self) -> Path:
        return self.root / "data/snapshot"

    # tokenizer and training
    @property
    def tokenizer(self) -> Path:
        return self.root / "models/tokenizer"

    def model(self, stage: str) -> Path:
        """The exported Hugging Face model of `pretrain` or `finetune`."""
        return self.root / f"models/{stage}/model"

    def checkpoints(self, stage: str) -> Path:
        return self.root / f"models/{stage}/checkpoints"

    def metrics(self, stage: str) -> Path:
        return self.root / f"reports/{stage}/metrics.json"

    def curve(self, stage: str) -> Path:
        return self.root / f"reports/{stage}/curve.csv"

    # evaluate
    @property
    def predictions(self) -> Path:
        return self.root / "reports/evaluate/predictions.parquet"

    @property
    def confusion_csv(self) -> Path:
        return self.root / "reports/evaluate/confusion.csv"

    @property
    def confusion_png(self) -> Path:
        return self.root / "reports/evaluate/confusion_matrix.png"

    # promote
    @property
    def verdict(self) -> Path:
        return self.root / "reports/promote/verdict.json"

    @property
    def model_card(self) -> Path:
        return self.root / "reports/promote/model_card.md"

    def registry(self, relative: str) -> Path:
        return self.root / relative
