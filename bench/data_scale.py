"""The data stages at scale: ingest → clean → validate → snapshot on generated corpora stored as many compressed
shards, each stage in a process of its own, so its wall time and peak RSS are its own.

For each size, the sample generator's corpus (four topics, Chinese and English, its planted defects) is
written as `--shards` files alternating gzip CSV and zstd JSONL; `doclife init` makes a workspace whose
`ingest.source` is that directory, and the four stages run as `doclife STAGE` does in it. The growth from one
size to the next, per document, projects the larger corpora. Writes bench/results/data_scale.json.

    python -m bench.data_scale [--sizes 1000000,2000000] [--shards 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import peak_rss_gb, save_result

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "clean", "validate", "snapshot")


def write_shards(out: Path, n_docs: int, shards: int, seed: int = 11) -> float:
    """The generated corpus of `n_docs` as `shards` compressed files in `out`; returns their size in MB."""
    import numpy as np
    import pyarrow as pa

    from data_checks.config import SampleConfig
    from data_checks.sample_corpus import generate_sample_corpus

    frame = generate_sample_corpus(SampleConfig(n_docs=n_docs, seed=seed, defects_per_kind=100))
    out.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        rows = frame.iloc[part]
        if i % 2 == 0:
            rows.to_csv(out / f"part-{i:04d}.csv.gz", index=False)
        else:
            with pa.output_stream(str(out / f"part-{i:04d}.jsonl.zst"), compression="zstd") as stream:
                stream.write(rows.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))
    return sum(p.stat().st_size for p in out.iterdir()) / 1e6


def _child(args: list[str], cwd: Path) -> dict:
    """`python -m bench.data_scale --child ...` in `cwd`: what the command measured of itself."""
    done = subprocess.run([sys.executable, "-m", "bench.data_scale", "--child", *args], cwd=cwd, capture_output=True,
                          text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit((done.stdout + done.stderr)[-3000:])
    return json.loads(lines[-1].removeprefix("BENCH_RESULT "))


def child(args: list[str]) -> None:
    """Run one doclife command in this process, then print its wall time and this process's peak RSS."""
    from flows.cli import main

    started = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"doclife {' '.join(args)} exited {code}")
    print("BENCH_RESULT " + json.dumps({"seconds": round(seconds, 2), "peak_rss_gb": peak_rss_gb()}), flush=True)


def one_size(root: Path, n_docs: int, shards: int) -> dict:
    source = root / f"shards_{n_docs}"
    started = time.perf_counter()
    mb = write_shards(source, n_docs, shards)
    print(f"{n_docs:,} documents as {shards} shards ({mb:.0f} MB) in {time.perf_counter() - started:.0f} s", flush=True)
    ws = root / f"ws_{n_docs}"
    steps = {"init": _child(["init", str(ws), "--source", str(source), "--text-column", "text", "--label-column",
                             "label"], root)}
    for stage in STAGES:
        steps[stage] = _child([stage], ws)
        print(f"  {stage:<9}{steps[stage]['seconds']:>9.1f} s {steps[stage]['peak_rss_gb']:>7.2f} GB", flush=True)
    summary = json.loads((ws / "reports/validate/summary.json").read_text())
    pipeline = sum(steps[s]["seconds"] for s in STAGES)
    return {"documents": n_docs, "shards": shards, "source_mb": round(mb, 1), "steps": steps,
            "ingest_to_snapshot_seconds": round(pipeline, 1), "docs_per_s": round(n_docs / pipeline),
            "peak_rss_gb": max(steps[s]["peak_rss_gb"] for s in STAGES),
            "validated": summary["validated"], "quarantined": summary["quarantined"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,2000000", help="comma-separated corpus sizes")
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--name", default="data_scale", help="result file: bench/results/NAME.json")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="doclife-data-scale-") as tmp:
        runs = [one_size(Path(tmp), n, args.shards) for n in sizes]
    result: dict = {"runs": runs, "device": f"{os.cpu_count()} cores"}
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        extra = large["documents"] - small["documents"]
        per_doc_gb = (large["peak_rss_gb"] - small["peak_rss_gb"]) / extra
        per_doc_s = (large["ingest_to_snapshot_seconds"] - small["ingest_to_snapshot_seconds"]) / extra
        result["growth"] = {
            "rss_ratio": round(large["peak_rss_gb"] / small["peak_rss_gb"], 3),
            "seconds_ratio": round(large["ingest_to_snapshot_seconds"] / small["ingest_to_snapshot_seconds"], 3),
            "peak_rss_kb_per_doc": round(per_doc_gb * 1024**2, 3),
            # Linear in the documents from the two measured sizes: what today's stages would need.
            "projected_10m": {"peak_rss_gb": round(large["peak_rss_gb"] + per_doc_gb * (10_000_000 - large["documents"]), 1),
                              "seconds": round(large["ingest_to_snapshot_seconds"]
                                               + per_doc_s * (10_000_000 - large["documents"]))},
        }
    save_result(args.name, result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
