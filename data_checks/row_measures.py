"""Every per-row measure of a batch: what validation's first pass computes, wherever the engine runs it.

Kept apart from data_checks/validate.py, which imports Great Expectations: a Ray worker that runs these
functions imports only this and the measure modules (about 0.6 s and 140 MB, against 4 s and 270 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_checks.config import ValidateConfig
from data_checks.core_rules import fill_nan_float32, measure_core
from data_checks.duplicates import TextSketch, sketch_texts
from data_checks.text_quality import measure_text


def measure_batch(batch: pd.DataFrame, cfg: ValidateConfig, labels: list[str] | None) -> pd.DataFrame:
    """Every per-row rule's measure column (core and noise, float32) for one batch, `chunk_rows` rows at a time."""
    def measure_chunk(chunk: pd.DataFrame) -> pd.DataFrame:
        core = fill_nan_float32(measure_core(chunk, labels))
        noise = measure_text(chunk["text"], cfg.text_quality)
        # An empty text is text_blank's (or text_invisible_only's) finding alone, not also every noise rule's.
        noise.loc[(core["text_blank"] == 1).to_numpy() | (core["text_invisible_only"] == 1).to_numpy(), :] = np.nan
        return pd.concat([core, noise], axis=1)

    parts = [measure_chunk(batch.iloc[lo : lo + cfg.chunk_rows]) for lo in range(0, len(batch), cfg.chunk_rows)]
    return pd.concat(parts) if parts else measure_chunk(batch)


def as_validated(batch: pd.DataFrame) -> pd.DataFrame:
    """A batch as validation reads it: object text and labels (GX then checks the type of every value; pandas'
    string dtype would hide a non-string) and a duplicate_of column even when there was none."""
    batch = batch.astype({"text": object, "label": object})
    return batch if "duplicate_of" in batch else batch.assign(duplicate_of=None)


@dataclass
class Measured:
    """What the first pass takes from a batch; computed wherever the engine runs the batch."""

    rows: pd.DataFrame
    """The batch without its text."""
    has_text: np.ndarray
    measures: pd.DataFrame
    """measure_batch's columns."""
    sketch: TextSketch


def measure_and_sketch(batch: pd.DataFrame, cfg: ValidateConfig, labels: list[str] | None) -> Measured:
    batch = as_validated(batch)
    return Measured(batch.drop(columns="text"), batch["text"].notna().to_numpy(), measure_batch(batch, cfg, labels),
                    sketch_texts(batch["text"], cfg.duplicates))
