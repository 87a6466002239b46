"""Serving: batch prediction from a registered model, and the load-and-predict check run before promotion.

The check starts a fresh Python process (`python -m flows.serving`) that loads the exported model the way
a server would, from its directory alone, and predicts sample documents one at a time. A model that does
not load, crashes, disagrees with its own evaluation or is too slow is never promoted (TFX InfraValidator).
"""

from __future__ import annotations

import codecs
import io
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.io import DoclifeError, atomic_path, write_json, write_parquet
from flows.policy import ServingPolicy

INPUT_FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")
OUTPUT_FORMATS = (".csv", ".jsonl", ".parquet")
TEXT_FORMATS = (".csv", ".tsv", ".jsonl")
"""The input formats that are text, read with `--encoding`; Parquet stores its strings as UTF-8."""
DEFAULT_ENCODING = "utf-8"


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


def check_predict_args(input_path: Path, output_path: Path, encoding: str | None = None) -> str:
    """The checks `predict_file` can make before it loads anything: formats, the input's existence and the
    encoding's name. Returns the encoding to read the input with; raises DoclifeError naming the problem."""
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.suffix.lower() not in INPUT_FORMATS:
        raise DoclifeError(f"{input_path}: unsupported input format (use {_listed(INPUT_FORMATS)})")
    if not input_path.is_file():
        raise DoclifeError(f"{input_path}: no such file")
    if output_path.suffix.lower() not in OUTPUT_FORMATS:
        raise DoclifeError(f"{output_path}: unsupported output format (use {_listed(OUTPUT_FORMATS)})")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise DoclifeError(f"{output_path}: is the input file; predictions never overwrite their input")
    if encoding is not None and input_path.suffix.lower() not in TEXT_FORMATS:
        raise DoclifeError(f"{input_path}: --encoding applies to CSV, TSV and JSONL; Parquet text is always UTF-8")
    encoding = encoding or DEFAULT_ENCODING
    try:
        # Raises LookupError for unknown names and for bytes-to-bytes codecs (base64, zlib) alike.
        io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    except LookupError:
        raise DoclifeError(f"--encoding {encoding}: not a text encoding Python knows") from None
    return encoding


def _listed(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffixes[:-1]) + " or " + suffixes[-1]


def _check_decodes(path: Path, encoding: str) -> None:
    """Fail in one line, naming the byte and its line and column, if `path` is not text in `encoding`.

    pandas would report the failure as a position in one of its read buffers, or not at all (its Python
    engine can replace bad bytes); decoding the whole file first gives a position a person can open.
    """
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[line_start:exc.start].decode(encoding, errors="replace")) + 1
        raise DoclifeError(
            f"{path}: not valid {encoding} at line {line}, column {column} (byte offset {exc.start}: "
            f"0x{raw[exc.start:exc.end].hex()}); pass the file's encoding with --encoding (e.g. gbk, big5, latin-1)"
        ) from None


def _read_table(path: Path, encoding: str = DEFAULT_ENCODING, text_column: str = "text") -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in TEXT_FORMATS:
        _check_decodes(path, encoding)
        # utf-8-sig reads a UTF-8 file with or without the byte-order mark some editors write.
        encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, encoding=encoding)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding=encoding)
    except Exception as exc:  # pandas and pyarrow raise many unrelated types for a damaged file
        raise DoclifeError(f"{path}: cannot read ({' '.join(str(exc).split())[:200]})") from None
    if text_column not in frame.columns:
        raise DoclifeError(f"{path}: no `{text_column}` column (columns: {', '.join(map(str, frame.columns))}); "
                           "name the text column with --text-column")
    return frame


def prediction_flags(texts: list[str], n_tokens: np.ndarray, max_tokens: int) -> list[str]:
    """Why each prediction deserves doubt, "" when nothing is known against it.

    "empty text": nothing to read (blank, whitespace or only characters the tokenizer drops), so the label
    is the model's prior. "truncated: N of M tokens read": the model saw the first N of the text's M tokens.
    """
    flags = []
    for text, n in zip(texts, n_tokens):
        if not text.strip() or n == 0:
            flags.append("empty text")
        elif n > max_tokens:
            flags.append(f"truncated: {max_tokens} of {int(n)} tokens read")
        else:
            flags.append("")
    return flags


def predict_file(model_dir: Path, input_path: Path, output_path: Path, batch_size: int,
                 encoding: str | None = None, text_column: str = "text") -> dict:
    """Predict every row's text of a CSV/TSV/JSONL/Parquet file; write predicted, flag and prob_<label> columns.

    Everything that can be wrong with the arguments or the input is reported before torch is imported.
    """
    input_path, output_path, model_dir = Path(input_path), Path(output_path), Path(model_dir)
    encoding = check_predict_args(input_path, output_path, encoding)
    if not (model_dir / "config.json").is_file():
        raise DoclifeError(f"{model_dir}: not an exported model (no config.json)")
    frame = _read_table(input_path, encoding, text_column)

    from lightning_modules.evaluate import predict_with_tokens

    texts = frame[text_column].fillna("").astype(str).tolist()
    pred = predict_with_tokens(model_dir, texts, batch_size)
    out = frame.copy()
    out["predicted"] = [pred.labels[i] for i in pred.probs.argmax(axis=1)] if len(frame) else []
    flags = prediction_flags(texts, pred.n_tokens, pred.max_tokens)
    out["flag"] = flags
    for i, label in enumerate(pred.labels):
        out[f"prob_{label}"] = pred.probs[:, i]
    if output_path.suffix.lower() == ".parquet":
        write_parquet(output_path, out)
    else:
        with atomic_path(output_path) as tmp:
            if output_path.suffix.lower() == ".csv":
                out.to_csv(tmp, index=False)
            else:
                out.to_json(tmp, orient="records", lines=True, force_ascii=False)
    flagged = {"empty_text": flags.count("empty text"), "truncated": sum(f.startswith("truncated") for f in flags)}
    return {"rows": len(out), "output": str(output_path), "labels": pred.labels, "flagged": flagged}


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
