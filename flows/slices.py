"""Slices of the test split: by label, by script (language), by length bucket and by source.

A model that is better on average can still be worse for one kind of document; the gate compares
champion and challenger slice by slice on the same documents.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from data_checks.io import DoclifeError
from flows.policy import SlicePolicy
from flows.scoring import metric

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


def script_of(text: str) -> str:
    """han, latin, mixed or other: the writing system of a document's letters (a cheap language proxy)."""
    han, latin = len(_HAN.findall(text)), len(_LATIN.findall(text))
    if han + latin == 0:
        return "other"
    share = han / (han + latin)
    return "han" if share >= 0.8 else "latin" if share <= 0.2 else "mixed"


def length_bucket(text: str, edges: tuple[int, ...]) -> str:
    """The bucket of a document's character count: `<e0`, `e0-e1`, ..., `>=eN`."""
    n = len(text)
    if n < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges, edges[1:]):
        if n < high:
            return f"{low}-{high - 1}"
    return f">={edges[-1]}"


def slice_values(test: pd.DataFrame, dimension: str, cfg: SlicePolicy) -> pd.Series:
    """The slice each test document falls in along one dimension."""
    if dimension == "label":
        return test["label"].astype(str)
    if dimension == "script":
        return test["text"].map(script_of)
    if dimension == "length":
        return test["text"].map(lambda t: length_bucket(t, cfg.length_edges))
    if dimension == "source":
        if "source" not in test.columns:
            raise DoclifeError("snapshot: slicing by source needs a `source` column, and the test split has none")
        return test["source"].astype(str)
    raise DoclifeError(f"params.yaml: promote.slices: unknown dimension {dimension!r}")


def slice_table(test: pd.DataFrame, target: np.ndarray, challenger: np.ndarray, champion: np.ndarray | None,
                cfg: SlicePolicy) -> list[dict]:
    """One row per slice: dimension, value, size, and both models' `cfg.metric` on its documents.

    `test` holds the test documents (text, label, ...) in the order of `target` and the probability rows.
    A dimension that cannot be computed yields one row with `error` set, which fails the gate.
    """
    rows = []
    for dimension in cfg.dimensions:
        try:
            values = slice_values(test, dimension, cfg).to_numpy()
        except DoclifeError as exc:
            rows.append({"dimension": dimension, "value": None, "n": 0, "error": str(exc)})
            continue
        for value in sorted(set(values)):
            mask = values == value
            row = {"dimension": dimension, "value": str(value), "n": int(mask.sum()),
                   "challenger": metric(cfg.metric, target[mask], challenger[mask]),
                   "champion": None if champion is None else metric(cfg.metric, target[mask], champion[mask])}
            rows.append(row)
    return rows
