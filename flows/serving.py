"""Serving: batch prediction from a registered model, and the load-and-predict check run before promotion.

The check starts a fresh Python process (`python -m flows.serving`) that loads the exported model the way
a server would, from its directory alone, and predicts sample documents one at a time. A model that does
not load, crashes, disagrees with its own evaluation or is too slow is never promoted (TFX InfraValidator).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.io import DoclifeError, write_json, write_parquet
from flows.policy import ServingPolicy

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".jsonl": lambda p: pd.read_json(p, lines=True),
           ".tsv": lambda p: pd.read_csv(p, sep="\t")}


@dataclass(frozen=True)
class ServingResult:
    """What the fresh process measured."""

    loaded: bool
    """The model loaded and predicted every sample document."""
    error: str | None
    """One line: why it did not (None when it did)."""
    load_seconds: float | None
    """Time to load the tokenizer and model in the fresh process."""
    p95_latency_ms: float | None
    """95th percentile of the per-document prediction time, one document per call."""
    agreement: float | None
    """Share of sample documents predicted with the same label as in the evaluate stage."""
    n: int
    """Sample documents predicted."""

    def __post_init__(self) -> None:
        if self.loaded == (self.error is not None):
            raise ValueError("a serving result has an error exactly when the model did not load")


def _read_table(path: Path) -> pd.DataFrame:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DoclifeError(f"{path}: unsupported input format (use .csv, .tsv, .jsonl or .parquet)")
    if not path.is_file():
        raise DoclifeError(f"{path}: no such file")
    try:
        frame = reader(path)
    except Exception as exc:  # pandas and pyarrow raise many unrelated types for a damaged file
        raise DoclifeError(f"{path}: cannot read ({' '.join(str(exc).split())[:200]})") from None
    if "text" not in frame.columns:
        raise DoclifeError(f"{path}: no `text` column (columns: {', '.join(map(str, frame.columns))})")
    return frame


def predict_file(model_dir: Path, input_path: Path, output_path: Path, batch_size: int) -> dict:
    """Predict every row's `text` of a CSV/TSV/JSONL/Parquet file; write predicted + prob_<label> columns."""
    from lightning_modules.evaluate import predict_proba

    frame = _read_table(Path(input_path))
    probs, labels = predict_proba(Path(model_dir), frame["text"].fillna("").astype(str).tolist(), batch_size)
    out = frame.copy()
    out["predicted"] = [labels[i] for i in probs.argmax(axis=1)] if len(frame) else []
    for i, label in enumerate(labels):
        out[f"prob_{label}"] = probs[:, i]
    output_path = Path(output_path)
    if output_path.suffix.lower() == ".parquet":
        write_parquet(output_path, out)
    elif output_path.suffix.lower() in (".jsonl", ".csv"):
        from data_checks.io import atomic_path

        with atomic_path(output_path) as tmp:
            if output_path.suffix.lower() == ".csv":
                out.to_csv(tmp, index=False)
            else:
                out.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        raise DoclifeError(f"{output_path}: unsupported output format (use .csv, .jsonl or .parquet)")
    return {"rows": len(out), "output": str(output_path), "labels": labels}


def check_serving(model_dir: Path, texts: list[str], expected: list[str], cfg: ServingPolicy) -> ServingResult:
    """Load `model_dir` in a fresh process, predict `texts` one by one, compare with `expected` labels."""
    with tempfile.TemporaryDirectory(prefix="doclife-serving-") as tmp:
        sample, report = Path(tmp) / "sample.json", Path(tmp) / "report.json"
        sample.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        try:
            done = subprocess.run([sys.executable, "-m", "flows.serving", str(model_dir), str(sample), str(report)],
                                  capture_output=True, text=True, timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            return ServingResult(False, f"no answer within {cfg.timeout_s:g} s", None, None, None, 0)
        if done.returncode != 0 or not report.is_file():
            last = (done.stderr.strip().splitlines() or ["exited with code %d" % done.returncode])[-1]
            return ServingResult(False, f"fresh process failed: {last[:300]}", None, None, None, 0)
        measured = json.loads(report.read_text(encoding="utf-8"))
    predicted = measured["predicted"]
    agreement = float(np.mean([p == e for p, e in zip(predicted, expected)])) if expected else 1.0
    return ServingResult(True, None, round(measured["load_seconds"], 3),
                         round(float(np.percentile(measured["latencies_ms"], 95)), 3) if predicted else 0.0,
                         round(agreement, 6), len(predicted))


def _serve_sample(model_dir: Path, sample: Path, report: Path) -> None:
    """The fresh process: load once, then predict one document per call as a server would."""
    started = time.perf_counter()
    import torch

    from lightning_modules.evaluate import load_exported

    tokenizer, model, labels, max_length = load_exported(model_dir)
    load_seconds = time.perf_counter() - started
    texts = json.loads(sample.read_text(encoding="utf-8"))
    latencies, predicted = [], []
    with torch.inference_mode():
        for text in texts:
            t0 = time.perf_counter()
            batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            predicted.append(labels[int(logits.argmax(dim=-1)[0])])
            latencies.append((time.perf_counter() - t0) * 1000)
    write_json(report, {"load_seconds": load_seconds, "latencies_ms": latencies, "predicted": predicted})


if __name__ == "__main__":
    _serve_sample(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
