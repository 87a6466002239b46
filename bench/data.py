"""`make bench-data`: the whole cleaning + validation (`doclife check`) on every corpus in ../shared/datasets,
on 1M synthesised short documents, and the defect-injection benchmark.

Each corpus runs in its own process so its peak RSS is its own. Results: bench/results/data.json.

    python -m bench.data                  # everything
    python -m bench.data corpora|synth|inject
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DATASETS, RESULTS
from data_checks.io import write_json

# (file, text column, label column, has a header line)
CORPORA = [
    ("online_shopping_10_cats.csv", "review", "cat", True),
    ("waimai_10k.csv", "review", "label", True),
    ("sst2_train.tsv", "sentence", "label", True),
    ("sst2_dev.tsv", "content", "label", True),
    ("agnews_sub.csv", "1", "0", False),
    ("dbpedia_sub.csv", "1", "0", False),
]
SYNTH_DOCS = 1_000_000


def run_check(source: Path, text: str, label: str | None, header: bool, out: Path, split: str | None = None) -> dict:
    """`doclife check` in this process: wall seconds, docs/s, MB/s and this process's peak RSS."""
    from data_checks.check import check
    from data_checks.config import IngestConfig, ValidateConfig

    reading = IngestConfig(source=str(source), text_column=text, label_column=label, header=header, split_column=split)
    start = time.perf_counter()
    summary = check(source, reading, ValidateConfig(), out)
    seconds = time.perf_counter() - start
    mb = source.stat().st_size / 1e6
    return {
        "corpus": source.name, "rows": summary["rows_in"], "seconds": round(seconds, 2),
        "docs_per_s": round(summary["rows_in"] / seconds), "mb_per_s": round(mb / seconds, 2), "mb": round(mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "quarantined": summary["quarantined"], "warnings": summary["warnings"], "success": summary["success"],
        "findings_by_rule": summary["findings_by_rule"],
    }


def _child(source: Path, text: str, label: str | None, header: bool, out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.data", "one", str(source), "--text", text, "--out", str(out)]
    cmd += ["--label", label] if label else []
    cmd += [] if header else ["--no-header"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def corpora(work: Path) -> list[dict]:
    results = []
    for name, text, label, header in CORPORA:
        path = DATASETS / name
        if not path.is_file():
            print(f"SKIP {name}: not found in {DATASETS}")
            continue
        result = _child(path, text, label, header, work / name)
        print(f"{name:30s} {result['rows']:>9,} rows {result['seconds']:>7.1f} s {result['docs_per_s']:>9,} docs/s "
              f"{result['mb_per_s']:>6.2f} MB/s peak {result['peak_rss_mb']:>5} MB  quarantined {result['quarantined']}")
        results.append(result)
    return results


def synth(work: Path, n_docs: int = SYNTH_DOCS) -> dict:
    """1M short generated documents (the sample generator, planted defects included) as one Parquet file."""
    from data_checks.config import SampleConfig
    from data_checks.sample_corpus import generate_sample_corpus

    frame = generate_sample_corpus(SampleConfig(n_docs=n_docs, seed=11, defects_per_kind=100))
    path = work / f"synth_{n_docs}.parquet"
    frame.to_parquet(path, index=False)
    result = _child(path, "text", "label", True, work / "synth")
    result["mean_chars"] = round(float(frame["text"].dropna().str.len().mean()), 1)
    print(f"synthesised {result['rows']:,} short docs (mean {result['mean_chars']} chars): {result['seconds']} s, "
          f"{result['docs_per_s']:,} docs/s, peak RSS {result['peak_rss_mb']} MB")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.data")
    parser.add_argument("what", nargs="?", default="all", choices=["all", "corpora", "synth", "inject", "one"])
    parser.add_argument("source", nargs="?")
    parser.add_argument("--text")
    parser.add_argument("--label")
    parser.add_argument("--no-header", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--docs", type=int, default=SYNTH_DOCS)
    args = parser.parse_args(argv)
    if args.what == "one":
        print(json.dumps(run_check(Path(args.source), args.text, args.label, not args.no_header, Path(args.out))))
        return 0

    from bench.inject import inject_benchmark

    results_path = RESULTS / "data.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="doclife-bench-data-") as tmp:
        work = Path(tmp)
        if args.what in ("all", "corpora"):
            results["corpora"] = corpora(work)
        if args.what in ("all", "synth"):
            results["synth"] = synth(work, args.docs)
        if args.what in ("all", "inject"):
            results["inject"] = inject_benchmark(work)
    write_json(results_path, results)
    print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
